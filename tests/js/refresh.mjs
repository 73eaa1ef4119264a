// Token lifetime with the unmodified centrifuge SDK, in either of its builds
// (JSON `centrifuge` or Protobuf `centrifuge/build/protobuf`): the client
// connects with a short-lived token and a getToken callback, and the Go test
// (TestSDKTokenRefresh) decides what every getToken call gets.
//
// env: EDGERELAY_URL   WebSocket endpoint
//      TOKEN           connect token (JWT), short-lived
//      CHANNEL         channel to subscribe to
//      ENCODING        json (default) or protobuf
//      FRAMES          if set, log every frame sent and received to stderr
//
// stdout: one JSON object per line, each with `t` (Date.now()). Every
// getToken call prints {"event":"need_token","n":N} and waits for a line on
// stdin, answered in order:
//      {"token":"…"}   getToken resolves with this token
//      {"fail":"…"}    getToken rejects with an Error of this message
// and {"stop":true} on stdin disconnects the client and exits ("done").
//
// Besides: the SDK's events (connecting, connected, disconnected, error,
// subscribing, subscribed, publication) and the sockets' (socket_open,
// socket_close with the close code and reason). On the JSON build every
// refresh reply is printed too ("refresh_reply").
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const env = process.env;
const protobuf = env.ENCODING === 'protobuf';
const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');

const out = (o) => process.stdout.write(JSON.stringify({ ...o, t: Date.now() }) + '\n');
const fail = (msg) => { out({ event: 'fail', msg }); process.exit(1); };
setTimeout(() => fail('timeout'), 90000).unref();

// Data: the JSON build gives parsed JSON, the Protobuf build bytes holding
// the JSON document.
const decode = (d) => (d instanceof Uint8Array ? JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(d)) : d);

// The WebSocket the SDK gets: npm ws, numbering its sockets and reporting
// how each opens and closes.
let sockets = 0;
const refreshIDs = new Set(); // ids of the refresh commands sent (JSON build)
class TestWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    const n = ++sockets;
    this.n = n;
    this.on('open', () => out({ event: 'socket_open', socket: n, protocol: this.protocol }));
    this.on('error', (e) => out({ event: 'socket_error', socket: n, message: e.message }));
    this.on('close', (code, reason) => out({ event: 'socket_close', socket: n, code, reason: reason.toString() }));
    this.on('message', (data, isBinary) => {
      const b = Buffer.isBuffer(data) ? data : Buffer.concat([].concat(data).map((x) => Buffer.from(x)));
      if (env.FRAMES) {
        process.stderr.write(`frame socket=${n} ${isBinary ? 'binary' : 'text'} ${b.length}B ${isBinary ? b.toString('hex') : JSON.stringify(b.toString())}\n`);
      }
      if (isBinary) return;
      for (const line of b.toString().split('\n')) {
        let r;
        try { r = JSON.parse(line); } catch { continue; }
        if (r.refresh || (r.error && r.id && refreshIDs.has(r.id))) out({ event: 'refresh_reply', socket: n, id: r.id, refresh: r.refresh, error: r.error });
      }
    });
  }
  send(data, ...rest) {
    if (env.FRAMES) {
      const b = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength ?? data.length);
      process.stderr.write(`send socket=${this.n} ${typeof data === 'string' ? 'text' : 'binary'} ${b.length}B ${typeof data === 'string' ? JSON.stringify(data) : b.toString('hex')}\n`);
    }
    if (typeof data === 'string') {
      for (const line of data.split('\n')) {
        try { const c = JSON.parse(line); if (c.refresh) refreshIDs.add(c.id); } catch { /* not JSON */ }
      }
    }
    return super.send(data, ...rest);
  }
}
// getToken: asks the Go test, which answers on stdin in order.
const pending = [];
let asked = 0;
const getToken = () => new Promise((resolve, reject) => {
  pending.push({ resolve, reject });
  out({ event: 'need_token', n: ++asked });
});

const client = new Centrifuge(env.EDGERELAY_URL, {
  websocket: TestWebSocket, token: env.TOKEN, getToken, name: 'refresh-test', timeout: 10000,
  minReconnectDelay: 100, maxReconnectDelay: 1000,
});
client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => out({ event: 'connected', client: ctx.client, sockets }));
client.on('disconnected', (ctx) => out({ event: 'disconnected', code: ctx.code, reason: ctx.reason }));
client.on('error', (ctx) => out({ event: 'error', type: ctx.type, code: ctx.error?.code, message: ctx.error?.message }));

const sub = client.newSubscription(env.CHANNEL);
sub.on('subscribing', (ctx) => out({ event: 'subscribing', code: ctx.code, reason: ctx.reason }));
sub.on('subscribed', (ctx) => out({ event: 'subscribed', recovered: ctx.recovered, was_recovering: ctx.wasRecovering }));
sub.on('unsubscribed', (ctx) => out({ event: 'unsubscribed', code: ctx.code, reason: ctx.reason }));
sub.on('error', (ctx) => out({ event: 'sub_error', type: ctx.type, code: ctx.error?.code, message: ctx.error?.message }));
sub.on('publication', (ctx) => out({ event: 'publication', data: decode(ctx.data), offset: ctx.offset }));

createInterface({ input: process.stdin }).on('line', (l) => {
  let m;
  try { m = JSON.parse(l); } catch { fail(`bad stdin line ${l}`); }
  if (m.stop) {
    out({ event: 'done', sockets });
    client.disconnect();
    process.exit(0);
  }
  const p = pending.shift();
  if (!p) fail(`stdin answered a getToken nobody called: ${l}`);
  if (m.token) p.resolve(m.token);
  else p.reject(new Error(m.fail || 'no token'));
});

sub.subscribe();
client.connect();
