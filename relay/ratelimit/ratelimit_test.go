package ratelimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	l := New(2, 3, 2) // 2/s, bursts of 3, 2 keys
	for i, tt := range []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, true}, {"a", 0, true}, {"a", 0, true}, // the burst
		{"a", 0, false},                      // empty
		{"a", 500 * time.Millisecond, true},  // one token back
		{"a", 500 * time.Millisecond, false}, // and used
		{"b", 0, true},                       // keys are independent
		{"c", 0, true},                       // a third key: untracked, let through
		{"c", 0, true},
		{"a", 10 * time.Second, true}, // refilled
	} {
		if got := l.Allow(tt.key, t0.Add(tt.at)); got != tt.want {
			t.Fatalf("step %d: Allow(%q, +%v) = %v, want %v", i, tt.key, tt.at, got, tt.want)
		}
	}
	if l.Untracked() != 2 {
		t.Fatalf("untracked %d, want 2", l.Untracked())
	}
	l.Sweep(t0.Add(time.Minute))
	if l.Len() != 0 {
		t.Fatalf("%d buckets after a sweep of refilled ones", l.Len())
	}
}
