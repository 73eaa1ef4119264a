package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"

	"github.com/edgerelay/edgerelay/relay"
)

// TestTLSHandshakeDeadlineWhole: docs/security.md ("Hostile handshakes")
// says the TLS handshake, request line and headers together must finish
// within 10 s. A client that spends 7 s before its ClientHello, then sends
// half a request line, must be closed 10 s after it connected, not 10 s
// after its TLS handshake.
func TestTLSHandshakeDeadlineWhole(t *testing.T) {
	r, _, ca, _ := startTLSRelay(t, nil)
	raw, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	time.Sleep(7 * time.Second) // the attacker's pace, not a wait for a condition
	tc := tls.Client(raw, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake 7 s after connecting (within the 10 s): %v", err)
	}
	io.WriteString(tc, "GET /connection/websocket HTTP/1.1\r\nHost: x\r\n")
	tc.SetDeadline(start.Add(25 * time.Second))
	_, err = io.ReadAll(tc)
	closedAfter := time.Since(start)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("not closed within 25 s: %v", err)
	}
	if closedAfter > 14*time.Second {
		t.Errorf("closed %v after connecting; the handshake, request line and headers together have 10 s", closedAfter.Round(100*time.Millisecond))
	}
}

// TestTLSBridgeWithinConnectionCap: the descriptors of TLS WebSockets stay
// within what websocket.max_connections admits. A client that stops
// reading a busy channel is closed as slow by the engine, which releases
// its admission slot; its bridge (two goroutines, the TCP socket and the
// pair end) must not live on beside the next admitted connection.
func TestTLSBridgeWithinConnectionCap(t *testing.T) {
	r, kafka, _, _ := startTLSRelay(t, func(cfg *relay.Config) {
		cfg.WebSocket.StallTimeout, cfg.WebSocket.WriteTimeout = 10*time.Second, time.Second
		cfg.WebSocket.MaxConnections = 1
		cfg.Ingest.MaxValueBytes = 64 << 10
	})
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:tls-cap:1x2"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"n":0}`))

	// A small receive buffer, so that the TCP connection fills at once.
	small := ws.Dialer{TLSConfig: r.tls, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return nil
		}}
		return d.DialContext(ctx, network, addr)
	}}
	conn, _, _, err := small.Dial(t.Context(), r.url())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	slow := &wsClient{t: t, conn: conn}
	slow.connect()
	slow.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	slow.mustNext()
	// From here the client reads nothing.
	gauge := func(name string) float64 {
		_, body := r.get(t, "/metrics")
		return metric(body, name)
	}
	big := `{"pad":"` + strings.Repeat("x", 60<<10) + `"}`
	checkFor(t, 60*time.Second, func() error {
		for range 20 {
			produce(t, prod, "odds", ch, big)
		}
		if n := gauge("edgerelay_connections"); n != 0 {
			return errors.New("slow client still connected")
		}
		return nil
	})
	// The slot is free: the next client is admitted (503 until it is).
	var next *wsClient
	checkFor(t, 20*time.Second, func() error {
		c, _, _, err := ws.Dialer{TLSConfig: r.tls}.Dial(t.Context(), r.url())
		if err != nil {
			return err
		}
		next = &wsClient{t: t, conn: c}
		return nil
	})
	defer next.conn.Close()
	if b := gauge("edgerelay_tls_bridged_connections"); b > 1 {
		t.Errorf("%v TLS bridges open with websocket.max_connections 1: the dropped client's bridge outlives its connection", b)
	}
}

// TestTLSReloadDoesNotBlockHandshakes: a certificate file whose read
// hangs (a slow or hung network file system; here a FIFO that no one
// writes yet) must not stop every other handshake: the node keeps serving
// the certificate it has while one reload is under way.
func TestTLSReloadDoesNotBlockHandshakes(t *testing.T) {
	r, _, ca, cfg := startTLSRelay(t, nil)
	if _, err := servedCert(r.addr, ca.pool); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(cfg.TLS.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	fifo := cfg.TLS.CertFile + ".fifo"
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, cfg.TLS.CertFile); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the disk answers at last: the relay can stop
		if f, err := os.OpenFile(cfg.TLS.CertFile, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Write(pem)
			f.Close()
		}
	})
	handshake := func() error {
		c, err := net.DialTimeout("tcp", r.addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"})
		tc.SetDeadline(time.Now().Add(2 * time.Second))
		return tc.Handshake()
	}
	// The first handshake past reload_check (100 ms) looks at the files
	// and may wait for the disk; the ones after it must not.
	time.Sleep(300 * time.Millisecond)
	checkFor(t, 15*time.Second, handshake)
}

// TestTLSReloadSymlinkSwap: a Kubernetes Secret volume replaces the pair
// by pointing its ..data symlink at a new directory. The new files are
// new files even when their size and modification time equal the old
// ones' (a copy that keeps times, two certificates of one length from one
// CA): the relay must serve the new pair.
func TestTLSReloadSymlinkSwap(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	base := t.TempDir()
	ca := newTestCA(t, base, "ca")
	d1, d2 := filepath.Join(base, "..2026_12_01_1"), filepath.Join(base, "..2026_12_01_2")
	for _, d := range []string{d1, d2} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ca.issue(t, filepath.Join(d1, "tls.crt"), filepath.Join(d1, "tls.key"), 1)
	// A second pair of exactly the same sizes (ECDSA signatures vary by a
	// byte or two), with the same modification times.
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for i := 0; ; i++ {
		ca.issue(t, filepath.Join(d2, "tls.crt"), filepath.Join(d2, "tls.key"), 2)
		if size(filepath.Join(d1, "tls.crt")) == size(filepath.Join(d2, "tls.crt")) && size(filepath.Join(d1, "tls.key")) == size(filepath.Join(d2, "tls.key")) {
			break
		}
		if i == 100 {
			t.Fatal("no certificate of the same size in 100 tries")
		}
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		fi, _ := os.Stat(filepath.Join(d1, f))
		if err := os.Chtimes(filepath.Join(d2, f), fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(d1), filepath.Join(base, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(base, f)); err != nil {
			t.Fatal(err)
		}
	}
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ReloadCheck = filepath.Join(base, "tls.crt"), filepath.Join(base, "tls.key"), 100*time.Millisecond
	r := startRelay(t, cfg)
	serial := func() (int64, error) {
		c, err := servedCert(r.addr, ca.pool)
		if err != nil {
			return 0, err
		}
		return c.SerialNumber.Int64(), nil
	}
	if s, err := serial(); err != nil || s != 1 {
		t.Fatalf("serial %d served (%v), want 1", s, err)
	}
	// The atomic writer's swap: a new ..data symlink renamed over the old.
	if err := os.Symlink(filepath.Base(d2), filepath.Join(base, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(base, "..data_tmp"), filepath.Join(base, "..data")); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		s, err := serial()
		if err == nil && s != 2 {
			err = fmt.Errorf("serial %d served after the swap, want 2", s)
		}
		return err
	})
}

// TestTLSClientHelloBound: crypto/tls accepts a ClientHello of up to
// 64 KiB and keeps the buffer it grew for it for the life of the
// connection, so a client that pads its hello (here with 60 KB of ALPN
// names) makes each of its TLS WebSockets hold some 120 KiB instead of
// some 27 KiB (measured with heap profiles of 200 connections). Real
// clients send a few KiB at most: a hello past the listener's bound is
// refused, and an ordinary client still connects.
func TestTLSClientHelloBound(t *testing.T) {
	r, _, _, _ := startTLSRelay(t, nil)
	padded := r.tls.Clone()
	for i := 0; i < 235; i++ {
		padded.NextProtos = append(padded.NextProtos, fmt.Sprintf("%03d", i)+strings.Repeat("p", 252))
	}
	padded.NextProtos = append(padded.NextProtos, "http/1.1")
	if c, _, _, err := (ws.Dialer{TLSConfig: padded}).Dial(t.Context(), r.url()); err == nil {
		c.Close()
		t.Errorf("a 60 KB ClientHello was accepted")
	}
	c := r.dial(t)
	c.connect()
	// TLS 1.2 too, as docs/security.md says; 1.1 is refused.
	v12 := r.tls.Clone()
	v12.MaxVersion = tls.VersionTLS12
	c = dialWith(t, ws.Dialer{TLSConfig: v12}, r.url())
	c.connect()
	if st := c.conn.(*tls.Conn).ConnectionState(); st.Version != tls.VersionTLS12 {
		t.Errorf("TLS version %x, want 1.2", st.Version)
	}
	v11 := r.tls.Clone()
	v11.MinVersion, v11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, _, _, err := (ws.Dialer{TLSConfig: v11}).Dial(t.Context(), r.url()); err == nil {
		c.Close()
		t.Errorf("a TLS 1.1 client was accepted")
	} else if !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.1 refused with %v, want the server's protocol_version alert", err)
	}
}

// TestTLSCloseHalfCloses: when the engine closes a connection whose
// client is still sending (here: a binary frame on a JSON connection,
// then 320 KB more), the plain path sends the close frame, shuts its write
// side (FIN) and waits for the client to hang up (engine.afterDrainLocked,
// 2 s at most). The bridge must do the same after its close_notify: a
// close(2) with the client's input unread makes the kernel answer with a
// reset, which discards what it has not sent yet (the close frame on any
// link slower than loopback) and, on some client stacks, what the client
// has not read yet. The client's TCP state tells: CLOSE_WAIT after a FIN,
// CLOSE after a reset.
func TestTLSCloseHalfCloses(t *testing.T) {
	r, _, _, _ := startTLSRelay(t, nil)
	raw, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cc := r.tls.Clone()
	cc.ServerName = "127.0.0.1"
	conn := tls.Client(raw, cc)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	u, _ := url.Parse(r.url())
	if _, _, err := (ws.Dialer{}).Upgrade(conn, u); err != nil {
		t.Fatal(err)
	}
	wsutil.WriteClientMessage(conn, ws.OpBinary, []byte("x"))
	msg := []byte(strings.Repeat("y", 16<<10))
	for range 20 {
		if err := wsutil.WriteClientMessage(conn, ws.OpText, msg); err != nil {
			break
		}
	}
	var code ws.StatusCode
	for {
		h, err := ws.ReadHeader(conn)
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		b := make([]byte, h.Length)
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		if h.OpCode == ws.OpClose {
			code, _ = ws.ParseCloseFrameData(b)
			break
		}
	}
	if code != 3501 {
		t.Errorf("close code %d, want 3501", code)
	}
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the close frame: %v, want EOF (close_notify)", err)
	}
	if state := tcpState(raw); state != unix.BPF_TCP_CLOSE_WAIT {
		t.Errorf("client TCP state %d after the close, want CLOSE_WAIT (%d): the relay reset the connection instead of half-closing it", state, unix.BPF_TCP_CLOSE_WAIT)
	}
	// The client never hangs up: the engine's close deadline (2 s after
	// the close frame) still ends the bridge.
	checkFor(t, 10*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		if b := metric(body, "edgerelay_tls_bridged_connections"); b != 0 {
			return fmt.Errorf("%v bridged connections", b)
		}
		return nil
	})
}

// tcpState is the kernel's state of c's TCP connection: CLOSE_WAIT once
// the peer's FIN arrived, CLOSE after a reset.
func tcpState(c net.Conn) uint8 {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0
	}
	var state uint8
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = info.State
		}
	})
	return state
}

// TestTLSPlainHTTPAnswer: the 400 for a plain-HTTP request to the TLS port
// is followed by a FIN, not by a reset that can drop it before the client
// reads it (the request past the 5 bytes crypto/tls looked at is unread).
func TestTLSPlainHTTPAnswer(t *testing.T) {
	r, _, _, _ := startTLSRelay(t, nil)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: "+strings.Repeat("a", 2000)+"\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !strings.Contains(string(got), "400 Bad Request") {
		t.Fatalf("reply %q, %v; want a 400 and EOF", got, err)
	}
	if state := tcpState(c); state != unix.BPF_TCP_CLOSE_WAIT {
		t.Errorf("client TCP state %d after the 400, want CLOSE_WAIT (%d): reset", state, unix.BPF_TCP_CLOSE_WAIT)
	}
}
