// What refresh.mjs and subtoken.mjs share: the JSON-lines output the Go
// tests read, a WebSocket (npm ws) that numbers its sockets and reports how
// each opens and closes, and getToken calls answered by the Go test on
// stdin, in order: {"token":…} resolves one, {"fail":…} rejects it,
// {"stop":true} ends the script.
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

export const out = (o) => process.stdout.write(JSON.stringify({ ...o, t: Date.now() }) + '\n');
export const fail = (msg) => { out({ event: 'fail', msg }); process.exit(1); };

// decode: the JSON build gives parsed JSON, the Protobuf build bytes
// holding the JSON document.
export const decode = (d) => (d instanceof Uint8Array ? JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(d)) : d);

// recordingWebSocket returns the WebSocket class for the SDK and a count
// of the sockets it made. On the JSON build, the replies to the commands
// named command ("refresh" or "sub_refresh") are printed as
// `${command}_reply` with the reply's result as `refresh`. FRAMES=1 logs
// every frame to stderr.
export function recordingWebSocket(command) {
  const state = { sockets: 0 };
  const ids = new Set(); // ids of the commands sent
  class TestWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      const n = ++state.sockets;
      this.n = n;
      this.on('open', () => out({ event: 'socket_open', socket: n, protocol: this.protocol }));
      this.on('error', (e) => out({ event: 'socket_error', socket: n, message: e.message }));
      this.on('close', (code, reason) => out({ event: 'socket_close', socket: n, code, reason: reason.toString() }));
      this.on('message', (data, isBinary) => {
        const b = Buffer.isBuffer(data) ? data : Buffer.concat([].concat(data).map((x) => Buffer.from(x)));
        if (process.env.FRAMES) {
          process.stderr.write(`frame socket=${n} ${isBinary ? 'binary' : 'text'} ${b.length}B ${isBinary ? b.toString('hex') : JSON.stringify(b.toString())}\n`);
        }
        if (isBinary) return;
        for (const line of b.toString().split('\n')) {
          let r;
          try { r = JSON.parse(line); } catch { continue; }
          if (r.id && ids.has(r.id)) out({ event: `${command}_reply`, socket: n, id: r.id, refresh: r[command], error: r.error });
        }
      });
    }
    send(data, ...rest) {
      if (process.env.FRAMES) {
        const b = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength ?? data.length);
        process.stderr.write(`send socket=${this.n} ${typeof data === 'string' ? 'text' : 'binary'} ${b.length}B ${typeof data === 'string' ? JSON.stringify(data) : b.toString('hex')}\n`);
      }
      if (typeof data === 'string') {
        for (const line of data.split('\n')) {
          try { const c = JSON.parse(line); if (c[command]) ids.add(c.id); } catch { /* not JSON */ }
        }
      }
      return super.send(data, ...rest);
    }
  }
  return { TestWebSocket, state };
}

// tokensFromStdin returns a getToken that prints {"event":"need_token",
// "n":N, ...extra(ctx)} and waits for the Go test's answer; onStop runs on
// {"stop":true}.
export function tokensFromStdin(extra, onStop) {
  const pending = [];
  let asked = 0;
  createInterface({ input: process.stdin }).on('line', (l) => {
    let m;
    try { m = JSON.parse(l); } catch { fail(`bad stdin line ${l}`); }
    if (m.stop) {
      onStop();
      process.exit(0);
    }
    const p = pending.shift();
    if (!p) fail(`stdin answered a getToken nobody called: ${l}`);
    if (m.token) p.resolve(m.token);
    else p.reject(new Error(m.fail || 'no token'));
  });
  return (ctx) => new Promise((resolve, reject) => {
    pending.push({ resolve, reject });
    out({ event: 'need_token', n: ++asked, ...extra(ctx) });
  });
}
