package bench

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestReadSteal(t *testing.T) {
	for _, tt := range []struct {
		name, stat string
		want       []int64
	}{
		{"two cpus", "cpu  10 0 5 100 0 0 0 7 0 0\ncpu0 5 0 2 50 0 0 0 3 0 0\ncpu1 5 0 3 50 0 0 0 4 0 0\nintr 1 2\nctxt 9\n", []int64{3, 4}},
		{"no steal field (old kernel)", "cpu 1 2 3 4\ncpu0 1 2 3 4\n", []int64{0}},
		{"not cpu lines", "cpufreq 1\nintr 5\n", nil},
	} {
		got := readSteal(strings.NewReader(tt.stat))
		if len(got) != len(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
			}
		}
	}
}

// TestSampleSteal: on Linux the sampler reads this machine's CPUs.
func TestSampleSteal(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/stat is Linux's")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	s := sampleSteal(ctx, 50*time.Millisecond)
	if s == nil || len(s.PerCPU) < 1 || len(s.PerCPU) < runtime.NumCPU() || s.Total() < 0 {
		t.Fatalf("steal %+v on %d CPUs", s, runtime.NumCPU())
	}
	// startSteal, as the runs use it: stop ends the sampler, and a second
	// call (a deferred one) gets the same figures.
	stop := startSteal(context.Background())
	if s := stop(); s == nil || len(s.PerCPU) < runtime.NumCPU() || stop() != s {
		t.Fatalf("startSteal: %+v", s)
	}
}

// stealRun is a run with one delivery in each of the seconds 10 to 14
// (of 10 to 14 ms) and the given steal.
func stealRun(series map[int64]float64, perCPU float64) *Report {
	rep := &Report{P99: time.Millisecond}
	rep.Clients.Series = map[int64]*Histogram{}
	for s := int64(10); s <= 14; s++ {
		h := &Histogram{}
		h.Record(time.Duration(s) * time.Millisecond)
		rep.Clients.Series[s] = h
	}
	if series != nil {
		rep.Steal = &Steal{PerCPU: []float64{perCPU, perCPU}, Series: series}
	}
	return rep
}

// TestQuietLatency: only seconds without steal, in them or the seconds
// either side, count; the medians table shows steal and the steal-free
// tail, also for a cell with a run that had no steal-free second.
func TestQuietLatency(t *testing.T) {
	if _, _, ok := stealRun(nil, 0).QuietLatency(); ok {
		t.Fatal("steal-free latency without steal figures")
	}
	rep := stealRun(map[int64]float64{11: 20}, 1.75)
	h, n, ok := rep.QuietLatency()
	if !ok || n != 2 || h.N != 2 || h.Max != 14*time.Millisecond { // 13 and 14; 10 to 12 are next to steal
		t.Fatalf("steal-free: %d seconds, %d deliveries, max %v", n, h.N, h.Max)
	}
	md := MediansMarkdown([]ReportRun{{Title: "out/tail-10-1.json", Rep: rep}})
	if !strings.Contains(md, "| 3.5 | 2: 14.0 / 14.0 |") {
		t.Fatalf("medians:\n%s", md)
	}
	noisy := stealRun(map[int64]float64{9: 30, 10: 30, 11: 30, 12: 30, 13: 30, 14: 30, 15: 30}, 30)
	md = MediansMarkdown([]ReportRun{{Title: "out/tail-10-1.json", Rep: rep}, {Title: "out/tail-10-2.json", Rep: noisy}})
	if !strings.Contains(md, "| 31.8 (3.5–60.0) | 1 (0–2): 14.0 / 14.0 |") {
		t.Fatalf("medians with a run that had no steal-free second:\n%s", md)
	}
	if md := MediansMarkdown([]ReportRun{{Title: "x.json", Rep: noisy}}); !strings.Contains(md, "| 60.0 | 0: — / — |") {
		t.Fatalf("medians of a run without steal-free seconds:\n%s", md)
	}
	rep.Steal.Gaps = 1
	if _, _, ok := rep.QuietLatency(); ok {
		t.Fatal("steal-free latency from a sampler that lost samples")
	}
	if md := MediansMarkdown([]ReportRun{{Title: "x.json", Rep: stealRun(nil, 0)}}); !strings.Contains(md, "| — | — |") {
		t.Fatalf("medians without steal:\n%s", md)
	}
}
