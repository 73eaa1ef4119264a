package engine

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/fanout"
)

// testHooks counts the conflations the engine reports.
type testHooks struct {
	nopHooks
	behind atomic.Uint64 // updates conflated because the node was behind
	slow   atomic.Uint64 // updates conflated because the client was slow
}

func (h *testHooks) OnQueueConflated(n int, behind bool) {
	if behind {
		h.behind.Add(uint64(n))
	} else {
		h.slow.Add(uint64(n))
	}
}

// testCounter is a sink's Counter.
type testCounter struct{ n atomic.Uint64 }

func (c *testCounter) Add(v float64) { c.n.Add(uint64(v)) }

// nopHandler is a session that ignores everything.
type nopHandler struct{}

func (nopHandler) Message([]byte, bool) bool { return true }
func (nopHandler) Violation(uint16, error)   {}
func (nopHandler) Closed()                   {}

var (
	_ Hooks   = (*testHooks)(nil)
	_ Counter = (*testCounter)(nil)
	_ Handler = nopHandler{}
)

// opaque is a form bit the engine does not interpret (the relay's
// channel compaction, say): it must be carried through.
const opaque fanout.Form = 1 << 0

// testEnv is an engine that is not started, with a hub whose encoder
// builds every form (testEncoder), on its clock at one hour.
type testEnv struct {
	e     *Engine
	hub   *fanout.Hub
	hooks *testHooks
}

func newTestEnv(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	hooks := &testHooks{}
	cfg.Hooks = hooks
	if cfg.Compressor == nil {
		z, err := NewCompressor(6, 128)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Compressor = z
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Store(int64(time.Hour))
	return &testEnv{e: e, hub: fanout.New(fanout.Config{Encoder: testEncoder(cfg.Compressor)}), hooks: hooks}
}

// conn returns a connection with its own writer, which does not run; fd
// -1: nothing is scheduled or written.
func (env *testEnv) conn(cc ConnConfig) *Conn {
	return &Conn{eng: env.e, h: nopHandler{}, cfg: cc, fd: -1, writer: newWriter(env.e)}
}

// testEncoder builds form f of u as a text frame: the publication's data,
// or for FormPatch a short patch when u has a previous publication;
// FormDeflate forms with z. Other bits are only carried in Form.
func testEncoder(z *Compressor) fanout.Encoder {
	return func(u *fanout.Update, f fanout.Form) *fanout.Frame {
		switch {
		case f&FormDeflate != 0:
			return z.DeflateFrame(u.Frame(f&^FormDeflate), f)
		case f&FormKinds == FormPatch && u.Prev == nil:
			return nil
		case f&FormKinds == FormPatch:
			return &fanout.Frame{Bytes: MessageFrame(HeadText, []byte("patch")), Pub: u.Pub, Form: f}
		}
		return &fanout.Frame{Bytes: MessageFrame(HeadText, u.Pub.Data), Pub: u.Pub, Form: f}
	}
}

func TestWriterCount(t *testing.T) {
	for _, tt := range []struct{ configured, cores, want int }{
		{0, 1, 1}, {0, 2, 2}, {0, 8, 8}, {3, 2, 3}, {1, 8, 1},
	} {
		if got := writerCount(tt.configured, tt.cores); got != tt.want {
			t.Errorf("writerCount(%d, %d) = %d, want %d", tt.configured, tt.cores, got, tt.want)
		}
	}
}
