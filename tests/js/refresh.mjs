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
import { out, fail, decode, recordingWebSocket, tokensFromStdin } from './tokenharness.mjs';

const env = process.env;
const protobuf = env.ENCODING === 'protobuf';
const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');

setTimeout(() => fail('timeout'), 90000).unref();

const { TestWebSocket, state } = recordingWebSocket('refresh');
const getToken = tokensFromStdin(() => ({}), () => {
  out({ event: 'done', sockets: state.sockets });
  client.disconnect();
});

const client = new Centrifuge(env.EDGERELAY_URL, {
  websocket: TestWebSocket, token: env.TOKEN, getToken, name: 'refresh-test', timeout: 10000,
  minReconnectDelay: 100, maxReconnectDelay: 1000,
});
client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => out({ event: 'connected', client: ctx.client, sockets: state.sockets }));
client.on('disconnected', (ctx) => out({ event: 'disconnected', code: ctx.code, reason: ctx.reason }));
client.on('error', (ctx) => out({ event: 'error', type: ctx.type, code: ctx.error?.code, message: ctx.error?.message }));

const sub = client.newSubscription(env.CHANNEL);
sub.on('subscribing', (ctx) => out({ event: 'subscribing', code: ctx.code, reason: ctx.reason }));
sub.on('subscribed', (ctx) => out({ event: 'subscribed', recovered: ctx.recovered, was_recovering: ctx.wasRecovering }));
sub.on('unsubscribed', (ctx) => out({ event: 'unsubscribed', code: ctx.code, reason: ctx.reason }));
sub.on('error', (ctx) => out({ event: 'sub_error', type: ctx.type, code: ctx.error?.code, message: ctx.error?.message }));
sub.on('publication', (ctx) => out({ event: 'publication', data: decode(ctx.data), offset: ctx.offset }));

sub.subscribe();
client.connect();
