package engine

import (
	"bytes"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// closeHandler is a session that counts messages, runs onMessage for
// each (on the poller) and reports Closed.
type closeHandler struct {
	mu        sync.Mutex
	msgs      int
	onMessage func()
	closed    chan struct{}
}

func newCloseHandler() *closeHandler { return &closeHandler{closed: make(chan struct{})} }

func (h *closeHandler) Message([]byte, bool) bool {
	h.mu.Lock()
	h.msgs++
	h.mu.Unlock()
	if h.onMessage != nil {
		h.onMessage()
	}
	return true // the session did not ask to close: the engine did
}
func (h *closeHandler) Violation(uint16, error) {}
func (h *closeHandler) Closed()                 { close(h.closed) }

func (h *closeHandler) messages() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs
}

// waitClosed fails t unless Handler.Closed comes within d.
func (h *closeHandler) waitClosed(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case <-h.closed:
	case <-time.After(d):
		t.Fatalf("connection not cleaned up (no Handler.Closed) %v after %s", d, what)
	}
}

// tcpPair connects a loopback TCP client, whose receive buffer is rcvbuf
// bytes (0: the default), and returns the accepted socket as the engine
// takes it (non-blocking, the only descriptor) with the client.
func tcpPair(t *testing.T, rcvbuf int) (int, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if rcvbuf == 0 {
			return nil
		}
		return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf) })
	}}
	cl, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rc, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, dupErr := -1, error(nil)
	rc.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) })
	if dupErr != nil {
		t.Fatal(dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return fd, cl.(*net.TCPConn)
}

// startEngine runs an engine with one poller and one writer.
func startEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	cfg.Pollers, cfg.Writers = 1, 1
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

func clientText(p string) []byte {
	return ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewTextFrame([]byte(p))))
}

// TestNoMessageAfterEngineClose: once the engine closes a connection on its
// own (here as slow: a reply past MaxQueueBytes, queued during Message, as
// the relay's subscribe replies are), the Handler gets none of the input
// still to come, though its Message returned true. It used to get all of
// it: the poller handed a closed connection's whole backlog to the session
// (seconds of work for 4,000 subscribes, every reply dropped), serving no
// event meanwhile, the client's hang-up among them (the relay's
// TestRepliesBoundedByQueueLimit then missed its shutdown deadline).
func TestNoMessageAfterEngineClose(t *testing.T) {
	env := newTestEnv(t, DefaultConfig())
	h := newCloseHandler()
	c := env.conn(ConnConfig{})
	c.h, c.fd = h, 1<<20 // never written: the writer does not run
	tooBig := MessageFrame(HeadText, make([]byte, env.e.cfg.MaxQueueBytes))
	h.onMessage = func() { c.Send(tooBig) }
	var backlog []byte
	for range 10 {
		backlog = append(backlog, clientText(`{"id":1,"subscribe":{"channel":"odds:big"}}`)...)
	}
	c.consume(backlog) // one read
	if !c.closing || len(c.queue) != 1 {
		t.Fatalf("no slow close queued (closing %v, %d frames queued, want the close frame)", c.closing, len(c.queue))
	}
	c.consume(clientText(`{"id":2}`)) // the next read
	if n := h.messages(); n != 1 {
		t.Errorf("Handler got %d messages; want only the one before the engine closed the connection", n)
	}

	// A close from another goroutine between two reads: the next read's
	// messages are dropped as well.
	h2 := newCloseHandler()
	c2 := env.conn(ConnConfig{})
	c2.h, c2.fd = h2, 1<<20
	c2.consume(clientText("before"))
	c2.Close(3001, "shutdown")
	c2.consume(clientText("after"))
	if n := h2.messages(); n != 1 {
		t.Errorf("Handler got %d messages; want only the one before Conn.Close", n)
	}
}

// TestHangUpAfterSlowClose: on real sockets, a client closed as slow while
// its commands are still arriving is cleaned up as soon as it goes away
// (here with a reset: it has not read the close frame), with none of its
// backlog handled, and no sweep (CheckTimeouts) needed.
func TestHangUpAfterSlowClose(t *testing.T) {
	e := startEngine(t, DefaultConfig())
	fd, cl := tcpPair(t, 4096)
	var backlog []byte
	for range 40 {
		backlog = append(backlog, clientText(string(bytes.Repeat([]byte("s"), 1000)))...)
	}
	// All of it is in the socket before the engine first reads it.
	if _, err := cl.Write(backlog); err != nil {
		t.Fatal(err)
	}
	h := newCloseHandler()
	c := e.NewConn(fd, ConnConfig{}, h)
	tooBig := MessageFrame(HeadText, make([]byte, e.cfg.MaxQueueBytes))
	slow := make(chan struct{})
	h.onMessage = func() {
		if h.messages() == 1 {
			c.Send(tooBig) // closes as slow
			close(slow)
		}
	}
	if err := c.Start(nil); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	select {
	case <-slow:
	case <-time.After(10 * time.Second):
		t.Fatal("the first message was not handled")
	}
	cl.Close()
	h.waitClosed(t, 10*time.Second, "the client closed")
	if n := h.messages(); n != 1 {
		t.Errorf("Handler got %d of the client's %d messages; want 1 (the rest came after the slow close)", n, 40)
	}
}

// TestCloseDeadlineNeverReadingClient: a client that never reads and never
// closes is cleaned up at the close deadline: Config.WriteTimeout after a
// slow close whose close frame cannot go out (its socket is full), 2s after
// one whose close frame went out; not before.
func TestCloseDeadlineNeverReadingClient(t *testing.T) {
	cfg := DefaultConfig()
	e := startEngine(t, cfg)
	tooBig := MessageFrame(HeadText, make([]byte, cfg.MaxQueueBytes))
	state := func(c *Conn) (waitOut, closeSent bool, deadline int64, fd int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.waitOut, c.closeSent, c.closeDeadline, c.fd
	}
	await := func(what string, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	expire := func(c *Conn, h *closeHandler, deadline int64, what string) {
		t.Helper()
		if !c.CheckTimeouts(deadline) { // at the deadline, not past it
			t.Fatal("CheckTimeouts: a closing connection reported not closing")
		}
		if _, _, _, fd := state(c); fd < 0 {
			t.Fatal("connection removed before its close deadline")
		}
		c.CheckTimeouts(deadline + 1)
		h.waitClosed(t, 10*time.Second, what)
	}

	t.Run("close frame stuck", func(t *testing.T) {
		fd, _ := tcpPair(t, 4096)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10)
		h := newCloseHandler()
		c := e.NewConn(fd, ConnConfig{}, h)
		if err := c.Start(nil); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		chunk := MessageFrame(HeadText, make([]byte, 32<<10))
		for full := false; !full; {
			c.Send(chunk)
			await("the chunk to be written or the socket to fill", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				full = c.waitOut
				return full || len(c.queue) == 0
			})
		}
		before := time.Now().UnixNano()
		c.Send(tooBig)
		waitOut, closeSent, deadline, _ := state(c)
		if !waitOut || closeSent || deadline == 0 {
			t.Fatalf("after the slow close: waitOut %v closeSent %v closeDeadline %d; want the close frame stuck, with a deadline", waitOut, closeSent, deadline)
		}
		if deadline < before+int64(cfg.WriteTimeout) || deadline > time.Now().Add(cfg.WriteTimeout).UnixNano() {
			t.Fatalf("close deadline %v after the slow close; want the write timeout, %v", time.Duration(deadline-before), cfg.WriteTimeout)
		}
		expire(c, h, deadline, "the close deadline (close frame not written)")
	})

	t.Run("close frame written", func(t *testing.T) {
		fd, _ := tcpPair(t, 0)
		h := newCloseHandler()
		c := e.NewConn(fd, ConnConfig{}, h)
		if err := c.Start(nil); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		before := time.Now().UnixNano()
		c.Send(tooBig)
		await("the close frame to be written", func() bool { _, sent, _, _ := state(c); return sent })
		_, _, deadline, _ := state(c)
		if deadline < before+int64(2*time.Second) || deadline > time.Now().Add(2*time.Second).UnixNano() {
			t.Fatalf("close deadline %v after the slow close; want 2s after the close frame went out", time.Duration(deadline-before))
		}
		expire(c, h, deadline, "the close deadline (client never closed)")
	})
}

// startedConn starts an engine and a connection of it with a
// closeHandler, and returns the handler with the connection's client.
func startedConn(t *testing.T) (*closeHandler, *net.TCPConn) {
	t.Helper()
	e := startEngine(t, DefaultConfig())
	fd, cl := tcpPair(t, 0)
	h := newCloseHandler()
	c := e.NewConn(fd, ConnConfig{}, h)
	if err := c.Start(nil); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return h, cl
}

// TestShortReadThenMoreInput: the poller stops reading a socket at a short
// read instead of reading again for EAGAIN; what arrives afterwards, a
// frame's second half, later messages, a message with the client's FIN
// right behind it, is still read, from the next edge.
func TestShortReadThenMoreInput(t *testing.T) {
	h, cl := startedConn(t)
	waitMessages := func(n int, what string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); h.messages() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d messages handled, want %d", what, h.messages(), n)
			}
		}
	}
	frame := clientText(`{"id":1,"rpc":{"method":"bet"}}`)
	for i := range 50 {
		if _, err := cl.Write(frame); err != nil {
			t.Fatal(err)
		}
		waitMessages(i+1, "one message at a time")
	}
	// Half a frame, read short; the rest comes after the poller went back
	// to epoll_wait.
	cl.Write(frame[:7])
	time.Sleep(20 * time.Millisecond) // not for correctness: only so that the halves arrive apart
	cl.Write(frame[7:])
	waitMessages(51, "a frame in two writes")
	cl.Write(append(append([]byte(nil), frame...), frame...))
	cl.CloseWrite()
	waitMessages(53, "two messages and a FIN")
	h.waitClosed(t, 10*time.Second, "the client sent its FIN")
}

// TestUrgentDataDoesNotStallInput: TCP urgent data (MSG_OOB) ends a read
// at its mark with input still in the socket, a short read that did not
// drain it; the input after the mark must still be read, without a new
// arrival to raise an edge.
func TestUrgentDataDoesNotStallInput(t *testing.T) {
	h, cl := startedConn(t)
	frame := clientText(`{"id":1,"rpc":{"method":"bet"}}`)
	rc, err := cl.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sendErr error
	rc.Write(func(s uintptr) bool {
		// One segment: corked, the three sends leave together.
		fd := int(s)
		if sendErr = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK, 1); sendErr != nil {
			return true
		}
		if _, sendErr = unix.Write(fd, frame); sendErr != nil {
			return true
		}
		if sendErr = unix.Send(fd, []byte{'!'}, unix.MSG_OOB); sendErr != nil {
			return true
		}
		if _, sendErr = unix.Write(fd, frame); sendErr != nil {
			return true
		}
		sendErr = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK, 0)
		return true
	})
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	for deadline := time.Now().Add(5 * time.Second); h.messages() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages handled, want 2: the input after the urgent mark stayed in the socket", h.messages())
		}
	}
}

// TestPollerParksInNetpoller: a poller with nothing to read waits parked in
// the Go runtime's netpoller ("IO wait"), holding no P, instead of blocked
// in an epoll_wait system call ("syscall"), which keeps its P until the
// runtime's monitor takes it back (up to 20 ms): with GOMAXPROCS=1 the
// writers, the Kafka client and timers waited for that. And it still
// wakes for input.
func TestPollerParksInNetpoller(t *testing.T) {
	e := startEngine(t, DefaultConfig())
	state := func() string {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "(*poller).run(") {
				head, _, _ := strings.Cut(g, "\n")
				return head
			}
		}
		return "no poller goroutine"
	}
	waitParked := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(state(), "[IO wait") {
			if time.Now().After(deadline) {
				t.Fatalf("idle poller is %q, want parked in the netpoller ([IO wait])", state())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitParked()

	fd, cl := tcpPair(t, 0)
	h := newCloseHandler()
	c := e.NewConn(fd, ConnConfig{}, h)
	if err := c.Start(nil); err != nil {
		t.Fatal(err)
	}
	cl.Write(clientText("hello"))
	deadline := time.Now().Add(10 * time.Second)
	for h.messages() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the parked poller did not wake for the client's message")
		}
		time.Sleep(time.Millisecond)
	}
	waitParked()
}
