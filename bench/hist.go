package bench

import (
	"math/bits"
	"time"
)

// Histogram counts durations in log-linear buckets: exact below 64µs, then
// 32 sub-buckets per power of two (about 3 % resolution). It is not safe
// for concurrent use; merge per-goroutine histograms instead.
type Histogram struct {
	Counts map[int]uint64 `json:"counts"` // bucket index → count
	N      uint64         `json:"n"`
	Max    time.Duration  `json:"max"`
}

const subBits = 5

func bucketOf(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := bits.Len64(us) - 1 - subBits // shift that leaves subBits+1 significant bits
	return 64 + e*(1<<subBits) + int(us>>e) - (1 << subBits)
}

// bucketValue is the upper bound of bucket i in microseconds.
func bucketValue(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	i -= 64
	e := i >> subBits
	m := uint64(i&(1<<subBits-1)) + 1<<subBits
	return (m+1)<<e - 1
}

// Record adds one duration (negative ones count as zero).
func (h *Histogram) Record(d time.Duration) {
	if h.Counts == nil {
		h.Counts = map[int]uint64{}
	}
	us := uint64(max(d, 0) / time.Microsecond)
	h.Counts[bucketOf(us)]++
	h.N++
	h.Max = max(h.Max, d)
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if h.Counts == nil {
		h.Counts = map[int]uint64{}
	}
	for b, n := range o.Counts {
		h.Counts[b] += n
	}
	h.N += o.N
	h.Max = max(h.Max, o.Max)
}

// Quantile returns the duration below which a fraction q of the values lie
// (the bucket's upper bound), or 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	target := uint64(q*float64(h.N) + 0.5)
	target = max(target, 1)
	maxB := 0
	for b := range h.Counts {
		maxB = max(maxB, b)
	}
	var seen uint64
	for b := 0; b <= maxB; b++ {
		seen += h.Counts[b]
		if seen >= target {
			return min(time.Duration(bucketValue(b))*time.Microsecond, h.Max)
		}
	}
	return h.Max
}
