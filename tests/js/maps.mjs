// Drives a map subscription of the unmodified centrifuge SDK
// (client.newMapSubscription, Centrifugo's map subscriptions) against
// edgerelay, in either build: JSON (`centrifuge`) or Protobuf
// (`centrifuge/build/protobuf`). Run by the Go test TestSDKMaps, which
// starts Kafka and the relay(s), produces the map's entries and checks
// what this script prints: one JSON object per line on stdout.
//
// env: EDGERELAY_URL   WebSocket endpoint
//      EDGERELAY_URL2  if set, the endpoint the SDK reconnects to after
//                      the socket is dropped (another node)
//      MAP             the map channel
//      PAGE            the SDK's pageSize (state and stream pages)
//      LIVE            number of updates to wait for before the socket drops
//      RECOVER         number of updates to wait for after the reconnect
//      ENCODING        json (default) or protobuf
//      DELTA           if set, subscribe with delta: 'fossil' (per-entry deltas)
//      AFTER           number of updates to wait for after the catch-up
//                      (the Go test produces them on "recovered"), default 0
//      PAUSE           if set, after LIVE updates the socket is not dropped but
//                      stops being read ("paused") until "resume" on stdin: the
//                      relay closes it as slow (3008), the SDK reconnects and
//                      recovers; the script prints every update (and each
//                      "connecting" with its code) until "stop" on stdin
//      EXPECT_FULL     if set, the Go test makes the map full after the sync:
//                      print each "unsubscribed" (the 2100 push, then the
//                      106 of subscribing again) and exit after the second
//
// Sequence: subscribe; "sync" (the snapshot); LIVE "update"s; then the
// socket is terminated ("dropped") and the reconnect held until the Go
// test writes "resume" on stdin, having produced changes meanwhile; the
// SDK reconnects, catches up (RECOVER updates), "recovered"; AFTER live
// updates; "done" with the SDK's delta statistics (sub.deltaStats()).
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const env = process.env;
const protobuf = env.ENCODING === 'protobuf';
const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');
const live = Number(env.LIVE);
const recover = Number(env.RECOVER);
const after = Number(env.AFTER || 0);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => { out({ event: 'fail', msg }); process.exit(1); };
setTimeout(() => fail('timeout'), 60000).unref();

// The JSON build gives parsed JSON, the Protobuf build bytes holding it.
const decode = (d) => {
  if (d === undefined || d === null) return null;
  const isBytes = d instanceof Uint8Array;
  if (protobuf !== isBytes) fail(`${env.ENCODING} build gave data ${JSON.stringify(d)}`);
  return isBytes ? JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(d)) : d;
};

// npm ws, recording its sockets (so the current one can be terminated),
// holding a new socket's open event until "resume", and pointing it at
// EDGERELAY_URL2 once the first socket was dropped.
const sockets = [];
let hold = null;
let dropped = false;
class TestWebSocket extends WebSocket {
  constructor(url, ...rest) {
    super(dropped && env.EDGERELAY_URL2 ? env.EDGERELAY_URL2 : url, ...rest);
    sockets.push(this);
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
  if (l.trim() === 'resume' && env.PAUSE) {
    const s = sockets.at(-1)._socket;
    delete s.resume; // the socket's own again
    s.resume();
  } else if (l.trim() === 'resume' && release) {
    hold = null;
    release();
  } else if (l.trim() === 'stop') {
    out({ event: 'done' });
    client.disconnect();
    process.exit(0);
  }
});

const client = new Centrifuge(env.EDGERELAY_URL, {
  websocket: TestWebSocket, name: 'maps-test', timeout: 10000, minReconnectDelay: 100, maxReconnectDelay: 1000,
});
client.on('error', (ctx) => out({ event: 'client_error', type: ctx.type, error: ctx.error }));
client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, msg: ctx.reason }));

const sub = client.newMapSubscription(env.MAP, { pageSize: Number(env.PAGE), delta: env.DELTA ? 'fossil' : undefined });
sub.on('subscribed', (ctx) => out({
  event: 'subscribed', recovered: ctx.recovered, was_recovering: ctx.wasRecovering, recoverable: ctx.recoverable,
  offset: ctx.streamPosition?.offset, epoch: ctx.streamPosition?.epoch, sockets: sockets.length,
}));
sub.on('error', (ctx) => out({ event: 'sub_error', error: ctx.error }));
let unsubscribed = 0;
sub.on('unsubscribed', (ctx) => {
  if (!env.EXPECT_FULL) fail(`unsubscribed: ${ctx.code} ${ctx.reason}`);
  out({ event: 'unsubscribed', code: ctx.code, reason: ctx.reason });
  if (++unsubscribed === 1) sub.subscribe();
  else process.exit(0);
});
sub.on('sync', (ctx) => out({
  event: 'sync', entries: ctx.entries.map((e) => ({ key: e.key, value: decode(e.data), offset: e.offset })),
}));
let updates = 0;
sub.on('update', (ctx) => {
  out({ event: 'update', key: ctx.key, removed: !!ctx.removed, value: ctx.removed ? null : decode(ctx.data), offset: ctx.offset });
  updates++;
  if (updates === live && env.PAUSE) {
    // ws resumes its socket whenever its parser drained: held off until "resume".
    const s = sockets.at(-1)._socket;
    s.pause();
    s.resume = () => s;
    out({ event: 'paused' });
  } else if (updates === live) {
    hold = new Promise((resolve) => { release = resolve; });
    dropped = true;
    sockets.at(-1).terminate();
    out({ event: 'dropped' });
  }
  if (updates === live + recover && after > 0) {
    out({ event: 'recovered' });
  } else if (updates === live + recover + after) {
    out({ event: 'done', delta: sub.deltaStats() });
    client.disconnect();
    process.exit(0);
  }
});
sub.subscribe();
client.connect();
