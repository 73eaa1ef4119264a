// Drives edgerelay with the unmodified centrifuge SDK (the reference client
// of the Centrifugo protocol) over the ws package. Run by the Go test
// TestCentrifugeSDK, which starts Kafka and the relay, produces records and
// checks what this script prints: one JSON object per line on stdout.
//
// env: EDGERELAY_URL   WebSocket endpoint
//      CHANNEL         channel to subscribe to (has a cached value)
//      LIVE            number of live publications to wait for
//      DELTA           if set, subscribe with delta: 'fossil' 
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const url = process.env.EDGERELAY_URL;
const channel = process.env.CHANNEL;
const live = Number(process.env.LIVE);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => { out({ event: 'fail', msg }); process.exit(1); };
setTimeout(() => fail('timeout'), 30000).unref();

const client = new Centrifuge(url, { websocket: WebSocket, name: 'sdk-test', timeout: 5000 });
client.on('error', (ctx) => out({ event: 'client_error', error: ctx.error }));
client.on('connected', (ctx) => out({ event: 'connected', client: ctx.client, transport: ctx.transport }));

// A subscription the relay must refuse with a documented code.
const bad = client.newSubscription('odds:*');
bad.on('unsubscribed', (ctx) => out({ event: 'bad_unsubscribed', code: ctx.code, reason: ctx.reason }));
bad.subscribe();

const sub = client.newSubscription(channel, process.env.DELTA ? { delta: 'fossil' } : {});
let received = 0;
sub.on('subscribed', (ctx) => out({ event: 'subscribed', recoverable: ctx.recoverable, offset: ctx.streamPosition?.offset, epoch: ctx.streamPosition?.epoch }));
sub.on('error', (ctx) => out({ event: 'sub_error', error: ctx.error }));
sub.on('publication', async (ctx) => {
  out({ event: 'publication', data: ctx.data, offset: ctx.offset });
  if (received++ === live) { // the cached value, then `live` updates
    try {
      await client.rpc('no-such-method', {});
      fail('rpc to an unknown method succeeded');
    } catch (e) {
      out({ event: 'rpc_error', code: e.code });
    }
    // The channel's history (the relay keeps the latest few).
    const h = await sub.history({ limit: 100 });
    out({ event: 'history', offsets: h.publications.map((p) => p.offset), offset: h.offset, data: h.publications.at(-1)?.data });
    client.disconnect();
    out({ event: 'done' });
    process.exit(0);
  }
});
sub.subscribe();
client.connect();
