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
import { out, fail, decode, recordingWebSocket, tokensFromStdin } from './tokenharness.mjs';

const env = process.env;
const protobuf = env.ENCODING === 'protobuf';
const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');

setTimeout(() => fail('timeout'), 90000).unref();

const { TestWebSocket, state } = recordingWebSocket('sub_refresh');
const getToken = tokensFromStdin((ctx) => ({ channel: ctx.channel }), () => {
  out({ event: 'done', sockets: state.sockets });
  client.disconnect();
});

const client = new Centrifuge(env.EDGERELAY_URL, {
  websocket: TestWebSocket, token: env.TOKEN, name: 'subtoken-test', timeout: 10000,
  minReconnectDelay: 100, maxReconnectDelay: 1000,
});
client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => out({ event: 'connected', client: ctx.client, sockets: state.sockets }));
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

client.connect();
