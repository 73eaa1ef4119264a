package bets

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay/protocol"
)

// reportQuantiles reports the median, p90 and max of ds in µs.
func reportQuantiles(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(ds[len(ds)/2]), name+"-median-µs")
	b.ReportMetric(us(ds[len(ds)*9/10]), name+"-p90-µs")
	b.ReportMetric(us(ds[len(ds)-1]), name+"-max-µs")
}

// warmUp places a bet on a and its retry on d, so that both producers and
// d's reader are connected before the timer starts.
func warmUp(b *testing.B, a, d *Desk) {
	bet := testBet(b, "warm-up", openMarket, time.Now())
	if _, e := placeBet(b, a, bet); e != nil {
		b.Fatal(e)
	}
	bet.ConnectedAt = time.Now()
	if _, e := placeBet(b, d, bet); e != nil {
		b.Fatal(e)
	}
	b.ResetTimer()
}

// BenchmarkDedupVisibility measures the race window of a retry across
// nodes, on kfake over loopback: from node A's produce acknowledgement (its
// callback) to node B's retry memory holding the bet. A negative figure:
// B read the record before A's producer heard the ack.
//
//	go test ./relay/bets -run '^$' -bench DedupVisibility -benchtime 300x
func BenchmarkDedupVisibility(b *testing.B) {
	_, a, d := twoNodes(b)
	knows := func(betID string) bool {
		k := d.keyOf("u", betID)
		d.mu.Lock()
		defer d.mu.Unlock()
		_, ok := d.answers[k]
		return ok || d.pending[k] != nil
	}
	warmUp(b, a, d)
	ds := make([]time.Duration, 0, b.N)
	for i := range b.N {
		bet := testBet(b, fmt.Sprint("v", i), openMarket, time.Now())
		acked := make(chan time.Time, 1)
		var seen time.Time
		a.Place(bet, func(_ Result, e *protocol.Error) {
			if e != nil {
				b.Error(e)
			}
			acked <- time.Now()
		})
		for !knows(bet.BetID) {
			time.Sleep(20 * time.Microsecond)
		}
		seen = time.Now()
		ds = append(ds, seen.Sub(<-acked))
	}
	reportQuantiles(b, "ack-to-known", ds)
}

// BenchmarkDedupSyncWait measures what closing the race costs: the answer
// time of a new bet on a fresh connection (it waits for a sync round: one
// ListOffsets, then the reader reaching those offsets) against one that
// does not wait.
//
//	go test ./relay/bets -run '^$' -bench DedupSyncWait -benchtime 300x
func BenchmarkDedupSyncWait(b *testing.B) {
	kafka := newTestKafka(b, 3)
	d := newDeskOn(b, testDedupConfig(), kafka.ListenAddrs(), "b")
	runDesk(b, d)
	warmUp(b, d, d)
	var waited, direct []time.Duration
	for i := range b.N {
		for _, fresh := range []bool{true, false} {
			bet := testBet(b, fmt.Sprintf("s%d-%v", i, fresh), openMarket, time.Now())
			if fresh {
				bet.ConnectedAt = time.Now()
			}
			start := time.Now()
			if _, e := placeBet(b, d, bet); e != nil {
				b.Fatal(e)
			}
			if fresh {
				waited = append(waited, time.Since(start))
			} else {
				direct = append(direct, time.Since(start))
			}
		}
	}
	reportQuantiles(b, "fresh-connection", waited)
	reportQuantiles(b, "no-wait", direct)
}
