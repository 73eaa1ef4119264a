package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ReportRun is one run read back from a JSON result: an `edgebench fanout
// --out` report, or one step of an `edgebench run --out` scenario.
type ReportRun struct {
	Title   string
	Verdict string // "" when the file did not record one
	Rep     *Report
}

// LoadResults reads result files; a scenario file yields one run per step.
func LoadResults(paths []string) ([]ReportRun, error) {
	var runs []ReportRun
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		b = bytes.TrimSpace(b)
		if bytes.HasPrefix(b, []byte("[")) {
			var steps []StepResult
			if err := json.Unmarshal(b, &steps); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			for _, s := range steps {
				runs = append(runs, ReportRun{Title: p + ": " + s.Step.Name, Verdict: s.Verdict, Rep: s.Report})
			}
			continue
		}
		var rep Report
		if err := json.Unmarshal(b, &rep); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		runs = append(runs, ReportRun{Title: p, Rep: &rep})
	}
	return runs, nil
}

// ReportMarkdown is one summary row per run.
func ReportMarkdown(runs []ReportRun) string {
	var b strings.Builder
	b.WriteString("| run | conns | rate/s | mode | deliveries/s | p50 | p99 | max | skipped | priority | final values | verdict |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		rep := r.Rep
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %.0f | %v | %v | %v | %.1f%% | %d/%d | %d/%d | %s |\n",
			r.Title, rep.Clients.Connected, rep.Config.Rate, rep.mode(), rep.DeliveriesPerS, rep.P50, rep.P99, rep.Max,
			rep.Skipped*100, rep.PriorityRead, rep.PriorityExpected, rep.FinalCorrect, rep.FinalExpected, r.Verdict)
	}
	return b.String()
}

// MediansMarkdown is one row per group of runs of the same cell: runs
// whose titles differ only in a trailing "-N" run number before ".json"
// (tail-10-1.json, tail-10-2.json ...). Each figure is the median over the
// group's runs, with its range; groups keep the order they first appear in.
func MediansMarkdown(runs []ReportRun) string {
	var order []string
	groups := map[string][]*Report{}
	for _, r := range runs {
		g := runGroup(r.Title)
		if groups[g] == nil {
			order = append(order, g)
		}
		groups[g] = append(groups[g], r.Rep)
	}
	var b strings.Builder
	b.WriteString("| cell | runs | p50 | p99 | p99.9 | max | relay CPU s | relay B/conn idle | relay age p99 / max ≤ | ingest age p99 / max ≤ | steal ms/s | steal-free s: p99 / max |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, g := range order {
		reps := groups[g]
		dur := func(f func(*Report) time.Duration) string {
			v := make([]float64, len(reps))
			for i, r := range reps {
				v[i] = ms(f(r))
			}
			return medianCell(v, "%.1f")
		}
		num := func(f func(*Report) float64, format string) string {
			v := make([]float64, len(reps))
			for i, r := range reps {
				v[i] = f(r)
			}
			return medianCell(v, format)
		}
		// Steal if every run has it; the steal-free tail over the runs
		// that had steal-free seconds (a run with none counts 0 seconds).
		steal, quiet := "—", "—"
		var qs, qp99, qmax []float64
		for _, r := range reps {
			h, n, ok := r.QuietLatency()
			if !ok {
				qs = nil
				break
			}
			qs = append(qs, float64(n))
			if n > 0 {
				qp99, qmax = append(qp99, ms(h.Quantile(0.99))), append(qmax, ms(h.Max))
			}
		}
		if len(qs) == len(reps) {
			steal = num(func(r *Report) float64 { return r.Steal.Total() }, "%.1f")
			quiet = medianCell(qs, "%.0f") + ": — / —"
			if len(qp99) > 0 {
				quiet = medianCell(qs, "%.0f") + ": " + medianCell(qp99, "%.1f") + " / " + medianCell(qmax, "%.1f")
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s |\n", g, len(reps),
			dur(func(r *Report) time.Duration { return r.P50 }), dur(func(r *Report) time.Duration { return r.P99 }),
			dur(func(r *Report) time.Duration { return r.Clients.Latency.Quantile(0.999) }), dur(func(r *Report) time.Duration { return r.Max }),
			num(func(r *Report) float64 { return r.RelayCPUSeconds }, "%.1f"), num(func(r *Report) float64 { return r.BytesPerConn }, "%.0f"),
			dur(func(r *Report) time.Duration { return r.RelayAgeP99 }), dur(func(r *Report) time.Duration { return r.RelayAgeMax }),
			dur(func(r *Report) time.Duration { return r.IngestAgeP99 }), dur(func(r *Report) time.Duration { return r.IngestAgeMax }),
			steal, quiet)
	}
	b.WriteString("\nTimes in ms; each cell: the median of the runs (the lowest–highest in brackets when there are several). " +
		"Steal: CPU time the hypervisor took from this machine's CPUs, all together; steal-free s: the number of seconds of a run " +
		"in which its counter did not move (nor in the seconds either side), and the latency of what clients read in them.\n")
	return b.String()
}

// runGroup is a result's file name without its directory and trailing
// run number.
func runGroup(title string) string {
	base := strings.TrimSuffix(filepath.Base(title), ".json")
	if i := strings.LastIndexByte(base, '-'); i > 0 {
		if _, err := strconv.Atoi(base[i+1:]); err == nil {
			return base[:i]
		}
	}
	return base
}

// medianCell is the median of v, and its range if v has several values.
func medianCell(v []float64, format string) string {
	slices.Sort(v)
	n := len(v)
	m := v[n/2]
	if n%2 == 0 {
		m = (v[n/2-1] + v[n/2]) / 2
	}
	if n == 1 {
		return fmt.Sprintf(format, m)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", m, v[0], v[n-1])
}

// WriteHTML writes a self-contained page (inline SVG, no scripts, no
// external resources) with, per run: latency percentiles over time,
// deliveries and connections per second over time, and the latency
// distribution.
func WriteHTML(w io.Writer, runs []ReportRun) error {
	var b strings.Builder
	b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edgebench report</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1f2328}h2{font-size:1.05rem;margin:1.6rem 0 .3rem}
.meta{color:#59636e}.charts{display:flex;flex-wrap:wrap;gap:1rem}svg{background:#fff;border:1px solid #d1d9e0;border-radius:6px}
table{border-collapse:collapse}td,th{border:1px solid #d1d9e0;padding:.2rem .5rem;text-align:right}</style></head><body>
<h1>edgebench report</h1>`)
	b.WriteString(markdownTableHTML(ReportMarkdown(runs)))
	for _, r := range runs {
		rep := r.Rep
		fmt.Fprintf(&b, "<h2>%s</h2><div class=\"meta\">%d clients, %d channels, %.0f records/s of %d B for %v, %s clients; verdict: %s</div><div class=\"charts\">",
			html.EscapeString(r.Title), rep.Clients.Connected, rep.Config.Channels, rep.Config.Rate, rep.Config.Size,
			rep.Config.Duration, rep.mode(), html.EscapeString(cmpOr(r.Verdict, "–")))
		secs, t0 := seriesSeconds(rep.Clients.Series, rep.Clients.Connects)
		var xs, p50, p99, mx, dps, conns []float64
		total := 0.0
		for _, s := range secs {
			xs = append(xs, float64(s-t0))
			h := rep.Clients.Series[s]
			if h == nil {
				h = &Histogram{}
			}
			p50 = append(p50, ms(h.Quantile(0.5)))
			p99 = append(p99, ms(h.Quantile(0.99)))
			mx = append(mx, ms(h.Max))
			dps = append(dps, float64(h.N))
			total += float64(rep.Clients.Connects[s])
			conns = append(conns, total)
		}
		b.WriteString(lineChart("latency over time", "s", "ms", xs, []chartLine{{"p50", p50}, {"p99", p99}, {"max", mx}}))
		b.WriteString(lineChart("deliveries per second", "s", "/s", xs, []chartLine{{"deliveries", dps}}))
		b.WriteString(lineChart("clients connected", "s", "", xs, []chartLine{{"connected", conns}}))
		var qs, lat []float64
		for _, q := range []float64{0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1} {
			qs = append(qs, q*100)
			v := rep.Clients.Latency.Quantile(q)
			if q == 1 {
				v = rep.Clients.Latency.Max
			}
			lat = append(lat, ms(v))
		}
		b.WriteString(lineChart("latency distribution (whole run)", "%", "ms", qs, []chartLine{{"latency", lat}}))
		b.WriteString("</div>")
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// seriesSeconds is every second with data, sorted, and the first.
func seriesSeconds(series map[int64]*Histogram, connects map[int64]int) ([]int64, int64) {
	var secs []int64
	seen := map[int64]bool{}
	for s := range series {
		seen[s] = true
	}
	for s := range connects {
		seen[s] = true
	}
	for s := range seen {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	if len(secs) == 0 {
		return nil, 0
	}
	// Fill the gaps so a second with nothing shows as zero.
	full := []int64{}
	for s := secs[0]; s <= secs[len(secs)-1]; s++ {
		full = append(full, s)
	}
	return full, secs[0]
}

type chartLine struct {
	Name string
	Ys   []float64
}

var chartColors = []string{"#0969da", "#cf222e", "#8250df", "#1a7f37"}

// lineChart draws lines over shared xs as an SVG.
func lineChart(title, xUnit, yUnit string, xs []float64, lines []chartLine) string {
	const w, h, left, right, top, bottom = 420.0, 220.0, 52.0, 12.0, 26.0, 30.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-size="11">`, w, h, w, h)
	fmt.Fprintf(&b, `<text x="%.0f" y="16" font-weight="600">%s</text>`, left, html.EscapeString(title))
	if len(xs) == 0 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#59636e">no data</text></svg>`, left, h/2)
		return b.String()
	}
	x0, x1 := xs[0], xs[len(xs)-1]
	y1 := 0.0
	for _, l := range lines {
		for _, y := range l.Ys {
			y1 = math.Max(y1, y)
		}
	}
	if x1 == x0 {
		x1 = x0 + 1
	}
	if y1 == 0 {
		y1 = 1
	}
	px := func(x float64) float64 { return left + (x-x0)/(x1-x0)*(w-left-right) }
	py := func(y float64) float64 { return h - bottom - y/y1*(h-top-bottom) }
	for i := 0; i <= 4; i++ { // y grid and labels
		y := y1 * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#eaeef2"/><text x="%.1f" y="%.1f" text-anchor="end" fill="#59636e">%s</text>`,
			left, w-right, py(y), py(y), left-4, py(y)+4, tick(y)+html.EscapeString(yUnit))
	}
	for i := 0; i <= 4; i++ { // x labels
		x := x0 + (x1-x0)*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#59636e">%s%s</text>`, px(x), h-bottom+14, tick(x), html.EscapeString(xUnit))
	}
	for i, l := range lines {
		color := chartColors[i%len(chartColors)]
		var pts []string
		for j, y := range l.Ys {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[j]), py(y)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.1f" y="16" fill="%s">%s</text>`, w-right-60*float64(len(lines)-i), color, html.EscapeString(l.Name))
	}
	b.WriteString("</svg>")
	return b.String()
}

func tick(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 10 || v == 0:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

// markdownTableHTML turns a Markdown table into an HTML one.
func markdownTableHTML(md string) string {
	var b strings.Builder
	b.WriteString("<table>")
	for i, line := range strings.Split(strings.TrimSpace(md), "\n") {
		if i == 1 {
			continue // the |---| row
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		tag := "td"
		if i == 0 {
			tag = "th"
		}
		b.WriteString("<tr>")
		for _, c := range cells {
			fmt.Fprintf(&b, "<%s>%s</%s>", tag, html.EscapeString(strings.TrimSpace(c)), tag)
		}
		b.WriteString("</tr>")
	}
	b.WriteString("</table>")
	return b.String()
}

// TimelineMarkdown is, per run, a table of every second of the feed:
// deliveries, then p50, p99 and max latency of what clients read in that
// second, and the CPU time the hypervisor took in it (steal; seconds
// counted from the first with data).
func TimelineMarkdown(runs []ReportRun) string {
	var b strings.Builder
	for _, r := range runs {
		fmt.Fprintf(&b, "\n%s\n\n| s | deliveries | p50 ms | p99 ms | max ms | steal ms |\n|---|---|---|---|---|---|\n", r.Title)
		secs, t0 := seriesSeconds(r.Rep.Clients.Series, nil)
		for _, s := range secs {
			h := r.Rep.Clients.Series[s]
			if h == nil {
				h = &Histogram{}
			}
			steal := "—"
			if r.Rep.Steal != nil {
				steal = strconv.FormatFloat(r.Rep.Steal.Series[s], 'f', 0, 64)
			}
			fmt.Fprintf(&b, "| %d | %d | %.1f | %.1f | %.1f | %s |\n", s-t0, h.N, ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Max), steal)
		}
	}
	return b.String()
}
