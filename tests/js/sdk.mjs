// Drives edgerelay with the unmodified centrifuge SDK (the reference client
// of the Centrifugo protocol) over the ws package, in either of its builds:
// JSON (`centrifuge`) or Protobuf (`centrifuge/build/protobuf`, subprotocol
// centrifuge-protobuf, binary frames). Run by the Go test TestCentrifugeSDK,
// which starts Kafka and the relay, produces records and checks what this
// script prints: one JSON object per line on stdout.
//
// env: EDGERELAY_URL   WebSocket endpoint
//      CHANNEL         channel to subscribe to (has a cached value, status open)
//      LIVE            number of live publications to wait for
//      RECOVER         number of publications the Go test produces while the
//                      socket is down, to be recovered on reconnect
//      TOKEN           connect token (JWT)
//      BET_ID          bet id of the rpc('bet') placed twice (the second a retry)
//      ENCODING        json (default) or protobuf
//      DELTA           if set, subscribe with delta: 'fossil'
//      FRAMES          if set, log every frame received to stderr
//
// Sequence: connect; a subscription the relay refuses (107); subscribe, the
// cached value then LIVE updates; rpc to an unknown method (104); rpc bet
// and its retry; history; then the socket is terminated ("dropped") and the
// reconnect held until the Go test writes "resume" on stdin, having produced
// RECOVER records meanwhile; the SDK reconnects, recovers them, "done".
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const env = process.env;
const protobuf = env.ENCODING === 'protobuf';
const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');

const channel = env.CHANNEL;
const live = Number(env.LIVE);
const recover = Number(env.RECOVER);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => { out({ event: 'fail', msg }); process.exit(1); };
setTimeout(() => fail('timeout'), 60000).unref();
let received = 0; // publications
let lastOffset = 0;
// A stall fails fast, saying where: no publication for 15 s while some are due.
let progress = Date.now();
setInterval(() => {
  if (Date.now() - progress > 15000) fail(`no publication for 15 s; ${received} received`);
}, 1000).unref();

// Data: the JSON build gives parsed JSON; the Protobuf build gives bytes
// holding the JSON document, and must be sent bytes.
const isBytes = (d) => d instanceof Uint8Array;
const text = (d) => (isBytes(d) ? new TextDecoder('utf-8', { fatal: true }).decode(d) : JSON.stringify(d));
const decode = (d) => {
  if (protobuf && !isBytes(d)) fail(`protobuf build gave data of type ${typeof d}, not bytes: ${JSON.stringify(d)}`);
  if (!protobuf && isBytes(d)) fail('json build gave bytes');
  return isBytes(d) ? JSON.parse(text(d)) : d;
};
const encode = (v) => (protobuf ? new TextEncoder().encode(JSON.stringify(v)) : v);

// The WebSocket the SDK gets: npm ws, recording its sockets (so the current
// one can be terminated) and the frames received, and able to hold a new
// socket's open event (so a reconnect waits for the Go test).
const sockets = [];
const frames = { text: 0, binary: 0 };
let hold = null; // while set, a promise the open event of new sockets waits for
class TestWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    const n = sockets.push(this);
    this.on('error', (e) => out({ event: 'socket_error', socket: n, message: e.message }));
    this.on('close', (code, reason) => out({ event: 'socket_close', socket: n, code, reason: reason.toString() }));
    this.on('message', (data, isBinary) => {
      frames[isBinary ? 'binary' : 'text']++;
      if (env.FRAMES) {
        const b = Buffer.isBuffer(data) ? data : Buffer.concat([].concat(data).map((x) => Buffer.from(x)));
        process.stderr.write(`frame socket=${n} ${isBinary ? 'binary' : 'text'} ${b.length}B ${isBinary ? b.toString('hex') : b.toString()}\n`);
      }
    });
  }
  get onopen() { return super.onopen; }
  set onopen(fn) {
    const held = hold;
    super.onopen = !held || typeof fn !== 'function' ? fn : (ev) => held.then(() => {
      if (this.readyState === WebSocket.OPEN) fn(ev);
    });
  }
}

let release = null;
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() === 'resume' && release) {
    hold = null;
    release();
  }
});

const client = new Centrifuge(env.EDGERELAY_URL, {
  websocket: TestWebSocket, token: env.TOKEN, name: 'sdk-test', timeout: 10000, minReconnectDelay: 100, maxReconnectDelay: 1000,
});
client.on('error', (ctx) => out({ event: 'client_error', type: ctx.type, error: ctx.error, transport: ctx.transport }));
let connected = false;
setTimeout(() => { if (!connected) fail('not connected within 15 s'); }, 15000).unref();
client.on('connected', (ctx) => {
  connected = true;
  const ws = sockets.at(-1);
  out({ event: 'connected', client: ctx.client, transport: ctx.transport, protocol: ws?.protocol, sockets: sockets.length });
});
let finished = false;
client.on('disconnected', (ctx) => {
  out({ event: 'disconnected', code: ctx.code, reason: ctx.reason });
  if (!finished) fail(`disconnected for good: ${ctx.code} ${ctx.reason}`);
});

// A subscription the relay must refuse with a documented code.
const bad = client.newSubscription('odds:*');
bad.on('unsubscribed', (ctx) => out({ event: 'bad_unsubscribed', code: ctx.code, reason: ctx.reason }));
bad.subscribe();

const sub = client.newSubscription(channel, env.DELTA ? { delta: 'fossil' } : {});
sub.on('subscribed', (ctx) => out({
  event: 'subscribed', recoverable: ctx.recoverable, recovered: ctx.recovered, was_recovering: ctx.wasRecovering,
  has_recovered_publications: ctx.hasRecoveredPublications, offset: ctx.streamPosition?.offset, epoch: ctx.streamPosition?.epoch,
}));
sub.on('error', (ctx) => out({ event: 'sub_error', error: ctx.error }));

const bet = async () => {
  const req = { bet_id: env.BET_ID, channel, selection: 'home', odds: 2.1, stake: 5, note: 'opaque to the relay' };
  try {
    const res = await client.rpc('bet', encode(req));
    out({ event: 'bet', reply: decode(res.data), raw: text(res.data), bytes: isBytes(res.data) });
  } catch (e) {
    out({ event: 'bet_error', code: e.code, message: e.message, temporary: e.temporary });
  }
};

const steps = async () => {
  try {
    await client.rpc('no-such-method', encode({}));
    fail('rpc to an unknown method succeeded');
  } catch (e) {
    out({ event: 'rpc_error', code: e.code, message: e.message });
  }
  await bet();
  await bet(); // a retry with the same bet id
  const h = await sub.history({ limit: 1000 });
  out({
    event: 'history', offsets: h.publications.map((p) => p.offset), offset: h.offset, epoch: h.epoch,
    seqs: h.publications.map((p) => decode(p.data).seq), data: h.publications.length ? decode(h.publications.at(-1).data) : null,
  });
  // Drop the socket as a network would (no close frame) and hold the
  // reconnect until the Go test has produced what this client misses.
  hold = new Promise((r) => { release = r; });
  sockets.at(-1).terminate();
  progress = Date.now();
  out({ event: 'dropped', offset: lastOffset });
};

sub.on('publication', (ctx) => {
  progress = Date.now();
  out({ event: 'publication', data: decode(ctx.data), offset: ctx.offset });
  lastOffset = ctx.offset;
  received++;
  if (received === live + 1) { // the cached value, then `live` updates
    steps().catch((e) => fail(`steps: ${e?.stack || JSON.stringify(e)}`));
  } else if (received === live + 1 + recover) {
    // A round trip: a publication pushed after the last expected one (a
    // duplicate) would arrive before its reply.
    client.rpc('no-such-method', encode({})).catch(() => {}).then(() => {
      out({ event: 'done', frames, sockets: sockets.length });
      finished = true;
      client.disconnect();
      process.exit(0);
    });
  }
});
sub.subscribe();
client.connect();
