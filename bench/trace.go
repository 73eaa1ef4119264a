package bench

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// A relay's execution trace (`curl 127.0.0.1:8000/debug/pprof/trace?seconds=30`
// with debug on) read for the question of issue 20: when a subscriber
// waits long, was the relay's core busy with the fan-out, or with
// something else, or idle? edgebench trace prints:
//
//   - the fan-out's busy periods: spans of ingest and writer goroutines
//     running (or in a system call) merged across gaps shorter than
//     TraceConfig.Gap. The fan-out of one Kafka batch is one busy period
//     from ingest handing the batch to the hub to the last socket write:
//     what its last subscriber waits for on this core after the fetch.
//     Busy periods without ingest (writers sending pings and replies) are
//     counted apart;
//   - what else ran during the longest busy periods, and the garbage
//     collector's mark phases.
//
// Work is classed by the functions on the stack of the goroutine doing it
// (traceClasses): a span of running by the stack it stops with, else by
// the goroutine's last known one.

// TraceConfig says how to read a trace.
type TraceConfig struct {
	Gap     time.Duration // busy spans closer than this are one busy period
	Longest int           // how many of the longest busy periods to list
}

// TraceReport is what TraceSummary found.
type TraceReport struct {
	Span      time.Duration            // from the first event to the last
	CPU       map[string]time.Duration // running or in a system call shorter than blockingCall, per class
	GCMarks   []TraceRange             // concurrent mark phases
	Busy      []TraceBusy              // busy periods with ingest, longest first
	BusyLen   Quantiles                // of the busy periods with ingest (a batch's fan-out)
	OtherBusy Quantiles                // of those without (pings, replies)
	// The network waking the Kafka client (a fetch response read):
	// how often, how often while the fan-out was busy, and the longest
	// such wait for the busy period's end.
	KafkaWakes, KafkaWakesBusy int
	KafkaWakeWait              time.Duration
}

// TraceRange is a span of time from the start of the trace.
type TraceRange struct{ From, To time.Duration }

// TraceBusy is one busy period of the fan-out.
type TraceBusy struct {
	TraceRange
	Fanout time.Duration            // ingest and writer time in it
	Ingest bool                     // an ingest run is in it
	Others map[string]time.Duration // other classes' time in it (not the poller's)
}

// Quantiles are p50, p90, p99 and max of a set of durations, and its size.
type Quantiles struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// traceClasses name goroutines by a function on their stack; first match.
var traceClasses = []struct{ class, fn string }{
	{"gc", "runtime.gcBgMarkWorker"},
	{"writer", "(*writer).loop"},
	{"poller", "(*poller).run"},
	{"ingest", "(*Ingester)."},
	{"heartbeat", "(*Server).heartbeat"},
	{"kafka", "github.com/twmb/franz-go/"},
	{"http", "net/http."},
}

func traceClass(st trace.Stack) string {
	var fns []string
	for f := range st.Frames() {
		fns = append(fns, f.Func)
	}
	if len(fns) == 0 {
		return ""
	}
	for _, c := range traceClasses {
		for _, fn := range fns {
			if strings.Contains(fn, c.fn) {
				return c.class
			}
		}
	}
	return "other"
}

// blockingCall: a system call this long is a wait (epoll_wait, a signal
// wait), not work: the relay's sockets are non-blocking, and a write or
// read of one takes microseconds.
const blockingCall = 10 * time.Millisecond

// TraceSummary reads a Go execution trace.
func TraceSummary(r io.Reader, cfg TraceConfig) (*TraceReport, error) {
	if cfg.Gap <= 0 {
		cfg.Gap = 2 * time.Millisecond
	}
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	type span struct {
		class    string
		from, to trace.Time
		call     bool // a system call
	}
	var (
		spans   []span
		class   = map[trace.GoID]string{}
		on      = map[trace.GoID]trace.Time{}
		inCall  = map[trace.GoID]bool{} // on[g] is the start of a system call
		t0, end trace.Time
		rep     = &TraceReport{CPU: map[string]time.Duration{}}
		markAt  trace.Time
		wakes   []time.Duration
	)
	running := func(s trace.GoState) bool { return s == trace.GoRunning || s == trace.GoSyscall }
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if t0 == 0 {
			t0 = ev.Time()
		}
		end = ev.Time()
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			g := st.Resource.Goroutine()
			from, to := st.Goroutine()
			if from == trace.GoRunning || from == trace.GoUndetermined {
				if c := traceClass(st.Stack); c != "" { // its own stack: as it stops, or as the trace begins
					class[g] = c
				}
			}
			if from == trace.GoWaiting && to == trace.GoRunnable && class[g] == "kafka" && ev.Stack() == trace.NoStack {
				wakes = append(wakes, ev.Time().Sub(t0)) // made runnable by the netpoller
			}
			if running(from) == running(to) {
				continue
			}
			if running(to) {
				on[g], inCall[g] = ev.Time(), to == trace.GoSyscall
			} else if at, ok := on[g]; ok {
				spans = append(spans, span{cmpOr(class[g], "other"), at, ev.Time(), inCall[g]})
				delete(on, g)
			}
		case trace.EventRangeBegin, trace.EventRangeEnd:
			if !strings.HasPrefix(ev.Range().Name, "GC concurrent mark") {
				continue
			}
			if ev.Kind() == trace.EventRangeBegin {
				markAt = ev.Time()
			} else if markAt != 0 {
				rep.GCMarks = append(rep.GCMarks, TraceRange{markAt.Sub(t0), ev.Time().Sub(t0)})
			}
		}
	}
	rep.Span = end.Sub(t0)
	for g, at := range on { // still running at the end
		spans = append(spans, span{cmpOr(class[g], "other"), at, end, inCall[g]})
	}
	// Work only: not the waits (long system calls, the poller's epoll_wait).
	spans = slices.DeleteFunc(spans, func(s span) bool {
		return s.call && (s.to.Sub(s.from) >= blockingCall || s.class == "poller")
	})
	slices.SortFunc(spans, func(a, b span) int { return int(a.from - b.from) })
	var busy []*TraceBusy
	for _, s := range spans {
		c := s.class
		rep.CPU[c] += s.to.Sub(s.from)
		from, to := s.from.Sub(t0), s.to.Sub(t0)
		if c != "writer" && c != "ingest" {
			continue
		}
		if n := len(busy); n > 0 && from-busy[n-1].To < cfg.Gap {
			b := busy[n-1]
			b.To = max(b.To, to)
			b.Fanout += to - from
			b.Ingest = b.Ingest || c == "ingest"
			continue
		}
		busy = append(busy, &TraceBusy{TraceRange: TraceRange{from, to}, Fanout: to - from, Ingest: c == "ingest", Others: map[string]time.Duration{}})
	}
	for _, s := range spans { // what else ran during each busy period
		c := s.class
		if c == "writer" || c == "ingest" || c == "poller" {
			continue
		}
		from, to := s.from.Sub(t0), s.to.Sub(t0)
		i := sort.Search(len(busy), func(i int) bool { return busy[i].To > from })
		for ; i < len(busy) && busy[i].From < to; i++ {
			if d := min(to, busy[i].To) - max(from, busy[i].From); d > 0 {
				busy[i].Others[c] += d
			}
		}
	}
	rep.KafkaWakes = len(wakes)
	for _, w := range wakes {
		if i := sort.Search(len(busy), func(i int) bool { return busy[i].To > w }); i < len(busy) && busy[i].From <= w {
			rep.KafkaWakesBusy++
			rep.KafkaWakeWait = max(rep.KafkaWakeWait, busy[i].To-w)
		}
	}
	var lens, others []time.Duration
	busy = slices.DeleteFunc(busy, func(b *TraceBusy) bool {
		if !b.Ingest {
			others = append(others, b.To-b.From)
		} else {
			lens = append(lens, b.To-b.From)
		}
		return !b.Ingest
	})
	rep.BusyLen, rep.OtherBusy = quantiles(lens), quantiles(others)
	slices.SortFunc(busy, func(a, b *TraceBusy) int { return int((b.To - b.From) - (a.To - a.From)) })
	if cfg.Longest > 0 && len(busy) > cfg.Longest {
		busy = busy[:cfg.Longest]
	}
	for _, b := range busy {
		rep.Busy = append(rep.Busy, *b)
	}
	return rep, nil
}

func quantiles(d []time.Duration) Quantiles {
	if len(d) == 0 {
		return Quantiles{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Quantiles{N: len(d), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: d[len(d)-1]}
}

// Markdown prints the report.
func (r *TraceReport) Markdown() string {
	var b strings.Builder
	msf := func(d time.Duration) string { return fmt.Sprintf("%.1f", ms(d)) }
	q := func(name string, x Quantiles) {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", name, x.N, msf(x.P50), msf(x.P90), msf(x.P99), msf(x.Max))
	}
	fmt.Fprintf(&b, "trace of %.1f s\n\n| ms | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n", r.Span.Seconds())
	q("fan-out of a batch: ingest start → last write", r.BusyLen)
	q("writers without ingest (pings, replies)", r.OtherBusy)
	fmt.Fprintf(&b, "\nKafka client woken by the network %d times, %d of them during a busy period (the longest wait for its end %s ms)\n",
		r.KafkaWakes, r.KafkaWakesBusy, msf(r.KafkaWakeWait))
	b.WriteString("\n| class | CPU ms (running, or in a system call under 10 ms; the poller: running, which includes its epoll_wait) |\n|---|---|\n")
	classes := make([]string, 0, len(r.CPU))
	for c := range r.CPU {
		classes = append(classes, c)
	}
	slices.Sort(classes)
	for _, c := range classes {
		fmt.Fprintf(&b, "| %s | %s |\n", c, msf(r.CPU[c]))
	}
	b.WriteString("\n| longest fan-outs: at s | ms | ingest and writers ms | others ms |\n|---|---|---|---|\n")
	for _, x := range r.Busy {
		var others []string
		for c, d := range x.Others {
			others = append(others, c+" "+msf(d))
		}
		slices.Sort(others)
		fmt.Fprintf(&b, "| %.3f | %s | %s | %s |\n", x.From.Seconds(), msf(x.To-x.From), msf(x.Fanout), strings.Join(others, ", "))
	}
	b.WriteString("\n| GC mark phase at s | ms |\n|---|---|\n")
	for _, g := range r.GCMarks {
		fmt.Fprintf(&b, "| %.3f | %s |\n", g.From.Seconds(), msf(g.To-g.From))
	}
	return b.String()
}
