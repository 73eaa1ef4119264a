// The npm centrifuge SDK (JSON build) over wss://: connects, subscribes to
// CHANNEL and prints its first publication, then exits 0. The Go test
// TestSDKOverTLS runs it with NODE_EXTRA_CA_CERTS naming the CA to trust,
// before and after the relay's certificate is replaced on disk. A
// transport error (an untrusted certificate) prints the error and exits 2.
//
// env: EDGERELAY_URL  wss:// endpoint
//      CHANNEL        a channel with a cached value
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
setTimeout(() => { out({ event: 'fail', msg: 'timeout' }); process.exit(1); }, 20000).unref();

let socketError = '';
class TestWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.on('error', (e) => { socketError = e.code || e.message; });
  }
}
const client = new Centrifuge(process.env.EDGERELAY_URL, { websocket: TestWebSocket, minReconnectDelay: 100 });
client.on('error', (ctx) => {
  out({ event: 'error', type: ctx.type, message: ctx.error?.message, socket: socketError });
  process.exit(2);
});
const sub = client.newSubscription(process.env.CHANNEL);
sub.on('publication', (ctx) => {
  out({ event: 'publication', offset: Number(ctx.offset), data: ctx.data });
  process.exit(0);
});
sub.subscribe();
client.connect();
