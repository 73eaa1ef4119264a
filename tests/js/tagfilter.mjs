// Tag filters (Centrifugo's publication filtering, the Subscription
// option `tagsFilter`) through the unmodified centrifuge SDK, in either
// build: JSON (`centrifuge`) or Protobuf (`centrifuge/build/protobuf`).
// Run by the Go test TestSDKTagFilter, which starts Kafka and the relay,
// produces records with tag headers and checks what this script prints:
// one JSON object per line on stdout.
//
// env: EDGERELAY_URL  WebSocket endpoint
//      ENCODING       json (default) or protobuf
//      CHANNEL        the channel of the stream subscriptions
//      MAP            the map channel of the filtered map subscription
//      FILTER         the tag filter (JSON) of both filtered subscriptions
//      LAST           the seq of the last record the Go test produces to
//                     CHANNEL and to the map (the filter matches it)
//      HOSTILE        a JSON array of filters the relay must refuse (107),
//                     each on a subscription to HOSTILE_CHANNEL<i>
//      RECOVER_LAST   the seq of the last record produced while "filtered"
//                     is disconnected (the filter matches it)
//
// Two clients: "filtered" subscribes to CHANNEL and to MAP with FILTER,
// and to each hostile filter; "bystander" subscribes to CHANNEL without a
// filter. Printed: {"event":"ready"} once every subscription is subscribed
// or refused, each publication and map update ({"event":"pub" or
// "update", "sub", "seq", "tags", ...}), each refusal
// ({"event":"unsubscribed", "code"}), the map's snapshot ({"event":
// "sync"}). Once the three live subscriptions saw LAST, "filtered"
// disconnects ({"event":"dropped"}) and, when the Go test writes "resume"
// on stdin (having produced records meanwhile), connects again: its
// stream subscription recovers; {"event":"done"} once it saw RECOVER_LAST.
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const env = process.env;
const protobuf = env.ENCODING === 'protobuf';
const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => { out({ event: 'fail', msg }); process.exit(1); };
setTimeout(() => fail('timeout'), 60000).unref();

const last = Number(env.LAST);
const filter = JSON.parse(env.FILTER);
const hostile = JSON.parse(env.HOSTILE);

const decode = (d) => {
  if (d === undefined || d === null) return null;
  const isBytes = d instanceof Uint8Array;
  if (protobuf !== isBytes) fail(`${env.ENCODING} build gave data ${JSON.stringify(d)}`);
  return isBytes ? JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(d)) : d;
};
const tagsOf = (t) => (t ? Object.fromEntries(Object.entries(t)) : {});

const opts = { websocket: WebSocket, timeout: 10000, minReconnectDelay: 100, maxReconnectDelay: 1000 };
const filtered = new Centrifuge(env.EDGERELAY_URL, { ...opts, name: 'tagfilter-test' });
const bystander = new Centrifuge(env.EDGERELAY_URL, { ...opts, name: 'tagfilter-bystander' });
for (const [name, c] of [['filtered', filtered], ['bystander', bystander]]) {
  c.on('error', (ctx) => out({ event: 'client_error', client: name, type: ctx.type, error: ctx.error }));
  c.on('disconnected', (ctx) => { if (running > 0) out({ event: 'disconnected', client: name, code: ctx.code, reason: ctx.reason }); });
}

let pending = 3 + hostile.length; // subscriptions to settle before "ready"
const settled = () => { if (--pending === 0) out({ event: 'ready' }); };
let running = 3; // live subscriptions still waiting for LAST
const seen = (seq, name) => {
  if (seq === last && --running === 0) {
    filtered.disconnect();
    out({ event: 'dropped' });
    createInterface({ input: process.stdin }).on('line', (l) => { if (l.trim() === 'resume') filtered.connect(); });
  }
  if (name === 'filtered' && seq === Number(env.RECOVER_LAST)) { out({ event: 'done' }); process.exit(0); }
};

function stream(client, name, options) {
  const sub = client.newSubscription(env.CHANNEL, options);
  sub.on('subscribed', (ctx) => {
    out({ event: 'subscribed', sub: name, recovered: ctx.recovered, was_recovering: ctx.wasRecovering });
    if (running > 0) settled();
  });
  sub.on('unsubscribed', (ctx) => fail(`${name} unsubscribed: ${ctx.code} ${ctx.reason}`));
  sub.on('error', (ctx) => out({ event: 'sub_error', sub: name, error: ctx.error }));
  sub.on('publication', (ctx) => {
    const v = decode(ctx.data);
    out({ event: 'pub', sub: name, seq: v.seq, tags: tagsOf(ctx.tags), offset: Number(ctx.offset) });
    seen(v.seq, name);
  });
  sub.subscribe();
}

stream(filtered, 'filtered', { tagsFilter: filter });
stream(bystander, 'bystander', {});

const msub = filtered.newMapSubscription(env.MAP, { tagsFilter: filter, pageSize: 3 });
msub.on('subscribed', () => { if (running > 0) settled(); });
msub.on('unsubscribed', (ctx) => fail(`map unsubscribed: ${ctx.code} ${ctx.reason}`));
msub.on('error', (ctx) => out({ event: 'sub_error', sub: 'map', error: ctx.error }));
msub.on('sync', (ctx) => out({
  event: 'sync', sub: 'map',
  entries: ctx.entries.map((e) => ({ key: e.key, tags: tagsOf(e.tags), seq: decode(e.data).seq })),
}));
msub.on('update', (ctx) => {
  const v = ctx.removed ? null : decode(ctx.data);
  out({ event: 'update', sub: 'map', key: ctx.key, removed: !!ctx.removed, tags: tagsOf(ctx.tags), seq: v ? v.seq : null });
  if (v) seen(v.seq, 'map');
});
msub.subscribe();

hostile.forEach((f, i) => {
  const sub = filtered.newSubscription(`${env.HOSTILE_CHANNEL}${i}`, { tagsFilter: f });
  sub.on('subscribed', () => fail(`hostile filter ${i} was accepted`));
  sub.on('unsubscribed', (ctx) => { out({ event: 'unsubscribed', sub: `hostile${i}`, code: ctx.code, reason: ctx.reason }); settled(); });
  sub.subscribe();
});

filtered.connect();
bystander.connect();
