// One centrifuge SDK client (JSON build) behind a load balancer, for the
// Go test TestClusterInNetworkNamespaces: it subscribes to CHANNEL, whose
// records carry {"seq": n}, and prints every publication (seq and offset)
// and every socket it opens or loses, one JSON object per line on stdout
// (with `t`, ms since the epoch). The Go test kills and cuts off the node
// behind its socket; the SDK reconnects through the balancer by itself and
// recovers what it missed from the next node's history.
//
// env: EDGERELAY_URL  WebSocket endpoint (the load balancer)
//      CHANNEL        channel to subscribe to
//
// stdin: "end" makes a round trip (an rpc to an unknown method: every
// publication pushed before its reply arrives before it), prints "done" and
// exits. The script exits too when stdin closes (the Go test is gone).
import { createInterface } from 'node:readline';
import { Centrifuge } from 'centrifuge';
import { out, fail, decode, recordingWebSocket } from './tokenharness.mjs';

const env = process.env;
setTimeout(() => fail('timeout'), 180000).unref();
// No command named: the harness reports sockets, no command replies.
const { TestWebSocket, state } = recordingWebSocket();

const client = new Centrifuge(env.EDGERELAY_URL, {
  websocket: TestWebSocket, name: 'failover-test', timeout: 5000, minReconnectDelay: 100, maxReconnectDelay: 1000,
});
client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => out({ event: 'connected', client: ctx.client, sockets: state.sockets }));
client.on('error', (ctx) => out({ event: 'client_error', type: ctx.type, message: ctx.error?.message }));

const sub = client.newSubscription(env.CHANNEL);
sub.on('subscribed', (ctx) => out({
  event: 'subscribed', recoverable: ctx.recoverable, recovered: ctx.recovered, was_recovering: ctx.wasRecovering,
  offset: ctx.streamPosition?.offset, epoch: ctx.streamPosition?.epoch,
}));
sub.on('subscribing', (ctx) => out({ event: 'subscribing', code: ctx.code, reason: ctx.reason }));
sub.on('error', (ctx) => out({ event: 'sub_error', message: ctx.error?.message }));
sub.on('publication', (ctx) => out({ event: 'publication', seq: decode(ctx.data).seq, offset: ctx.offset }));

const lines = createInterface({ input: process.stdin });
lines.on('line', (l) => {
  if (l.trim() !== 'end') return;
  client.rpc('no-such-method', {}).catch(() => {}).then(() => {
    out({ event: 'done', sockets: state.sockets });
    client.disconnect();
    process.exit(0);
  });
});
lines.on('close', () => process.exit(0));

sub.subscribe();
client.connect();
