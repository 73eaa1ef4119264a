package bench

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Steal is the CPU time the hypervisor gave to other guests while this
// machine's CPUs had work ("steal" in /proc/stat). On a virtual machine
// the host can take a vCPU away for milliseconds at a time; whatever runs
// on it then (the relay, the broker, the clients) waits, and every
// publication in flight ages by that much. A run reports it so that its
// tail can be read against it: on the machine issue 20 was measured on,
// runs with 10–35 ms of steal per second had twice the p99 of runs with
// under 1 ms (docs/performance.md).
type Steal struct {
	// PerCPU is each CPU's steal over the sampled time, in ms per second.
	PerCPU []float64 `json:"per_cpu_ms_per_s"`
	// Series is, per unix second, the steal of all CPUs together, in ms,
	// each sample's credited to the second its interval began in.
	Series map[int64]float64 `json:"series"`
	// Gaps counts samples lost (/proc/stat unreadable, or a CPU came or
	// went): with any, steal-free seconds cannot be told.
	Gaps int `json:"gaps,omitempty"`
}

// stealTick is /proc/stat's unit, USER_HZ: 100 on every Linux the
// relay is built for.
const stealTick = 10 * time.Millisecond

// readSteal parses /proc/stat's per-CPU lines ("cpuN user nice system
// idle iowait irq softirq steal ..."): each CPU's steal, in ticks. A
// kernel without the field reports none.
func readSteal(r io.Reader) []int64 {
	var out []int64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("cpu")) || len(line) < 4 || line[3] < '0' || line[3] > '9' {
			continue
		}
		f := strings.Fields(string(line))
		var v int64
		if len(f) > 8 {
			v, _ = strconv.ParseInt(f[8], 10, 64)
		}
		out = append(out, v)
	}
	return out
}

// sampleSteal reads /proc/stat every interval until ctx ends and returns
// the steal it saw; nil where /proc/stat cannot be read (not Linux).
func sampleSteal(ctx context.Context, interval time.Duration) *Steal {
	read := func() []int64 {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return nil
		}
		return readSteal(bytes.NewReader(b))
	}
	first := read()
	if first == nil {
		return nil
	}
	start := time.Now()
	s := &Steal{Series: map[int64]float64{}}
	last, lastAt := first, start
	t := time.NewTicker(interval)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		now, at := read(), time.Now()
		if now == nil || len(now) != len(last) {
			s.Gaps++ // unreadable, or a CPU went on- or offline
			if now != nil {
				last, lastAt = now, at
			}
			continue
		}
		var d int64
		for i := range now {
			d += now[i] - last[i]
		}
		if d > 0 {
			s.Series[lastAt.Unix()] += float64(time.Duration(d)*stealTick) / float64(time.Millisecond)
		}
		last, lastAt = now, at
	}
	if el := time.Since(start).Seconds(); el > 0 && len(last) == len(first) {
		for i := range last {
			s.PerCPU = append(s.PerCPU, float64(time.Duration(last[i]-first[i])*stealTick)/float64(time.Millisecond)/el)
		}
	}
	return s
}

// startSteal samples steal every 100 ms in the background until the
// returned stop is called (or ctx ends); stop returns what was seen, nil
// where /proc/stat cannot be read, the same to every call (defer one for
// early returns).
func startSteal(ctx context.Context) (stop func() *Steal) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan *Steal, 1)
	go func() { done <- sampleSteal(ctx, 100*time.Millisecond) }()
	return sync.OnceValue(func() *Steal {
		cancel()
		return <-done
	})
}

// Total is the steal of all CPUs together, in ms per second.
func (s *Steal) Total() float64 {
	if s == nil {
		return 0
	}
	var t float64
	for _, v := range s.PerCPU {
		t += v
	}
	return t
}

// quiet says whether no CPU's steal counter moved in second sec or the
// seconds either side: what a client reads in sec was written partly in
// the one before, and a sample's steal is credited to the second its
// interval began in, which may be the one before its own.
func (s *Steal) quiet(sec int64) bool {
	return s.Series[sec-1] == 0 && s.Series[sec] == 0 && s.Series[sec+1] == 0
}

// QuietLatency is the client-side latency of the seconds in which no CPU
// lost time to the hypervisor, nor in the seconds either side: the
// relay's tail without the host's. ok is false without steal figures, or
// with samples lost.
func (r *Report) QuietLatency() (h *Histogram, seconds int, ok bool) {
	if r.Steal == nil || r.Steal.Gaps > 0 {
		return nil, 0, false
	}
	h = &Histogram{}
	for sec, sh := range r.Clients.Series {
		if r.Steal.quiet(sec) {
			h.Merge(sh)
			seconds++
		}
	}
	return h, seconds, true
}
