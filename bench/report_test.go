package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReport: both result formats load, and the HTML page has the four
// charts per run, drawn from the data, with nothing fetched from outside.
func TestReport(t *testing.T) {
	rep := &Report{Config: FanoutConfig{Conns: 2, Channels: 1, Rate: 10, Size: 300, Duration: 3 * time.Second}}
	rep.Clients.Connected = 2
	rep.Clients.Series = map[int64]*Histogram{}
	rep.Clients.Connects = map[int64]int{100: 2}
	for s := int64(100); s < 103; s++ {
		h := &Histogram{}
		for i := range 10 {
			h.Record(time.Duration(i+1) * time.Millisecond)
		}
		rep.Clients.Series[s] = h
		rep.Clients.Latency.Merge(h)
	}
	dir := t.TempDir()
	single, scenario := filepath.Join(dir, "fanout.json"), filepath.Join(dir, "run.json")
	js, _ := json.Marshal(rep)
	os.WriteFile(single, js, 0o644)
	js, _ = json.Marshal([]StepResult{{Step: Step{Name: "a"}, Report: rep, Verdict: "PASS"}, {Step: Step{Name: "b"}, Report: rep, Verdict: "verdict: FAIL: x"}})
	os.WriteFile(scenario, js, 0o644)

	runs, err := LoadResults([]string{single, scenario})
	if err != nil || len(runs) != 3 || runs[2].Verdict != "verdict: FAIL: x" || runs[0].Rep.Clients.Series[101].N != 10 {
		t.Fatalf("LoadResults: %d runs, %v", len(runs), err)
	}
	if md := ReportMarkdown(runs); strings.Count(md, "\n") != 5 || !strings.Contains(md, "run.json: b") {
		t.Fatalf("markdown:\n%s", md)
	}
	// The timeline: one row per second of each run, gaps filled.
	delete(runs[0].Rep.Clients.Series, 101) // runs share rep: a quiet second
	tl := TimelineMarkdown(runs[:1])
	if !strings.Contains(tl, "| 0 | 10 | 5.1 | 10.0 | 10.0 |") || !strings.Contains(tl, "| 1 | 0 | 0.0 | 0.0 | 0.0 |") || !strings.Contains(tl, "| 2 | 10 |") {
		t.Fatalf("timeline:\n%s", tl)
	}
	rep.Clients.Series[101] = rep.Clients.Series[100]
	var page strings.Builder
	if err := WriteHTML(&page, runs); err != nil {
		t.Fatal(err)
	}
	html := page.String()
	if n := strings.Count(html, "<svg"); n != 12 {
		t.Fatalf("%d charts, want 4 per run", n)
	}
	if strings.Count(html, "<polyline") != 3*(3+1+1+1) || strings.Contains(html, "no data") {
		t.Fatalf("charts without their lines:\n%s", html)
	}
	if strings.Contains(html, "<script") || strings.Contains(html, "src=") || strings.Contains(html, "href=") {
		t.Fatal("the page must be self-contained")
	}
}

// TestMediansMarkdown: runs of one cell (titles differing in the run
// number) make one row of medians with their range; other titles are
// cells of their own.
func TestMediansMarkdown(t *testing.T) {
	run := func(title string, p99 time.Duration, cpu float64) ReportRun {
		rep := &Report{P50: time.Millisecond, P99: p99, Max: 2 * p99}
		rep.RelayCPUSeconds = cpu
		return ReportRun{Title: title, Rep: rep}
	}
	md := MediansMarkdown([]ReportRun{
		run("out/tail-10-1.json", 30*time.Millisecond, 12),
		run("out/tail-25-1.json", 40*time.Millisecond, 28),
		run("out/tail-10-2.json", 20*time.Millisecond, 11),
		run("out/tail-10-3.json", 50*time.Millisecond, 13),
		run("solo.json", 5*time.Millisecond, 1),
	})
	for _, want := range []string{
		"| tail-10 | 3 | 1.0 (1.0–1.0) | 30.0 (20.0–50.0) |",
		"| 60.0 (40.0–100.0) | 12.0 (11.0–13.0) |",
		"| tail-25 | 1 | 1.0 | 40.0 |",
		"| solo | 1 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in\n%s", want, md)
		}
	}
	if strings.Index(md, "tail-10 ") > strings.Index(md, "tail-25 ") {
		t.Errorf("cells out of order:\n%s", md)
	}
}
