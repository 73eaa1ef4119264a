// Channel access with the unmodified centrifuge SDK, in either of its builds
// (JSON `centrifuge` or Protobuf `centrifuge/build/protobuf`), driven by the
// Go test TestSDKSubscriptionAccess:
//
//  - with CHANNEL: a client-side subscription to CHANNEL whose getToken (the
//    subscription token, for a `token` namespace) asks the Go test;
//  - always: the client's server-side subscription events (the connection
//    token's `channels` claim): client 'subscribed' and 'publication'.
//
// env: EDGERELAY_URL   WebSocket endpoint
//      TOKEN           connection token (JWT); the client has no getToken
//      CHANNEL         channel to subscribe to with a getToken (optional)
//      ENCODING        json (default) or protobuf
//      FRAMES          if set, log every frame sent and received to stderr
//
// stdout: one JSON object per line, each with `t` (Date.now()). Every
// subscription getToken call prints {"event":"need_token","n":N,"channel":…}
// and waits for a line on stdin, answered in order:
//      {"token":"…"}   getToken resolves with this token
//      {"fail":"…"}    getToken rejects with an Error of this message
// and {"stop":true} on stdin disconnects the client and exits ("done").
//
// Besides: the client's events (connecting, connected, disconnected, error),
// the subscription's (subscribing, subscribed, unsubscribed, sub_error,
// publication), the server-side subscriptions' (server_subscribing,
// server_subscribed, server_unsubscribed, server_publication, each with its
// channel) and the sockets' (socket_open, socket_close with the close code
// and reason). On the JSON build every sub_refresh reply is printed too
// ("sub_refresh_reply", the reply's sub_refresh as `refresh`).
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
const refreshIDs = new Set(); // ids of the sub_refresh commands sent (JSON build)
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
        if (r.id && refreshIDs.has(r.id)) out({ event: 'sub_refresh_reply', socket: n, id: r.id, refresh: r.sub_refresh, error: r.error });
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
        try { const c = JSON.parse(line); if (c.sub_refresh) refreshIDs.add(c.id); } catch { /* not JSON */ }
      }
    }
    return super.send(data, ...rest);
  }
}

// getToken of the subscription: asks the Go test, which answers on stdin in
// order.
const pending = [];
let asked = 0;
const getToken = (ctx) => new Promise((resolve, reject) => {
  pending.push({ resolve, reject });
  out({ event: 'need_token', n: ++asked, channel: ctx.channel });
});

const client = new Centrifuge(env.EDGERELAY_URL, {
  websocket: TestWebSocket, token: env.TOKEN, name: 'subtoken-test', timeout: 10000,
  minReconnectDelay: 100, maxReconnectDelay: 1000,
});
client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => out({ event: 'connected', client: ctx.client, sockets }));
client.on('disconnected', (ctx) => out({ event: 'disconnected', code: ctx.code, reason: ctx.reason }));
client.on('error', (ctx) => out({ event: 'error', type: ctx.type, code: ctx.error?.code, message: ctx.error?.message }));
// Server-side subscriptions.
client.on('subscribing', (ctx) => out({ event: 'server_subscribing', channel: ctx.channel }));
client.on('subscribed', (ctx) => out({ event: 'server_subscribed', channel: ctx.channel, recoverable: ctx.recoverable, recovered: ctx.recovered }));
client.on('unsubscribed', (ctx) => out({ event: 'server_unsubscribed', channel: ctx.channel }));
client.on('publication', (ctx) => out({ event: 'server_publication', channel: ctx.channel, data: decode(ctx.data), offset: ctx.offset }));

if (env.CHANNEL) {
  const sub = client.newSubscription(env.CHANNEL, { getToken });
  sub.on('subscribing', (ctx) => out({ event: 'subscribing', code: ctx.code, reason: ctx.reason }));
  sub.on('subscribed', (ctx) => out({ event: 'subscribed', recovered: ctx.recovered, was_recovering: ctx.wasRecovering }));
  sub.on('unsubscribed', (ctx) => out({ event: 'unsubscribed', code: ctx.code, reason: ctx.reason }));
  sub.on('error', (ctx) => out({ event: 'sub_error', type: ctx.type, code: ctx.error?.code, message: ctx.error?.message }));
  sub.on('publication', (ctx) => out({ event: 'publication', channel: ctx.channel, data: decode(ctx.data), offset: ctx.offset }));
  sub.subscribe();
}

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

client.connect();
