package relay

import (
	"testing"
	"time"
)

// simulateWaves runs waves on a fake clock: n connections at t=0, more
// joining as arrive says, a tick every drainTick except those skip says
// (a stalled ticker), for a drain of period. It returns the connections
// closed by each tick's time.
func simulateWaves(n int, period time.Duration, arrive map[time.Duration]int, skip func(time.Duration) bool) (closedBy map[time.Duration]int, waves []int) {
	t0 := time.Unix(1_000_000, 0)
	pace := newWaves(t0.Add(period), drainTick)
	closedBy = map[time.Duration]int{}
	remaining, closed := n, 0
	for at := time.Duration(0); at <= period+drainTick; at += drainTick {
		remaining += arrive[at]
		if skip == nil || !skip(at) {
			w := pace.size(remaining, t0.Add(at))
			remaining -= w
			closed += w
			waves = append(waves, w)
		}
		closedBy[at] = closed
	}
	return closedBy, waves
}

// TestWavesSpreadEvenly: 1000 connections over 10 s close ten per
// wave, half of them by half time, all by the end; connections that join
// meanwhile are closed too; a stalled ticker spreads what it missed over
// the waves left instead of closing it in one burst; fewer connections
// than waves are spaced out over the whole period; period 0 closes all at
// once.
func TestWavesSpreadEvenly(t *testing.T) {
	closedBy, waves := simulateWaves(1000, 10*time.Second, nil, nil)
	if got := closedBy[5*time.Second]; got < 450 || got > 560 {
		t.Errorf("closed by half time: %d of 1000", got)
	}
	if got := closedBy[10*time.Second]; got != 1000 {
		t.Errorf("closed by the end: %d of 1000", got)
	}
	for i, w := range waves[:100] {
		if w != 10 {
			t.Fatalf("wave %d closes %d, want 10 (waves %v)", i, w, waves)
		}
	}

	closedBy, _ = simulateWaves(1000, 10*time.Second, map[time.Duration]int{3 * time.Second: 300}, nil)
	if got := closedBy[10*time.Second]; got != 1300 {
		t.Errorf("with 300 joining at 3 s, closed by the end: %d of 1300", got)
	}

	stalled := func(at time.Duration) bool { return at > 2*time.Second && at < 4*time.Second }
	closedBy, waves = simulateWaves(1000, 10*time.Second, nil, stalled)
	if got := closedBy[10*time.Second]; got != 1000 {
		t.Errorf("with a stalled ticker, closed by the end: %d of 1000", got)
	}
	for i, w := range waves {
		if w > 14 {
			t.Errorf("with a stalled ticker, wave %d closes %d (a burst; waves %v)", i, w, waves)
		}
	}

	// Fewer connections than waves: spaced out over the period.
	closedBy, _ = simulateWaves(8, 2*time.Second, nil, nil)
	if got := closedBy[time.Second]; got < 3 || got > 5 {
		t.Errorf("8 over 2 s: %d closed by 1 s", got)
	}
	if got := closedBy[1500*time.Millisecond]; got > 7 {
		t.Errorf("8 over 2 s: %d closed by 1.5 s", got)
	}
	closedBy, _ = simulateWaves(4, 2*time.Second, nil, nil)
	if first, last := closedBy[500*time.Millisecond], closedBy[1500*time.Millisecond]; first < 1 || last > 3 {
		t.Errorf("4 over 2 s: %d closed by 0.5 s, %d by 1.5 s; want the first in the first quarter, the last in the last", first, last)
	}

	if _, waves = simulateWaves(50, 0, nil, nil); waves[0] != 50 {
		t.Errorf("period 0: first wave closes %d of 50", waves[0])
	}
	if w := newWaves(time.Now().Add(time.Second), drainTick).size(0, time.Now()); w != 0 {
		t.Errorf("no connection: wave of %d", w)
	}
}
