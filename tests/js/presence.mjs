// The npm centrifuge SDK asks presence_stats and presence of CHANNEL
// (client.presenceStats / client.presence), in the JSON or Protobuf build,
// and prints the answers as one JSON line. Run by the Go test
// TestClusterPresence against a node of a three-relay cluster.
//
// env: EDGERELAY_URL, CHANNEL, TOKEN, ENCODING (json or protobuf)
import WebSocket from 'ws';

const env = process.env;
const { Centrifuge } = await import(env.ENCODING === 'protobuf' ? 'centrifuge/build/protobuf' : 'centrifuge');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
setTimeout(() => { out({ event: 'fail', msg: 'timeout' }); process.exit(1); }, 20000).unref();

const client = new Centrifuge(env.EDGERELAY_URL, { websocket: WebSocket, token: env.TOKEN });
client.connect();
try {
  const stats = await client.presenceStats(env.CHANNEL);
  const { clients } = await client.presence(env.CHANNEL);
  const list = Object.entries(clients).map(([id, c]) => ({ id, user: c.user, client: c.client }));
  out({ event: 'presence', stats, clients: list });
  process.exit(0);
} catch (e) {
  out({ event: 'error', code: e.code, message: e.message });
  process.exit(2);
}
