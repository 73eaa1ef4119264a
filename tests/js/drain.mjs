// Subscribers on the unmodified centrifuge SDK for the drain test
// (TestSDKDrain): CLIENTS clients, each subscribed to every channel of
// CHANNELS, through a load balancer to several relays. The SDK reconnects
// by itself when a drained relay closes it (3001) and recovers each
// channel from its position. One JSON object per line on stdout; the Go
// test checks them. Ends when stdin says "stop".
//
// env: EDGERELAY_URL  WebSocket endpoint (the test's load balancer)
//      CHANNELS       comma-separated channel names
//      CLIENTS        number of clients
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

const env = process.env;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
setTimeout(() => { out({ event: 'fail', msg: 'timeout' }); process.exit(1); }, 90000).unref();

const clients = [];
for (let c = 0; c < Number(env.CLIENTS); c++) {
  const client = new Centrifuge(env.EDGERELAY_URL, {
    websocket: WebSocket, name: 'drain-test', timeout: 10000, minReconnectDelay: 100, maxReconnectDelay: 1000,
  });
  client.on('connecting', (ctx) => out({ event: 'connecting', c, code: ctx.code, reason: ctx.reason }));
  client.on('connected', () => out({ event: 'connected', c }));
  client.on('disconnected', (ctx) => out({ event: 'fail', msg: `client ${c} disconnected for good: ${ctx.code} ${ctx.reason}` }));
  for (const ch of env.CHANNELS.split(',')) {
    const sub = client.newSubscription(ch);
    sub.on('subscribed', (ctx) => out({ event: 'subscribed', c, ch, recovered: ctx.recovered, was_recovering: ctx.wasRecovering }));
    sub.on('publication', (ctx) => out({ event: 'pub', c, ch, seq: ctx.data.seq, offset: ctx.offset }));
    sub.on('error', (ctx) => out({ event: 'fail', msg: `client ${c} ${ch}: ${JSON.stringify(ctx.error)}` }));
    sub.subscribe();
  }
  client.connect();
  clients.push(client);
}

createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() !== 'stop') return;
  for (const client of clients) {
    client.removeAllListeners('disconnected');
    client.disconnect();
  }
  out({ event: 'done' });
  process.exit(0);
});
