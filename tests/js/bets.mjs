// Places bets through the unmodified centrifuge SDK, as an app does:
// connect with a token, subscribe to the market, rpc('bet', …). Run by the
// Go tests TestSDKBets and TestBetsCrashSafety, which start Kafka and the
// relay and check the printed replies against the records in Kafka.
//
// env: EDGERELAY_URL   WebSocket endpoint
//      TOKEN           connect token (JWT)
//      CHANNEL         market channel (has a cached value)
//      COUNT           bets to place, ids PREFIX-0 .. PREFIX-(COUNT-1)
//      PREFIX          bet id prefix
//      RETRY           if set, place bet PREFIX-0 a second time at the end
//      CONCURRENCY     bets in flight at once (default 1: one after another)
//
// stdout: one JSON object per line: {"event":"accepted","reply":{…}} or
// {"event":"rejected","bet_id":…,"code":…,"temporary":…}, then {"event":"done"}.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const env = process.env;
const count = Number(env.COUNT);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
setTimeout(() => { out({ event: 'fail', msg: 'timeout' }); process.exit(1); }, 60000).unref();

const client = new Centrifuge(env.EDGERELAY_URL, { websocket: WebSocket, token: env.TOKEN, name: 'bets-test', timeout: 10000 });
client.on('error', (ctx) => out({ event: 'client_error', error: ctx.error }));

const bet = async (id) => {
  const data = { bet_id: id, channel: env.CHANNEL, selection: 'home', odds: 2.1, stake: 5, note: 'opaque to the relay' };
  try {
    const res = await client.rpc('bet', data);
    out({ event: 'accepted', reply: res.data });
  } catch (e) {
    out({ event: 'rejected', bet_id: id, code: e.code, message: e.message, temporary: e.temporary });
  }
};

const sub = client.newSubscription(env.CHANNEL);
let started = false;
sub.on('subscribed', async () => {
  if (started) return; // a resubscribe after a reconnect
  started = true;
  let next = 0;
  const worker = async () => {
    while (next < count) await bet(`${env.PREFIX}-${next++}`);
  };
  await Promise.all(Array.from({ length: Number(env.CONCURRENCY || 1) }, worker));
  if (env.RETRY) await bet(`${env.PREFIX}-0`);
  out({ event: 'done' });
  client.disconnect();
  process.exit(0);
});
sub.subscribe();
client.connect();
