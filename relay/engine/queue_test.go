package engine

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/fanout"
)

// TestQueueFixedFrames: frames in a writev under way, or partly written,
// must be neither replaced by conflation nor dropped: the writer accounts
// for the bytes it wrote against exactly those frames.
func TestQueueFixedFrames(t *testing.T) {
	pubFrame := func(ch string, size int, prio bool) *fanout.Frame {
		return &fanout.Frame{Bytes: make([]byte, size), Pub: &fanout.Publication{Channel: ch, Priority: prio}}
	}
	tests := []struct {
		name        string
		inflight    int
		head        int
		wantReplace bool
		wantKept    int // after dropQueueLocked
	}{
		{"idle queue", 0, 0, true, 0},
		{"partly written head", 0, 5, true, 1},
		{"both in flight", 2, 0, false, 2},
		{"one in flight", 1, 0, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Conn{fd: 1, inflight: tt.inflight, head: tt.head}
			c.queue = []*fanout.Frame{pubFrame("a", 10, false), pubFrame("b", 20, false)}
			c.queued = 30 - tt.head
			got := c.replaceLocked(pubFrame("b", 7, false))
			if (got > 0) != tt.wantReplace {
				t.Fatalf("replaceLocked = %v, want a replacement: %v", got, tt.wantReplace)
			}
			if got > 0 && (len(c.queue[1].Bytes) != 7 || c.queued != 17-tt.head) {
				t.Fatalf("after replace: queue[1] %d bytes, queued %d", len(c.queue[1].Bytes), c.queued)
			}
			c.dropQueueLocked()
			if len(c.queue) != tt.wantKept {
				t.Fatalf("dropQueueLocked kept %d frames, want %d", len(c.queue), tt.wantKept)
			}
			want := 0
			for i, f := range c.queue {
				want += len(f.Bytes)
				if i == 0 {
					want -= c.head
				}
			}
			if c.queued != want {
				t.Fatalf("queued %d, want %d", c.queued, want)
			}
		})
	}
}

// TestReplaceLatest: conflation leaves the channel's newest value in the
// queue and drops its older unwritten updates, back to the nearest barrier:
// a reply, a priority frame of the channel, or frames under way. Other
// channels' frames and the order of what stays are untouched. Queues are
// written as frames separated by spaces: a channel name, "!" before it for
// a priority frame, "r" for a reply, "/key" after it for a map entry's
// change; the new frame is "new", of channel b (and key, if set). A map's
// keys conflate each by itself.
func TestReplaceLatest(t *testing.T) {
	tests := []struct {
		name     string
		queue    string
		inflight int
		want     string // "" : nothing replaced
		n        int
		key      string
	}{
		{"a map key conflates only with itself", "b/x b/y b b/x", 0, "b/y b new", 2, "x"},
		{"a removal of the key is a barrier", "b/x !b/x b/x", 0, "b/x !b/x new", 1, "x"},
		{"a map key's change goes last: offset order", "b/x b/y b/z", 0, "b/y b/z new", 1, "x"},
		{"and not ahead of a reply", "b/x r b/y", 0, "", 0, "x"},
		{"in flight frames of the key stay", "b/x b/y b/x", 1, "b/x b/y new", 1, "x"},
		{"the channel's frames are not a map key's", "b/x b/y", 0, "", 0, ""},
		{"newest only", "a b", 0, "a new", 1, ""},
		{"older stale ones dropped", "b a b c b", 0, "a c new", 3, ""},
		{"priority of the channel is a barrier", "b !b b a b", 0, "b !b a new", 2, ""},
		{"priority of another channel is not", "b !a b", 0, "!a new", 2, ""},
		{"reply is a barrier", "b r b", 0, "b r new", 1, ""},
		{"reply after the channel's frames", "b r", 0, "", 0, ""},
		{"in flight frames stay", "b b b", 1, "b new", 2, ""},
		{"all in flight", "b b", 2, "", 0, ""},
		{"no frame of the channel", "a c", 0, "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Conn{fd: 1, inflight: tt.inflight}
			for _, name := range strings.Fields(tt.queue) {
				f := &fanout.Frame{Bytes: []byte(name)}
				if name != "r" {
					ch, key, _ := strings.Cut(strings.TrimPrefix(name, "!"), "/")
					f.Pub = &fanout.Publication{Channel: ch, Key: key, Priority: name[0] == '!'}
				}
				c.queue = append(c.queue, f)
				c.queued += len(f.Bytes)
			}
			before := c.queued
			n := c.replaceLocked(&fanout.Frame{Bytes: []byte("new"), Pub: &fanout.Publication{Channel: "b", Key: tt.key}})
			want := tt.want
			if want == "" {
				want = tt.queue
			}
			var got []string
			for _, f := range c.queue {
				got = append(got, string(f.Bytes))
			}
			queued := sumQueued(c.queue)
			if n != tt.n || strings.Join(got, " ") != want {
				t.Fatalf("replaceLocked = %d, queue %q; want %d, %q", n, strings.Join(got, " "), tt.n, want)
			}
			if c.queued != queued {
				t.Fatalf("queued = %d after replace (was %d), frames hold %d", c.queued, before, queued)
			}
		})
	}
}

// TestDeltaSubscriptionForms: a delta subscriber gets a patch only when it
// will hold the patch's base; otherwise, and whenever conflation replaces a
// queued update, it gets the full payload. Sinks with the encoder's own
// bits and deflate sinks get the same choice in their own envelope.
func TestDeltaSubscriptionForms(t *testing.T) {
	for _, extra := range []fanout.Form{0, opaque, FormDeflate, opaque | FormDeflate} {
		t.Run(fmt.Sprintf("form=%d", extra), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.SoftQueueBytes = 1 << 10
			env := newTestEnv(t, cfg)
			c := env.conn(ConnConfig{Deflate: DeflateNegotiation{Accepted: extra&FormDeflate != 0}})
			sub := c.NewSink("odds:a", FormDeltaFull|extra&opaque, nil)
			if err := env.hub.Subscribe("odds:a", sub, nil); err != nil {
				t.Fatal(err)
			}
			publish := func(off int64) {
				data := fmt.Sprintf(`{"market":"1x2","odds":[%d.25,3.40,3.90],"names":%q}`, off, strings.Repeat("home draw away ", 20))
				env.hub.Publish(&fanout.Publication{Channel: "odds:a", Data: []byte(data), Pos: fanout.Position{Offset: off}})
			}
			publish(1) // no base yet: full
			publish(2) // base 1: patch
			sub.base = &fanout.Publication{}
			publish(3) // the client holds something else: full
			want := []fanout.Form{FormDeltaFull, FormPatch, FormDeltaFull}
			for i, f := range c.queue {
				if f.Form&FormKinds != want[i] || f.Form&opaque != extra&opaque {
					t.Fatalf("frame %d is form %d, want kind %d and %d", i, f.Form, want[i], extra)
				}
				if deflated := f.Form&FormDeflate != 0; deflated != (extra&FormDeflate != 0) && f.Form&FormKinds != FormPatch {
					t.Fatalf("frame %d is form %d: deflated %v", i, f.Form, deflated)
				}
			}
			// Past the soft limit the channel's queued frames give way to
			// the newest, in full form even though a patch would apply.
			c.queued = 2 << 10
			publish(4)
			if last := c.queue[len(c.queue)-1]; len(c.queue) != 1 || last.Pub.Pos.Offset != 4 || last.Form&FormKinds != FormDeltaFull {
				t.Fatalf("after conflation: %d frames, last form %d offset %d", len(c.queue), last.Form, last.Pub.Pos.Offset)
			}
		})
	}
}

// TestOverloadConflation: when a connection has waited for a writer past
// overload.conflate_after, a channel update replaces the channel's
// unwritten one (the full form for delta subscribers), so the client gets
// the latest value; priority updates are neither replaced nor replace, and
// deliver_all channels and connections not waiting keep every update.
// A connection also counts as behind when its writer's last connection
// waited that long, and as slow when its socket has been full that long.
// Later updates only replace the held update, and the writer settles them
// into the queue (settleAllLocked) before it writes: the queue is checked
// as the writer sends it.
func TestOverloadConflation(t *testing.T) {
	type pub struct {
		off  int64
		prio bool
	}
	type state int
	const (
		scheduled    state = iota // waiting for its writer
		writerBehind              // just scheduled, but its writer's last connection waited long
		socketFull                // waiting for EPOLLOUT
		written                   // in a writer's hands (not scheduled)
	)
	for _, tt := range []struct {
		name    string
		channel string
		state   state
		waited  time.Duration
		delta   bool
		pubs    []pub
		want    []int64 // offsets queued, in order
	}{
		{"keeping up", "odds:a", scheduled, 5 * time.Millisecond, false, []pub{{1, false}, {2, false}, {3, false}}, []int64{1, 2, 3}},
		{"behind", "odds:a", scheduled, 30 * time.Millisecond, false, []pub{{1, false}, {2, false}, {3, false}}, []int64{3}},
		{"behind, delta", "odds:a", scheduled, 30 * time.Millisecond, true, []pub{{1, false}, {2, false}, {3, false}}, []int64{3}},
		{"writer behind", "odds:a", writerBehind, 0, false, []pub{{1, false}, {2, false}, {3, false}}, []int64{3}},
		{"socket full", "odds:a", socketFull, 30 * time.Millisecond, false, []pub{{1, false}, {2, false}, {3, false}}, []int64{3}},
		{"socket full a moment", "odds:a", socketFull, 5 * time.Millisecond, false, []pub{{1, false}, {2, false}}, []int64{1, 2}},
		{"socket full, deliver_all", "bets:#u", socketFull, 30 * time.Millisecond, false, []pub{{1, false}, {2, false}}, []int64{1, 2}},
		{"priority kept", "odds:a", scheduled, 30 * time.Millisecond, false, []pub{{1, false}, {2, true}, {3, false}, {4, false}}, []int64{1, 2, 4}},
		{"priority after a held update", "odds:a", scheduled, 30 * time.Millisecond, false, []pub{{1, false}, {2, false}, {3, false}, {4, true}, {5, false}, {6, false}}, []int64{3, 4, 6}},
		{"priority after a held update, delta", "odds:a", scheduled, 30 * time.Millisecond, true, []pub{{1, false}, {2, false}, {3, false}, {4, true}, {5, false}, {6, false}, {7, false}}, []int64{3, 4, 7}},
		{"deliver_all", "bets:#u", scheduled, 30 * time.Millisecond, false, []pub{{1, false}, {2, false}}, []int64{1, 2}},
		{"being written", "odds:a", written, 30 * time.Millisecond, false, []pub{{1, false}, {2, false}}, []int64{1, 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			form := FormPlain
			if tt.delta {
				form = FormDeltaFull
			}
			env, c, sub := newQueueConn(t, tt.channel, form)
			c.scheduled = tt.state == scheduled || tt.state == writerBehind
			c.writer.behind.Store(tt.state == writerBehind)
			c.scheduledAt = int64(time.Hour - tt.waited)
			if tt.state == socketFull { // scheduled long ago, the socket full since waited
				c.waitOut, c.scheduledAt, c.waitOutSince = true, 0, int64(time.Hour-tt.waited)
			}
			for _, p := range tt.pubs {
				env.publishOffset(tt.channel, p.off, p.prio)
			}
			c.mu.Lock()
			c.settleAllLocked()
			c.mu.Unlock()
			var got []int64
			for i, f := range c.queue {
				got = append(got, f.Pub.Pos.Offset)
				// offsets are consecutive: a patch applies to offset-1
				if f.Form&FormKinds == FormPatch && (i == 0 || c.queue[i-1].Pub.Pos.Offset != f.Pub.Pos.Offset-1) {
					t.Errorf("offset %d queued as a patch against a base the client will not hold", f.Pub.Pos.Offset)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("queued offsets %v, want %v", got, tt.want)
			}
			last := c.queue[len(c.queue)-1].Pub
			if sent := sub.sent.Load(); sent != last {
				t.Errorf("sent is offset %d, the client gets %d last", sent.Pos.Offset, last.Pos.Offset)
			}
			if tt.delta && sub.base != last {
				t.Errorf("delta base is offset %d, the client holds %d", sub.base.Pos.Offset, last.Pos.Offset)
			}
			if sum := sumQueued(c.queue); c.queued != sum {
				t.Errorf("queued = %d, frames hold %d", c.queued, sum)
			}
		})
	}
}

// sumQueued is the bytes queue's frames hold: what Conn.queued must say
// when nothing is partly written.
func sumQueued(queue []*fanout.Frame) int {
	n := 0
	for _, f := range queue {
		n += len(f.Bytes)
	}
	return n
}

// newQueueConn returns an engine, a connection no writer runs (fd -1) on
// its clock at one hour, and the connection's sink for channel in form.
// bets: channels are never conflated when the node is behind, as the
// relay configures them (overload.deliver_all).
func newQueueConn(t *testing.T, channel string, form fanout.Form) (*testEnv, *Conn, *Sink) {
	t.Helper()
	env := newTestEnv(t, DefaultConfig())
	c := env.conn(ConnConfig{})
	var conflated Counter = &testCounter{}
	if strings.HasPrefix(channel, "bets:") {
		conflated = nil
	}
	sub := c.NewSink(channel, form, conflated)
	if err := env.hub.Subscribe(channel, sub, nil); err != nil {
		t.Fatal(err)
	}
	return env, c, sub
}

// publishOffset publishes a 200-byte value at offset off to channel.
func (env *testEnv) publishOffset(channel string, off int64, prio bool) {
	env.hub.Publish(&fanout.Publication{Channel: channel, Data: fmt.Appendf(nil, `{"v":%d,"pad":%q}`, off, strings.Repeat("x", 200)),
		Pos: fanout.Position{Offset: off}, Priority: prio})
}

// queueString is the queue as offsets, "r" for a frame without a
// publication (reply, ping, close).
func queueString(c *Conn) string {
	var q []string
	for _, f := range c.queue {
		if f.Pub == nil {
			q = append(q, "r")
			continue
		}
		q = append(q, strconv.FormatInt(f.Pub.Pos.Offset, 10))
	}
	return strings.Join(q, " ")
}

// TestHeldFrames: a held frame takes the channel's newest update when the
// writer settles it, nothing published after a reply or close frame goes
// out ahead of it, and every update not written is counted as conflated.
// Steps are offsets to publish, "r" for a reply, "close" for a close frame.
func TestHeldFrames(t *testing.T) {
	const ch = "odds:a"
	for _, tt := range []struct {
		name, steps, want string
		conflated         uint64
	}{
		{"newest wins", "3", "3", 2},
		{"reply is a barrier", "3 r 4 5", "3 r 5", 3},
		{"nothing after the close frame", "3 close 4", "3 r", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, c, sub := newQueueConn(t, ch, FormPlain)
			c.scheduled, c.scheduledAt = true, int64(time.Hour-30*time.Millisecond)
			env.publishOffset(ch, 1, false)
			env.publishOffset(ch, 2, false) // replaces 1, held
			if sub.latest.Load() == nil {
				t.Fatal("offset 2 is not held")
			}
			for _, step := range strings.Fields(tt.steps) {
				switch step {
				case "r":
					c.Send([]byte("reply"))
				case "close":
					c.mu.Lock()
					c.fd = 1 // a close frame is queued only on an open socket
					c.startCloseLocked(3001, "shutdown", CloseRequested)
					c.fd = -1
					c.mu.Unlock()
				default:
					off, _ := strconv.ParseInt(step, 10, 64)
					env.publishOffset(ch, off, false)
				}
			}
			c.mu.Lock()
			c.settleAllLocked()
			c.mu.Unlock()
			if got := queueString(c); got != tt.want {
				t.Fatalf("queue %q, want %q", got, tt.want)
			}
			if got := env.hooks.behind.Load(); got != tt.conflated {
				t.Fatalf("%d updates counted as conflated, want %d", got, tt.conflated)
			}
		})
	}
}
