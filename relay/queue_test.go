package relay

import (
	"testing"

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
			c := &conn{fd: 1, inflight: tt.inflight, head: tt.head}
			c.queue = []*fanout.Frame{pubFrame("a", 10, false), pubFrame("b", 20, false)}
			c.queued = 30 - tt.head
			got := c.replaceLocked(pubFrame("b", 7, false))
			if got != tt.wantReplace {
				t.Fatalf("replaceLocked = %v, want %v", got, tt.wantReplace)
			}
			if got && (len(c.queue[1].Bytes) != 7 || c.queued != 17-tt.head) {
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

// TestDeltaSubscriptionVariants: a delta subscriber gets a patch only when
// it will hold the patch's base; otherwise, and whenever conflation
// replaces a queued update, it gets the full payload.
func TestDeltaSubscriptionVariants(t *testing.T) {
	s := &Server{cfg: DefaultConfig(), metrics: newMetrics(fanout.New(fanout.Config{Encoder: func(*fanout.Publication) []byte { return nil }}), func() bool { return true })}
	s.cfg.WebSocket.SoftQueueBytes = 100
	c := &conn{srv: s, fd: -1} // fd -1: nothing is scheduled or written
	sub := &subscription{c: c, channel: "odds:a", delta: true}
	p1, p2, p3 := &fanout.Publication{Channel: "odds:a"}, &fanout.Publication{Channel: "odds:a"}, &fanout.Publication{Channel: "odds:a"}
	update := func(prev, p *fanout.Publication, size int) *fanout.Update {
		return &fanout.Update{
			Full:       &fanout.Frame{Bytes: make([]byte, size), Pub: p},
			DeltaFull:  &fanout.Frame{Bytes: make([]byte, size), Pub: p, Variant: fanout.VariantDeltaFull},
			DeltaPatch: &fanout.Frame{Bytes: make([]byte, 10), Pub: p, Variant: fanout.VariantDeltaPatch},
			Prev:       prev,
		}
	}
	sub.Deliver(update(nil, p1, 40)) // no base yet: full
	sub.Deliver(update(p1, p2, 40))  // base p1: patch
	sub.Deliver(update(p1, p3, 40))  // base is p2, not p1: full
	want := []fanout.Variant{fanout.VariantDeltaFull, fanout.VariantDeltaPatch, fanout.VariantDeltaFull}
	for i, f := range c.queue {
		if f.Variant != want[i] {
			t.Fatalf("frame %d is variant %d, want %d", i, f.Variant, want[i])
		}
	}
	// Past the soft limit the newest queued frame of the channel is
	// replaced, by the full form even though a patch would apply.
	c.queued = 200
	p4 := &fanout.Publication{Channel: "odds:a"}
	sub.Deliver(update(p3, p4, 40))
	if last := c.queue[len(c.queue)-1]; len(c.queue) != 3 || last.Pub != p4 || last.Variant != fanout.VariantDeltaFull {
		t.Fatalf("after conflation: %d frames, last %+v", len(c.queue), last)
	}
}
