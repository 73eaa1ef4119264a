// Hostile clients on npm `ws` for edgerelay's hostile-input suite (issue
// 15; relay/cmd/edgerelay/hostile_test.go holds the expectations).
//
//   node hostile.mjs rst-clients   CLIENTS connect and subscribe to CHANNEL,
//                                  print {"event":"held"}, wait for a line on
//                                  stdin, then all drop with a TCP RST
//   node hostile.mjs ping-flood    WebSocket pings without pause for DURATION
//                                  seconds, reading the pongs; connects again
//                                  when the relay closes it
//
// env: EDGERELAY_URL. Output: JSON lines, the last one {"result": {...}}.
import WebSocket from 'ws';

const url = process.env.EDGERELAY_URL;
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function rstClients() {
  const n = Number(process.env.CLIENTS || 2000);
  const channel = process.env.CHANNEL;
  const socks = [];
  let subscribed = 0, errors = 0, closed = 0;
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 30000 });
    socks.push(ws);
    let done = false;
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, connect: {} }) + '\n' + JSON.stringify({ id: 2, subscribe: { channel } })));
    ws.on('message', (data) => {
      const text = String(data);
      if (text === '{}') { ws.send('{}'); return; } // server ping
      if (!done && text.split('\n').some((l) => l.startsWith('{"id":2,"subscribe"'))) {
        done = true;
        if (++subscribed + errors === n) held();
      }
    });
    ws.on('error', () => { if (!done) { done = true; errors++; if (subscribed + errors === n) held(); } });
    ws.on('close', () => { closed++; });
  }
  function held() {
    emit({ event: 'held', subscribed, errors, closed_before_reset: closed });
    process.stdin.once('data', () => {
      let reset = 0;
      for (const ws of socks) {
        if (ws._socket && !ws._socket.destroyed) { ws._socket.resetAndDestroy(); reset++; }
      }
      emit({ result: { clients: n, subscribed, errors, reset } });
      setTimeout(() => process.exit(0), 100);
    });
  }
}

function pingFlood() {
  const duration = Number(process.env.DURATION || 3) * 1000;
  const t0 = Date.now();
  let connections = 0, pings = 0, pongs = 0;
  const closes = {};
  emit({ event: 'flooding' });
  // One connection flooding until the relay closes it or the time is up;
  // then the next one, until DURATION is over.
  const once = () => {
    connections++;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let ended = false;
    ws.on('pong', () => { pongs++; });
    ws.on('message', (data) => { if (String(data) === '{}') ws.send('{}'); });
    ws.on('open', () => {
      ws.send(JSON.stringify({ id: 1, connect: {} }));
      const pump = () => {
        if (ws.readyState !== WebSocket.OPEN) return;
        if (Date.now() - t0 >= duration) { ended = true; ws.close(1000, 'done'); return; }
        for (let i = 0; i < 10000 && ws.bufferedAmount < (1 << 20); i++) { ws.ping(); pings++; }
        setImmediate(pump);
      };
      pump();
    });
    ws.on('error', () => {});
    ws.on('close', (code) => {
      const key = ended ? 'cut by the end of the flood' : String(code);
      closes[key] = (closes[key] || 0) + 1;
      if (Date.now() - t0 < duration) { once(); return; }
      emit({ result: { kind: 'ws ping', connections, closes, frames_sent: pings, frames_back: pongs, flood_seconds: (Date.now() - t0) / 1000 } });
      process.exit(0);
    });
  };
  once();
}

const mode = process.argv[2];
if (mode === 'rst-clients') rstClients();
else if (mode === 'ping-flood') pingFlood();
else { console.error('usage: node hostile.mjs rst-clients|ping-flood'); process.exit(2); }
