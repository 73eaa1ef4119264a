package bench

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// promHistogram is an unlabelled Prometheus histogram as /metrics shows it:
// cumulative counts by upper bound, +Inf last.
type promHistogram struct {
	le    []float64
	count []float64
}

// scrapeHistogram reads histogram name from the relay's /metrics.
func scrapeHistogram(base, name string) (h promHistogram, err error) {
	err = readMetrics(base, func(sc *bufio.Scanner) error {
		h, err = parseHistogram(sc, name)
		return err
	})
	return h, err
}

// histogramsSince reads the named histograms from the relay now; the
// function it returns reads them again and gives, in the same order, what
// was observed in between: empty for one the relay did not show both
// times (its quantiles are 0).
func histogramsSince(base string, names ...string) func() []promHistogram {
	before := make([]promHistogram, len(names))
	errs := make([]error, len(names))
	for i, name := range names {
		before[i], errs[i] = scrapeHistogram(base, name)
	}
	return func() []promHistogram {
		d := make([]promHistogram, len(names))
		for i, name := range names {
			if after, err := scrapeHistogram(base, name); err == nil && errs[i] == nil && after.grew(before[i]) {
				d[i] = after.since(before[i])
			}
		}
		return d
	}
}

// readMetrics hands the relay's /metrics text to read, line by line.
func readMetrics(base string, read func(*bufio.Scanner) error) error {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return read(bufio.NewScanner(resp.Body))
}

// parseHistogram reads name's _bucket lines from a text exposition.
func parseHistogram(sc *bufio.Scanner, name string) (promHistogram, error) {
	var h promHistogram
	prefix := name + `_bucket{le="`
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		le, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			return promHistogram{}, fmt.Errorf("%s: malformed bucket line %q", name, sc.Text())
		}
		bound, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
		n, err2 := strconv.ParseFloat(val, 64)
		if err1 != nil || err2 != nil {
			return promHistogram{}, fmt.Errorf("%s: malformed bucket line %q", name, sc.Text())
		}
		h.le, h.count = append(h.le, bound), append(h.count, n)
	}
	if err := sc.Err(); err != nil {
		return promHistogram{}, err
	}
	if len(h.le) == 0 || !math.IsInf(h.le[len(h.le)-1], 1) {
		return promHistogram{}, fmt.Errorf("histogram %s not found", name)
	}
	return h, nil
}

// grew reports whether h can be a later reading of the same histogram as
// before: the same buckets, no count lower (a relay that restarted in
// between does not give a difference).
func (h promHistogram) grew(before promHistogram) bool {
	if !slices.Equal(h.le, before.le) {
		return false
	}
	for i, n := range h.count {
		if n < before.count[i] {
			return false
		}
	}
	return true
}

// since is h minus an earlier reading of the same histogram: what was
// observed in between.
func (h promHistogram) since(before promHistogram) promHistogram {
	d := promHistogram{le: h.le, count: make([]float64, len(h.count))}
	for i := range h.count {
		d.count[i] = h.count[i]
		if len(before.count) == len(h.count) {
			d.count[i] -= before.count[i]
		}
	}
	return d
}

// quantile estimates quantile q as Prometheus's histogram_quantile does:
// linear within the bucket it falls in; in the +Inf bucket, the largest
// finite bound. 0 if nothing was observed.
func (h promHistogram) quantile(q float64) time.Duration {
	if len(h.count) == 0 || h.count[len(h.count)-1] == 0 {
		return 0
	}
	rank := q * h.count[len(h.count)-1]
	lower, below := 0.0, 0.0
	for i, c := range h.count {
		if c >= rank {
			if math.IsInf(h.le[i], 1) {
				return seconds(lower)
			}
			frac := 1.0
			if c > below {
				frac = (rank - below) / (c - below)
			}
			return seconds(lower + (h.le[i]-lower)*frac)
		}
		lower, below = h.le[i], c
	}
	return seconds(lower)
}

// maxBound is the upper bound of the highest bucket that holds an
// observation (the largest finite bound if that is +Inf); 0 if none.
func (h promHistogram) maxBound() time.Duration {
	for i := len(h.count) - 1; i >= 0; i-- {
		below := 0.0
		if i > 0 {
			below = h.count[i-1]
		}
		if h.count[i] > below {
			if math.IsInf(h.le[i], 1) {
				return seconds(h.le[len(h.le)-2])
			}
			return seconds(h.le[i])
		}
	}
	return 0
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond / 10)
}

// plus is h and o together: the same histogram of two relays (same
// buckets), or h alone when o is empty and the reverse.
func (h promHistogram) plus(o promHistogram) promHistogram {
	if len(h.count) == 0 {
		return o
	}
	if len(o.count) != len(h.count) {
		return h
	}
	s := promHistogram{le: h.le, count: make([]float64, len(h.count))}
	for i := range h.count {
		s.count[i] = h.count[i] + o.count[i]
	}
	return s
}
