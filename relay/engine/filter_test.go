package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/fanout"
)

// matchFunc is a fanout.Filter.
type matchFunc func(tags map[string]string) bool

func (f matchFunc) Match(tags map[string]string) bool { return f(tags) }

// TestSinkFilter: a sink with a filter queues only the updates the filter
// matches, and a removal whatever its tags; when the node is behind, an
// update the filter skips does not take the held frame's place (the held
// frame becomes the newest matching one), and a skipped priority update
// is no barrier either.
func TestSinkFilter(t *testing.T) {
	const ch = "odds:a"
	main := matchFunc(func(tags map[string]string) bool { return tags["group"] == "main" })
	// Each step: offset, then m (matches), s (skipped), ! (priority, skipped), x (a removal, skipped tags).
	for _, tt := range []struct {
		name   string
		behind bool
		steps  string
		want   string
	}{
		{"keeping up", false, "1m 2s 3m 4s 5x 6m", "1 3 5 6"},
		{"behind", true, "1m 2m 3s 4s", "2"},
		{"behind, skipped priority", true, "1m 2m 3! 4m 5s", "4"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, c, sub := newQueueConn(t, ch, FormPlain)
			sub.SetFilter(main)
			if tt.behind {
				c.scheduled, c.scheduledAt = true, int64(time.Hour-30*time.Millisecond)
			}
			for _, step := range strings.Fields(tt.steps) {
				var off int64
				var kind byte
				fmt.Sscanf(step, "%d%c", &off, &kind)
				p := &fanout.Publication{Channel: ch, Data: fmt.Appendf(nil, `{"v":%d}`, off), Pos: fanout.Position{Offset: off},
					Tags: map[string]string{"group": "main"}, Priority: kind == '!', Removed: kind == 'x'}
				if kind != 'm' {
					p.Tags = map[string]string{"group": "side"}
				}
				env.hub.Publish(p)
			}
			c.mu.Lock()
			c.settleAllLocked()
			c.mu.Unlock()
			if got := queueString(c); got != tt.want {
				t.Fatalf("queue %q, want %q", got, tt.want)
			}
			if last := c.queue[len(c.queue)-1].Pub; sub.Sent() != last {
				t.Errorf("sent is offset %d, the client gets %d last", sub.Sent().Pos.Offset, last.Pos.Offset)
			}
		})
	}
}
