"""Hostile clients for edgerelay's hostile-input suite (issue 15).

Debian's python3 and python3-websockets, nobody here wrote them: each case
attacks a running relay as an anonymous client would, with raw sockets
(hand-built HTTP and WebSocket frames) or the websockets library, and
reports what it observed. It asserts nothing: the Go test
(relay/cmd/edgerelay/hostile_test.go) holds the expectations and watches
the relay's resources while a case runs.

    python3 hostile.py CASE

env: EDGERELAY_ADDR (host:port); some cases read more (see each).

Output: JSON lines: {"event": ...} lines while the case runs (the Go test
samples the relay's resources when it sees them), then one
{"result": {...}} line.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import selectors
import socket
import struct
import sys
import threading
import time
import zlib

import websockets

ADDR = os.environ["EDGERELAY_ADDR"]
HOST, PORT = ADDR.rsplit(":", 1)
PORT = int(PORT)
WS_PATH = "/connection/websocket"
URL = f"ws://{ADDR}{WS_PATH}"
MAX_MESSAGE = 128 << 10  # websocket.max_message_bytes (default)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def emit(**kv):
    print(json.dumps(kv), flush=True)


def result(**kv):
    emit(result=kv)


KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade_request(extra="", key=KEY, path=WS_PATH, end=True):
    head = (f"GET {path} HTTP/1.1\r\nHost: {ADDR}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra}")
    return (head + ("\r\n" if end else "")).encode("latin-1")


def mask_bytes(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length_form=None):
    """One client frame. length_form: 7, 16 or 64 (the extended length
    forms; default the minimal one)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if length_form is None:
        length_form = 7 if n < 126 else 16 if n < 65536 else 64
    if length_form == 7:
        head = bytes([b0, mbit | n])
    elif length_form == 16:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Closed(Exception):
    pass


class Raw:
    """A hand-made WebSocket client on a plain socket."""

    def __init__(self, extra="", connect=True, timeout=10, data_after=b""):
        self.s = socket.create_connection((HOST, PORT), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.s.sendall(upgrade_request(extra) + data_after)
        head = self.read_until(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        self.status = int(self.head.split(" ", 2)[1])
        if connect and self.status == 101:
            self.send(frame(TEXT, json.dumps({"id": 1, "connect": {"name": "hostile.py"}})))
            op, payload = self.read_frame()
            if op != TEXT or b'"connect"' not in payload:
                raise RuntimeError(f"no connect reply: {op} {payload[:200]!r}")

    def recv_more(self):
        b = self.s.recv(1 << 16)
        if not b:
            raise Closed("EOF")
        self.buf += b

    def read_until(self, sep):
        while sep not in self.buf:
            self.recv_more()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self.recv_more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        b0, b1 = self.read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read_exact(8))[0]
        return b0 & 0x0F, self.read_exact(n)

    def send(self, data):
        self.s.sendall(data)

    def read_close(self, timeout=10):
        """Reads until the server's close frame: (code, reason), or
        (None, what came instead)."""
        self.s.settimeout(timeout)
        try:
            while True:
                op, payload = self.read_frame()
                if op == CLOSE:
                    if len(payload) >= 2:
                        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
                    return None, "close frame without a code"
                if op == TEXT and payload == b"{}":
                    continue  # a server ping
                return None, f"frame {op}: {payload[:120]!r}"
        except Closed:
            return None, "EOF without a close frame"
        except ConnectionError as e:
            return None, f"{type(e).__name__}"
        except socket.timeout:
            return None, "no close within the timeout"

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def as_close(seen):
    """A (code, reason) pair from Raw.read_close as JSON."""
    return {"code": seen[0], "reason": seen[1]}


def read_response_head(s, timeout=15):
    """The status code of the HTTP response on s, or None."""
    s.settimeout(timeout)
    buf = b""
    try:
        while b"\r\n" not in buf:
            b = s.recv(4096)
            if not b:
                break
            buf += b
    except (ConnectionError, socket.timeout):
        pass
    if not buf.startswith(b"HTTP/1."):
        return None
    return int(buf.split(b" ", 2)[1])


# --- finding 1: unbounded handshake headers ---------------------------------

def stream_head(path, shape, size):
    """Sends a request whose head never ends: one huge header line or many
    headers, size bytes, streamed; returns (status, bytes sent before the
    answer)."""
    s = socket.create_connection((HOST, PORT), timeout=15)
    if path == WS_PATH:
        s.sendall(upgrade_request(end=False))
    else:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {ADDR}\r\n".encode())
    sent = [0]
    chunk = (b"a" * 65536) if shape == "line" else (b"X-Pad: " + b"a" * 57 + b"\r\n") * 1024
    if shape == "line":
        s.sendall(b"X-Big: ")

    def sender():
        try:
            while sent[0] < size:
                s.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    status = read_response_head(s)
    at_answer = sent[0]
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    th.join(15)
    s.close()
    return status, at_answer


def case_huge_header():
    """env SIZE_MIB (64), PARALLEL (3), SHAPE line|many, TARGET (a path)."""
    size = int(os.environ.get("SIZE_MIB", "64")) << 20
    parallel = int(os.environ.get("PARALLEL", "3"))
    shape = os.environ.get("SHAPE", "line")
    path = os.environ.get("TARGET", WS_PATH)
    out = [None] * parallel

    def one(i):
        out[i] = stream_head(path, shape, size)

    t0 = time.monotonic()
    ths = [threading.Thread(target=one, args=(i,)) for i in range(parallel)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    result(statuses=[o[0] for o in out], sent_before_answer=[o[1] for o in out], size=size,
           seconds=round(time.monotonic() - t0, 3))


# --- finding 7: a frame in the same write as the upgrade request ------------

def case_connect_with_upgrade():
    """env CHANNEL: connect and subscribe in one message, in the same TCP
    write as the upgrade request."""
    ch = os.environ["CHANNEL"]
    msg = json.dumps({"id": 1, "connect": {}}) + "\n" + json.dumps({"id": 2, "subscribe": {"channel": ch}})
    r = Raw(connect=False, data_after=frame(TEXT, msg))
    got = []
    r.s.settimeout(15)
    try:
        while len(got) < 2:
            op, payload = r.read_frame()
            if op == CLOSE:
                got.append(f"close {struct.unpack('!H', payload[:2])[0]}")
                break
            for line in payload.decode().split("\n"):
                if line.strip():
                    got.append(line)
    except (Closed, socket.timeout) as e:
        got.append(f"{type(e).__name__}")
    r.close()
    result(status=r.status, replies=got)


# --- finding 9: strict handshake ---------------------------------------------

def case_strict_handshake():
    good = KEY
    cases = [
        ("good request", "", good),
        ("key not base64", "", "not base64!!"),
        ("24 characters, not base64", "", "!!!!!!!!!!!!!!!!!!!!!!=="),
        ("key of 15 bytes", "", base64.b64encode(b"0123456789abcde").decode()),
        ("key twice", f"Sec-WebSocket-Key: {good}\r\n", good),
        ("NUL in a header", "X-Evil: a\x00b\r\n", good),
        ("DEL in a header", "X-Evil: a\x7fb\r\n", good),
    ]
    out = {}
    for name, extra, key in cases:
        s = socket.create_connection((HOST, PORT), timeout=10)
        s.sendall(upgrade_request(extra, key=key))
        out[name] = read_response_head(s)
        s.close()
    result(statuses=out)


# --- finding 2: history amplification ----------------------------------------

async def history():
    """env CHANNEL (with a big history), LIMIT (per command, under half the
    queue)."""
    ch, limit = os.environ["CHANNEL"], int(os.environ["LIMIT"])
    out = {}
    async with websockets.connect(URL, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {}}))
        await ws.recv()
        await ws.send(json.dumps({"id": 2, "history": {"channel": ch, "limit": -1}}))
        rep = json.loads(await ws.recv())
        out["limit_all"] = rep.get("error", {}).get("code", "no error: %d publications" % len(rep.get("history", {}).get("publications", [])))
        cmds, size, i = [], 0, 10
        while True:
            c = json.dumps({"id": i, "history": {"channel": ch, "limit": limit}})
            if size + len(c) + 1 > MAX_MESSAGE - 64:
                break
            cmds.append(c)
            size += len(c) + 1
            i += 1
        msg = "\n".join(cmds)
        out["commands"], out["message_bytes"] = len(cmds), len(msg)
        t0 = time.monotonic()
        await ws.send(msg)
        replies = 0
        try:
            while True:
                m = await asyncio.wait_for(ws.recv(), 30)
                replies += sum(1 for line in m.split("\n") if '"history"' in line)
        except websockets.ConnectionClosed as e:
            out["close"] = e.rcvd.code if e.rcvd else None
        except asyncio.TimeoutError:
            out["close"] = "none within 30 s"
        out["replies_before_close"] = replies
        out["seconds_to_close"] = round(time.monotonic() - t0, 3)
    result(**out)


def case_history():
    asyncio.run(history())


# --- finding 4: metric cardinality --------------------------------------------

async def cardinality():
    """env NAMESPACES (20000) made-up namespaces subscribed and left, PER_CONN
    (250) of them per connection (500 commands: under any command burst the
    relay allows, websocket.commands_burst >= max_subscriptions + 2), then
    INVALID (100) subscribes to invalid names of INVALID_BYTES (120000)."""
    n, per_conn = int(os.environ.get("NAMESPACES", "20000")), int(os.environ.get("PER_CONN", "250"))
    invalid, invalid_bytes = int(os.environ.get("INVALID", "100")), int(os.environ.get("INVALID_BYTES", "120000"))
    tag = "%08x" % random.getrandbits(32)
    subscribed = unsubscribed = conns = 0
    errors = {}
    i = 0
    while i < n:
        conns += 1
        async with websockets.connect(URL, max_size=None, compression=None) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {}}))
            await ws.recv()
            cmds, want, cid = [], 0, 10
            end = min(n, i + per_conn)
            for k in range(i, end):
                ch = f"madeup{tag}{k}:x"
                cmds.append(json.dumps({"id": cid, "subscribe": {"channel": ch}}))
                cmds.append(json.dumps({"id": cid + 1, "unsubscribe": {"channel": ch}}))
                cid, want = cid + 2, want + 2
            i = end
            msg = "\n".join(cmds)
            assert len(msg) < MAX_MESSAGE, len(msg)
            await ws.send(msg)
            while want > 0:
                for line in (await asyncio.wait_for(ws.recv(), 30)).split("\n"):
                    if not line.strip():
                        continue
                    rep = json.loads(line)
                    if "id" not in rep:
                        continue  # a server ping
                    want -= 1
                    if "error" in rep:
                        errors[str(rep["error"]["code"])] = errors.get(str(rep["error"]["code"]), 0) + 1
                    elif "subscribe" in rep:
                        subscribed += 1
                    elif "unsubscribe" in rep:
                        unsubscribed += 1
    refused = {}
    async with websockets.connect(URL, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {}}))
        await ws.recv()
        for j in range(invalid):
            name = "bad*" + "n" * invalid_bytes + str(j)
            await ws.send(json.dumps({"id": 100000 + j, "subscribe": {"channel": name}}))
            rep = json.loads(await asyncio.wait_for(ws.recv(), 30))
            code = str(rep.get("error", {}).get("code", "accepted"))
            refused[code] = refused.get(code, 0) + 1
    result(connections=conns + 1, subscribed=subscribed, unsubscribed=unsubscribed, errors=errors, invalid_names=refused,
           invalid_message_bytes=len(json.dumps({"id": 100000, "subscribe": {"channel": "bad*" + "n" * invalid_bytes}})))


def case_cardinality():
    asyncio.run(cardinality())


# --- finding 6: idle keep-alive HTTP connections -------------------------------

def case_idle_http():
    """env CONNS (300), WAIT (seconds to wait for the relay to close them)."""
    n, wait = int(os.environ.get("CONNS", "300")), float(os.environ.get("WAIT", "20"))
    t_start = time.monotonic()
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, PORT), timeout=10)
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {ADDR}\r\n\r\n".encode())
        socks.append(s)
    answered = 0
    for s in socks:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        head, body = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            body += s.recv(4096)
        if head.startswith(b"HTTP/1.1 200"):
            answered += 1
    t0 = time.monotonic()
    emit(event="held", conns=n, answered=answered, seconds=round(t0 - t_start, 3))
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed, times = 0, []
    deadline = t0 + wait
    while closed < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            try:
                b = s.recv(4096)
            except ConnectionError:
                b = b""
            if not b:
                sel.unregister(s)
                closed += 1
                times.append(time.monotonic() - t0)
    for s in socks:
        s.close()
    result(conns=n, answered=answered, closed_by_relay=closed,
           first_close_s=round(min(times), 3) if times else None, last_close_s=round(max(times), 3) if times else None)


# --- finding 10: JWT time claims -----------------------------------------------

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(secret, claims):
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64u(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64u(sig)}"


async def jwt():
    """env SECRET (the relay's auth.hmac_secrets entry)."""
    secret = os.environ["SECRET"].encode()
    now = int(time.time())
    tokens = {
        "valid": {"sub": "mallory", "exp": now + 3600},
        "no token (anonymous)": None,
        "expired": {"sub": "mallory", "exp": now - 3600},
        "nbf 2^63": {"sub": "mallory", "exp": now + 3600, "nbf": 2 ** 63},
        "nbf 2^64": {"sub": "mallory", "exp": now + 3600, "nbf": 2 ** 64},
        "nbf 1e300": {"sub": "mallory", "exp": now + 3600, "nbf": 1e300},
        "iat 2^63": {"sub": "mallory", "exp": now + 3600, "iat": 2 ** 63},
        "exp 2^63": {"sub": "mallory", "exp": 2 ** 63},
        "nbf -2^63": {"sub": "mallory", "exp": now + 3600, "nbf": -(2 ** 63)},
        "wrong secret": "wrong",
    }
    out = {}
    for name, claims in tokens.items():
        connect = {}
        if claims == "wrong":
            connect["token"] = hs256(b"x" * 40, {"sub": "mallory", "exp": now + 3600})
        elif claims is not None:
            connect["token"] = hs256(secret, claims)
        async with websockets.connect(URL, compression=None) as ws:
            await ws.send(json.dumps({"id": 1, "connect": connect}))
            try:
                rep = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if "error" in rep:
                    out[name] = f"error {rep['error']['code']}"
                elif "connect" in rep:
                    out[name] = "connected"
                else:
                    out[name] = f"unexpected {rep}"
            except websockets.ConnectionClosed as e:
                out[name] = f"close {e.rcvd.code if e.rcvd else None}"
    result(outcomes=out)


def case_jwt():
    asyncio.run(jwt())


# --- finding 11: /v1/channels flood ----------------------------------------------

def case_rest_flood():
    """env FROM (flooding address), OTHER (another address), REQUESTS, THREADS."""
    import http.client
    src, other = os.environ.get("FROM", "127.0.0.2"), os.environ.get("OTHER", "127.0.0.3")
    total, threads = int(os.environ.get("REQUESTS", "400")), int(os.environ.get("THREADS", "4"))
    statuses, retry_after, lock = {}, set(), threading.Lock()

    def flood(n):
        c = http.client.HTTPConnection(HOST, PORT, timeout=10, source_address=(src, 0))
        for _ in range(n):
            c.request("GET", "/v1/channels?prefix=&limit=10000")
            r = c.getresponse()
            r.read()
            with lock:
                statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
                if r.status == 429:
                    retry_after.add(r.getheader("Retry-After"))
        c.close()

    t0 = time.monotonic()
    ths = [threading.Thread(target=flood, args=(total // threads,)) for _ in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    seconds = time.monotonic() - t0
    c = http.client.HTTPConnection(HOST, PORT, timeout=10, source_address=(other, 0))
    c.request("GET", "/v1/channels?prefix=&limit=10000")
    r = c.getresponse()
    r.read()
    c.close()
    result(statuses=statuses, retry_after=sorted(x for x in retry_after if x), seconds=round(seconds, 3), other_address=r.status)


# --- frame violations that already get their code --------------------------------

PING_CMD = b'{"id":2,"ping":{}}'


def case_frames():
    cases = [
        ("unmasked frame", lambda: frame(TEXT, PING_CMD, mask=False)),
        ("RSV2 set", lambda: frame(TEXT, PING_CMD, rsv=2)),
        ("RSV1 without permessage-deflate", lambda: frame(TEXT, PING_CMD, rsv=4)),
        ("fragmented ping", lambda: frame(PING, b"x", fin=False)),
        ("ping of 126 bytes", lambda: frame(PING, b"x" * 126)),
        ("continuation without a start", lambda: frame(CONT, PING_CMD)),
        ("text frame inside a fragmented message", lambda: frame(TEXT, b'{"id":2,', fin=False) + frame(TEXT, b'"ping":{}}')),
        ("reserved opcode 0x3", lambda: frame(0x3, b"")),
        ("reserved control opcode 0xB", lambda: frame(0xB, b"")),
        ("binary frame on a JSON connection", lambda: frame(BINARY, PING_CMD)),
        ("message over max_message_bytes", lambda: frame(TEXT, b" " * (MAX_MESSAGE + 1))),
        ("fragments over max_message_bytes", lambda: frame(TEXT, b" " * 70000, fin=False) + frame(CONT, b" " * 70000)),
        ("length with the top bit set", lambda: bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 63) + os.urandom(4)),
        ("invalid UTF-8", lambda: frame(TEXT, b'{"id":2,"ping":{}}\xc3\x28')),
        ("invalid UTF-8 across fragments", lambda: frame(TEXT, b'{"id":2,"ping":{}}\xe2\x82', fin=False) + frame(CONT, b"\x28")),
        ("malformed JSON", lambda: frame(TEXT, b'{"id":2,')),
        ("command without an id", lambda: frame(TEXT, b'{"ping":{}}')),
        ("second connect", lambda: frame(TEXT, b'{"id":2,"connect":{}}')),
    ]
    out = {}
    for name, build in cases:
        r = Raw()
        try:
            r.send(build())
        except OSError:
            pass
        out[name] = r.read_close()
        r.close()
    # A command before connect.
    r = Raw(connect=False)
    r.send(frame(TEXT, PING_CMD))
    out["command before connect"] = r.read_close()
    r.close()
    result(closes={k: as_close(v) for k, v in out.items()})


# --- deflate bomb ------------------------------------------------------------------

def deflate(data, level=9):
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


def case_deflate_bomb():
    """env BOMB_MIB (64): a compressed message that inflates to that much."""
    mib = int(os.environ.get("BOMB_MIB", "64"))
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    out = {}
    bomb = deflate(b"\0" * (mib << 20))
    r = Raw(extra=ext)
    out["negotiated"] = "permessage-deflate" in r.head.lower()
    r.send(frame(TEXT, bomb, rsv=4))
    out["bomb"] = as_close(r.read_close())
    r.close()
    out["bomb_compressed_bytes"], out["bomb_inflated_bytes"] = len(bomb), mib << 20
    r = Raw(extra=ext)
    r.send(frame(TEXT, b"\xff\xfe\xfd not deflate at all", rsv=4))
    out["corrupt"] = as_close(r.read_close())
    r.close()
    # Control: a small compressed command is understood.
    r = Raw(extra=ext)
    r.send(frame(TEXT, deflate(PING_CMD), rsv=4))
    op, payload = r.read_frame()
    out["small compressed ping"] = payload.decode("utf-8", "replace")[:80] if op == TEXT else f"opcode {op}"
    r.close()
    result(**out)


# --- known open: finding 3, one connection starving its poller -------------------

def flood_frame(kind):
    if kind == "pong":
        return frame(TEXT, b"{}")  # a protocol pong: no reply
    if kind == "ping":
        return frame(PING, b"")  # a WebSocket ping: answered with a pong
    # a large message the relay must validate and decode, with no reply
    return frame(TEXT, json.dumps({"send": {"data": "x" * (120 << 10)}}))


def flood_once(one, buf, until):
    """One connection flooding until the relay closes it or until passes:
    (frames sent, frames back, close code or None)."""
    r = Raw()
    closed, back = {}, [0]

    def reader():
        r.s.settimeout(max(1.0, until - time.monotonic()) + 10)
        try:
            while True:
                op, payload = r.read_frame()
                if op == CLOSE:
                    closed["code"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    break
                back[0] += 1
        except (Closed, OSError):
            closed["code"] = None

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    sent = 0
    try:
        while time.monotonic() < until and not closed:
            r.s.sendall(buf)
            sent += len(buf)
    except OSError:
        pass
    if not closed:
        try:
            r.s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    th.join(5)
    r.close()
    return sent // len(one), back[0], closed.get("code")


def case_flood():
    """env KIND pong|ping|big, DURATION (s): protocol pongs ({}), WebSocket
    pings (whose pongs a reader thread reads) or 120 KiB messages without
    pause, as fast as the socket takes them; when the relay closes the
    connection, the flooder connects again, until DURATION is over."""
    kind, duration = os.environ.get("KIND", "pong"), float(os.environ.get("DURATION", "3"))
    one = flood_frame(kind)
    buf = one * max(1, (1 << 20) // len(one))
    t0 = time.monotonic()
    until = t0 + duration
    emit(event="flooding")
    conns, frames, back, closes = 0, 0, 0, {}
    while time.monotonic() < until:
        f, b, code = flood_once(one, buf, until)
        conns, frames, back = conns + 1, frames + f, back + b
        # The last connection may be cut by the end of the flood instead.
        key = str(code) if code is not None else ("cut by the end of the flood" if time.monotonic() >= until else "EOF without a close")
        closes[key] = closes.get(key, 0) + 1
    result(kind=kind, connections=conns, closes=closes, frames_sent=frames, bytes_sent=frames * len(one),
           frames_back=back, flood_seconds=round(time.monotonic() - t0, 3))


# --- known open: finding 5, drip-fed frames ------------------------------------------

def drip_one(size, seg_min, seg_max, pause, drip, out, i):
    r = Raw()
    pad = size - len(b'{"id":2,"rpc":{"method":"hostile-drip","data":{"p":""}}}')
    payload = b'{"id":2,"rpc":{"method":"hostile-drip","data":{"p":"' + b"x" * pad + b'"}}}'
    fr = frame(TEXT, payload)
    segments = 0
    if drip:
        pos = 0
        while pos < len(fr):
            n = random.randint(seg_min, seg_max)
            r.s.sendall(fr[pos:pos + n])
            pos += n
            segments += 1
            if pause:
                time.sleep(pause)
    else:
        r.s.sendall(fr)
        segments = 1
    r.s.settimeout(30)
    try:
        op, rep = r.read_frame()
        while op != CLOSE and rep == b"{}":  # a server ping: its first comes at a random point of the interval
            op, rep = r.read_frame()
        if op == CLOSE:
            out[i] = (segments, f"close {struct.unpack('!H', rep[:2])[0]} {rep[2:].decode('utf-8', 'replace')}")
        else:
            out[i] = (segments, rep.decode("utf-8", "replace")[:100])
    except (Closed, socket.timeout) as e:
        out[i] = (segments, type(e).__name__)
    r.close()


def case_drip():
    """env CLIENTS (4), SIZE (131000, under max_message_bytes), SEG_MIN/SEG_MAX
    (8/16), PAUSE_US (100), MODE drip|bulk."""
    clients, size = int(os.environ.get("CLIENTS", "4")), int(os.environ.get("SIZE", "131000"))
    seg_min, seg_max = int(os.environ.get("SEG_MIN", "8")), int(os.environ.get("SEG_MAX", "16"))
    pause = int(os.environ.get("PAUSE_US", "100")) / 1e6
    drip = os.environ.get("MODE", "drip") == "drip"
    out = [None] * clients
    t0 = time.monotonic()
    ths = [threading.Thread(target=drip_one, args=(size, seg_min, seg_max, pause, drip, out, i)) for i in range(clients)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    result(clients=clients, frame_bytes=size, segments=[o[0] for o in out], replies=[o[1] for o in out],
           seconds=round(time.monotonic() - t0, 3))


# --- known open: finding 8, close frames ------------------------------------------------

def case_close_frames():
    cases = [
        ("reserved 1005", close_payload(1005)),
        ("reserved 1006", close_payload(1006)),
        ("reserved 1015", close_payload(1015)),
        ("999 (below 1000)", close_payload(999)),
        ("0", close_payload(0)),
        ("5000 (above 4999)", close_payload(5000)),
        ("65535", close_payload(65535)),
        ("1-byte payload", b"\x03"),
        ("invalid UTF-8 reason", close_payload(1000, b"bye \xff\xfe")),
        # Controls: valid close frames are echoed.
        ("1000 (valid)", close_payload(1000, b"bye")),
        ("4000 (valid, application)", close_payload(4000)),
        ("empty (valid)", b""),
    ]
    out = {}
    for name, payload in cases:
        r = Raw()
        r.send(frame(CLOSE, payload))
        out[name] = r.read_close()
        r.close()
    result(closes={k: as_close(v) for k, v in out.items()})


# --- known open: finding 9 (frames), non-minimal lengths ------------------------------------

def case_nonminimal_length():
    out = {}
    for name, form in [("16-bit length for 18 bytes", 16), ("64-bit length for 18 bytes", 64)]:
        r = Raw()
        r.send(frame(TEXT, PING_CMD, length_form=form))
        code, what = r.read_close(timeout=3)
        out[name] = {"code": code, "reason": what}
        r.close()
    result(closes=out)


CASES = {
    "huge-header": case_huge_header,
    "connect-with-upgrade": case_connect_with_upgrade,
    "strict-handshake": case_strict_handshake,
    "history": case_history,
    "cardinality": case_cardinality,
    "idle-http": case_idle_http,
    "jwt": case_jwt,
    "rest-flood": case_rest_flood,
    "frames": case_frames,
    "deflate-bomb": case_deflate_bomb,
    "flood": case_flood,
    "drip": case_drip,
    "close-frames": case_close_frames,
    "nonminimal-length": case_nonminimal_length,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.exit(f"usage: hostile.py {'|'.join(CASES)}")
    CASES[sys.argv[1]]()
