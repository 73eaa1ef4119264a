package bench

import (
	"bufio"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHistogramQuantile(t *testing.T) {
	exposition := func(counts string) string {
		c := strings.Fields(counts)
		return "# HELP x_seconds help\n# TYPE x_seconds histogram\n" +
			`x_seconds_bucket{le="0.01"} ` + c[0] + "\n" +
			`x_seconds_bucket{le="0.1"} ` + c[1] + "\n" +
			`x_seconds_bucket{le="1"} ` + c[2] + "\n" +
			`x_seconds_bucket{le="+Inf"} ` + c[3] + "\n" +
			"x_seconds_sum 1\nx_seconds_count " + c[3] + "\n"
	}
	parse := func(s string) promHistogram {
		h, err := parseHistogram(bufio.NewScanner(strings.NewReader(s)), "x_seconds")
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := parse(exposition("10 10 10 10"))
	tests := []struct {
		name   string
		counts string
		q      float64
		want   time.Duration
		max    time.Duration // maxBound
	}{
		{"nothing observed", "10 10 10 10", 0.99, 0, 0},
		{"all in the first bucket", "110 110 110 110", 0.5, 5 * time.Millisecond, 10 * time.Millisecond},
		{"interpolated in the second", "10 110 110 110", 0.5, 55 * time.Millisecond, 100 * time.Millisecond},
		{"p99 in the third", "10 60 110 110", 0.99, 982 * time.Millisecond, time.Second},
		{"past the last bound", "10 10 10 110", 0.5, time.Second, time.Second},
		{"a gap below the highest", "20 20 21 21", 0.5, 5500 * time.Microsecond, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := parse(exposition(tt.counts)).since(before)
			if got := h.quantile(tt.q); got != tt.want {
				t.Fatalf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
			if got := h.maxBound(); got != tt.max {
				t.Fatalf("maxBound() = %v, want %v", got, tt.max)
			}
		})
	}
	// grew: a later reading of the same relay, or not (restarted: a count
	// fell; other buckets).
	for _, tt := range []struct {
		after string
		grew  bool
	}{{"10 10 10 10", true}, {"10 60 110 110", true}, {"0 1 5 5", false}} {
		if got := parse(exposition(tt.after)).grew(before); got != tt.grew {
			t.Errorf("grew(%q over %q) = %v, want %v", tt.after, "10 10 10 10", got, tt.grew)
		}
	}
	if other := parse(strings.Replace(exposition("10 10 10 10"), `le="0.1"`, `le="0.2"`, 1)); other.grew(before) {
		t.Error("grew across a bucket layout change")
	}
	for _, bad := range []string{"", "x_seconds_bucket{le=\"0.1\"} 1\n", "x_seconds_bucket{le=\"zero\"} 1\nx_seconds_bucket{le=\"+Inf\"} 1\n"} {
		if _, err := parseHistogram(bufio.NewScanner(strings.NewReader(bad)), "x_seconds"); err == nil {
			t.Errorf("parseHistogram(%q): no error", bad)
		}
	}
}

// TestHistogramPlus: two relays' histograms add bucket by bucket; an
// empty one adds nothing.
func TestHistogramPlus(t *testing.T) {
	a := promHistogram{le: []float64{0.01, 0.1, math.Inf(1)}, count: []float64{1, 3, 4}}
	b := promHistogram{le: a.le, count: []float64{5, 5, 6}}
	if got := a.plus(b); !slices.Equal(got.count, []float64{6, 8, 10}) {
		t.Fatalf("a+b = %v", got.count)
	}
	if got := (promHistogram{}).plus(a).plus(promHistogram{}); !slices.Equal(got.count, a.count) {
		t.Fatalf("0+a+0 = %v", got.count)
	}
}
