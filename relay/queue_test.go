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
