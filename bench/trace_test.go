package bench

import (
	"bytes"
	"runtime/trace"
	"strings"
	"sync"
	"testing"
	"time"
)

// Stand-ins named as the relay's goroutines are (traceClasses), so that a
// trace of this test has a fan-out to find.
type (
	writer   struct{ work, done chan time.Duration }
	Ingester struct{ w *writer }
)

func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

func (w *writer) loop(wg *sync.WaitGroup) {
	defer wg.Done()
	for d := range w.work {
		spin(d)
		w.done <- d
	}
}

func (in *Ingester) run(bursts []time.Duration) {
	for _, d := range bursts {
		spin(200 * time.Microsecond)
		in.w.work <- d
		<-in.w.done
		time.Sleep(30 * time.Millisecond) // the next record comes well after
	}
	close(in.w.work)
}

// TestTraceSummary: three batches, each handed by ingest to a writer that
// works on it; the summary finds three fan-outs of about their length,
// the longest first.
func TestTraceSummary(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skip("tracing unavailable:", err) // another trace is running (go test -trace)
	}
	w := &writer{work: make(chan time.Duration), done: make(chan time.Duration)}
	var wg sync.WaitGroup
	wg.Add(1)
	go w.loop(&wg)
	(&Ingester{w: w}).run([]time.Duration{3 * time.Millisecond, 12 * time.Millisecond, 6 * time.Millisecond})
	wg.Wait()
	trace.Stop()

	rep, err := TraceSummary(&buf, TraceConfig{Gap: 2 * time.Millisecond, Longest: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.BusyLen.N != 3 || len(rep.Busy) != 2 {
		t.Fatalf("%d fan-outs (%d listed), want 3 (2):\n%s", rep.BusyLen.N, len(rep.Busy), rep.Markdown())
	}
	// Lengths: at least the writer's work; more only by scheduling (a
	// loaded machine can stretch them, so no upper bound but the next's).
	if l := rep.Busy[0].To - rep.Busy[0].From; l < 12*time.Millisecond || rep.BusyLen.Max != l {
		t.Errorf("longest fan-out %v, want ≥ 12ms and the max (%v)", l, rep.BusyLen.Max)
	}
	if rep.Busy[1].To-rep.Busy[1].From < 6*time.Millisecond || !rep.Busy[0].Ingest {
		t.Errorf("second %v, want ≥ 6ms, with ingest", rep.Busy[1])
	}
	// The writer spins 21 ms of wall time; the runtime may preempt it
	// (after 10 ms) and run something else meanwhile, so its running time
	// in the trace can be a little less.
	if rep.CPU["writer"] < 15*time.Millisecond || rep.CPU["ingest"] <= 0 {
		t.Errorf("CPU %v: want writer ≥ 15ms (of its 21 ms spin), some ingest", rep.CPU)
	}
	if md := rep.Markdown(); !strings.Contains(md, "| fan-out of a batch: ingest start → last write | 3 |") {
		t.Errorf("markdown:\n%s", md)
	}
}
