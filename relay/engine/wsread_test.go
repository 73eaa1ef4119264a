package engine

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"
	"golang.org/x/sys/unix"
)

// FuzzParseHeader checks our incremental header parser against gobwas/ws's
// reader on arbitrary input, including every truncation.
func FuzzParseHeader(f *testing.F) {
	for _, h := range []ws.Header{
		{Fin: true, OpCode: ws.OpText, Length: 5, Masked: true, Mask: [4]byte{1, 2, 3, 4}},
		{OpCode: ws.OpContinuation, Length: 300, Masked: true},
		{Fin: true, OpCode: ws.OpBinary, Length: 70000},
		{Fin: true, OpCode: ws.OpClose, Rsv: 4, Length: 2, Masked: true},
	} {
		var b bytes.Buffer
		ws.WriteHeader(&b, h)
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, ok := parseHeader(b)
		r := bytes.NewReader(b)
		want, err := ws.ReadHeader(r)
		consumed := len(b) - r.Len()
		if !ok {
			if err == nil {
				t.Fatalf("parseHeader needs more than %d bytes; ws.ReadHeader read %+v", len(b), want)
			}
			return
		}
		if n > len(b) {
			t.Fatalf("header size %d > input %d", n, len(b))
		}
		if err != nil {
			return // gobwas rejects some headers (e.g. huge lengths) that we reject later
		}
		if h != want || n != consumed {
			t.Fatalf("parseHeader = %+v (%d bytes), ws.ReadHeader = %+v (%d bytes)", h, n, want, consumed)
		}
	})
}

// recorder is a Handler that keeps what the engine tells it.
type recorder struct {
	msgs       []string
	binary     []bool
	violations []uint16
	wrongType  bool
}

func (r *recorder) Message(msg []byte, binary bool) bool {
	r.msgs = append(r.msgs, string(msg)) // msg is valid only during the call
	r.binary = append(r.binary, binary)
	return true
}

func (r *recorder) Violation(code uint16, err error) {
	r.violations = append(r.violations, code)
	r.wrongType = r.wrongType || errors.Is(err, ErrWrongFrameType)
}

func (r *recorder) Closed() {}

// nonMinimal is a masked text frame carrying p with its length in the
// extended form of n bytes (2 or 8), which RFC 6455 forbids for a short
// payload.
func nonMinimal(n int, p string) []byte {
	b := []byte{0x81, 0x80 | 126}
	if n == 8 {
		b[1] = 0x80 | 127
	}
	l := make([]byte, n)
	l[n-1] = byte(len(p))
	b = append(append(b, l...), 0, 0, 0, 0) // a zero mask
	return append(b, p...)
}

// TestReadMessages: the frame reader hands the Handler whole messages
// (reassembled, inflated) and closes on violations with the WebSocket code,
// or, for the other frame type, with the connection's own close.
func TestReadMessages(t *testing.T) {
	masked := func(op ws.OpCode, fin bool, rsv byte, p string) []byte {
		f := ws.NewFrame(op, fin, []byte(p))
		f.Header.Rsv = rsv
		return ws.MustCompileFrame(ws.MaskFrameInPlace(f))
	}
	unmasked := ws.MustCompileFrame(ws.NewTextFrame([]byte("hi")))
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, flate.BestSpeed)
	fw.Write([]byte(`{"id":1}`))
	fw.Flush()
	compressed := string(bytes.TrimSuffix(z.Bytes(), []byte{0, 0, 0xff, 0xff}))
	wrong := Close{Code: 3501, Reason: "binary message on a text connection"}
	for _, tt := range []struct {
		name      string
		binary    bool
		deflate   bool
		input     [][]byte
		want      []string
		close     uint16 // 0: none
		wrongType bool
	}{
		{"text", false, false, [][]byte{masked(ws.OpText, true, 0, "hello")}, []string{"hello"}, 0, false},
		{"binary", true, false, [][]byte{masked(ws.OpBinary, true, 0, "\x00\xff")}, []string{"\x00\xff"}, 0, false},
		{"fragments", false, false, [][]byte{masked(ws.OpText, false, 0, "hel"), masked(ws.OpContinuation, true, 0, "lo")}, []string{"hello"}, 0, false},
		{"split across reads", false, false, func() [][]byte { f := masked(ws.OpText, true, 0, "hello"); return [][]byte{f[:3], f[3:]} }(), []string{"hello"}, 0, false},
		{"compressed", false, true, [][]byte{masked(ws.OpText, true, 4, compressed)}, []string{`{"id":1}`}, 0, false},
		{"wrong frame type", false, false, [][]byte{masked(ws.OpBinary, true, 0, "x")}, nil, 3501, true},
		{"text on a binary connection", true, false, [][]byte{masked(ws.OpText, true, 0, "x")}, nil, 3501, true},
		{"unmasked", false, false, [][]byte{unmasked}, nil, 1002, false},
		{"invalid UTF-8", false, false, [][]byte{masked(ws.OpText, true, 0, "\xff\xfe")}, nil, 1007, false},
		{"RSV1 without deflate", false, false, [][]byte{masked(ws.OpText, true, 4, compressed)}, nil, 1002, false},
		{"close with a 1-byte payload", false, false, [][]byte{masked(ws.OpClose, true, 0, "\x03")}, nil, 1002, false},
		{"close with reserved 1005", false, false, [][]byte{masked(ws.OpClose, true, 0, "\x03\xed")}, nil, 1002, false},
		{"close with reserved 1006", false, false, [][]byte{masked(ws.OpClose, true, 0, "\x03\xee")}, nil, 1002, false},
		{"close with reserved 1015", false, false, [][]byte{masked(ws.OpClose, true, 0, "\x03\xf7")}, nil, 1002, false},
		{"close with code 999", false, false, [][]byte{masked(ws.OpClose, true, 0, "\x03\xe7")}, nil, 1002, false},
		{"close with code 5000", false, false, [][]byte{masked(ws.OpClose, true, 0, "\x13\x88")}, nil, 1002, false},
		{"close reason not UTF-8", false, false, [][]byte{masked(ws.OpClose, true, 0, "\x03\xe8\xff")}, nil, 1007, false},
		{"non-minimal 16-bit length", false, false, [][]byte{nonMinimal(2, "hello")}, nil, 1002, false},
		{"non-minimal 64-bit length", false, false, [][]byte{nonMinimal(8, "hello")}, nil, 1002, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, DefaultConfig())
			rec := &recorder{}
			c := env.conn(ConnConfig{Binary: tt.binary, WrongFrameType: wrong, Deflate: DeflateNegotiation{Accepted: tt.deflate}})
			c.h, c.fd = rec, 1<<20 // a descriptor no writer touches: its writer does not run
			for _, in := range tt.input {
				c.consume(append([]byte(nil), in...))
			}
			if fmt.Sprint(rec.msgs) != fmt.Sprint(tt.want) {
				t.Fatalf("messages %q, want %q", rec.msgs, tt.want)
			}
			for _, b := range rec.binary {
				if b != tt.binary {
					t.Fatalf("a message reported binary=%v on a binary=%v connection", b, tt.binary)
				}
			}
			if tt.close == 0 {
				if len(rec.violations) > 0 || len(c.queue) > 0 {
					t.Fatalf("violations %v, %d frames queued", rec.violations, len(c.queue))
				}
				return
			}
			if fmt.Sprint(rec.violations) != fmt.Sprint([]uint16{tt.close}) || rec.wrongType != tt.wrongType {
				t.Fatalf("violations %v (wrong type %v), want [%d] (%v)", rec.violations, rec.wrongType, tt.close, tt.wrongType)
			}
			if len(c.queue) != 1 {
				t.Fatalf("%d frames queued, want the close frame", len(c.queue))
			}
			f, err := ws.ReadFrame(bytes.NewReader(c.queue[0].Bytes))
			if err != nil {
				t.Fatal(err)
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if f.Header.OpCode != ws.OpClose || uint16(code) != tt.close || tt.wrongType && reason != wrong.Reason {
				t.Fatalf("queued %v %d %q, want a close %d", f.Header.OpCode, code, reason, tt.close)
			}
		})
	}
}

// TestDripFedFrame: a large frame arriving a few bytes per read costs
// memory and copying in proportion to its size, not to its size squared
// (each read used to copy the whole partial frame again), and counts as
// one frame against MaxFramesPerSecond, not one per read.
func TestDripFedFrame(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxFramesPerSecond, cfg.Flood = 10, Close{Code: 3013, Reason: "too many requests"}
	env := newTestEnv(t, cfg)
	rec := &recorder{}
	c := env.conn(ConnConfig{})
	c.h, c.fd = rec, 1<<20
	payload := bytes.Repeat([]byte("a"), 120<<10)
	frame := ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewTextFrame(payload)))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < len(frame); i += 16 {
		c.consume(frame[i:min(i+16, len(frame))])
	}
	runtime.ReadMemStats(&after)
	if len(rec.msgs) != 1 || len(rec.msgs[0]) != len(payload) || len(rec.violations) > 0 {
		t.Fatalf("%d messages, violations %v", len(rec.msgs), rec.violations)
	}
	// Quadratic: ~460 MB for this frame. Linear: a few times its size.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("a %d KB frame in 16-byte reads allocated %d KB", len(frame)>>10, alloc>>10)
	}
}

// TestFrameFlood: past MaxFramesPerSecond a client is closed with Flood.
func TestFrameFlood(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxFramesPerSecond, cfg.Flood = 10, Close{Code: 3013, Reason: "too many requests"}
	env := newTestEnv(t, cfg)
	rec := &recorder{}
	c := env.conn(ConnConfig{})
	c.h, c.fd = rec, 1<<20
	pong := ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewPongFrame(nil)))
	for i := 0; i < 11; i++ {
		c.consume(append([]byte(nil), pong...))
	}
	if fmt.Sprint(rec.violations) != "[3013]" {
		t.Fatalf("violations %v after 11 frames in one second, want [3013]", rec.violations)
	}
}

// TestPollerFairness: a client whose socket always has more input does
// not keep its poller from another client: the other's message is read
// while the flooder's backlog is still being worked through.
func TestPollerFairness(t *testing.T) {
	env := newTestEnv(t, DefaultConfig())
	p, err := newPoller(env.e)
	if err != nil {
		t.Fatal(err)
	}
	pair := func() (int, int) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.SetNonblock(fds[0], true)
		unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
		t.Cleanup(func() { unix.Close(fds[1]) })
		return fds[0], fds[1]
	}
	msg := ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewTextFrame(bytes.Repeat([]byte("f"), 1000))))
	floodFD, floodPeer := pair()
	var backlog []byte
	for len(backlog) < 2<<20 { // eight times readBudget, all there at once
		backlog = append(backlog, msg...)
	}
	if n, err := unix.Write(floodPeer, backlog); err != nil || n != len(backlog) {
		t.Fatalf("wrote %d of %d: %v", n, len(backlog), err)
	}
	total := len(backlog) / len(msg)
	byFD, byPeer := pair()
	unix.Write(byPeer, ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewTextFrame([]byte("bystander")))))

	var mu sync.Mutex
	flooded, seenAt := 0, -1
	done := make(chan struct{})
	flooder := &funcHandler{msg: func([]byte) {
		mu.Lock()
		if flooded++; flooded == total {
			close(done)
		}
		mu.Unlock()
	}}
	bystander := &funcHandler{msg: func([]byte) { mu.Lock(); seenAt = flooded; mu.Unlock() }}
	for _, x := range []struct {
		fd int
		h  Handler
	}{{floodFD, flooder}, {byFD, bystander}} {
		c := &Conn{eng: env.e, h: x.h, fd: x.fd, writer: newWriter(env.e)}
		if err := p.add(c, nil); err != nil {
			t.Fatal(err)
		}
	}
	go p.run()
	defer p.stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if seenAt < 0 || seenAt >= total {
		t.Fatalf("the bystander's message was read after %d of the flooder's %d (never: -1)", seenAt, total)
	}
}

// funcHandler is a Handler calling msg for each message.
type funcHandler struct{ msg func([]byte) }

func (h *funcHandler) Message(m []byte, _ bool) bool { h.msg(m); return true }
func (h *funcHandler) Violation(uint16, error)       {}
func (h *funcHandler) Closed()                       {}
