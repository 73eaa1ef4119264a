package bench

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond) // 1µs .. 10ms uniform
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {1, 10 * time.Millisecond}}
	for _, tt := range tests {
		got := h.Quantile(tt.q)
		if got < tt.want*96/100 || got > tt.want*104/100 {
			t.Errorf("q%.2f = %v, want %v ±4%%", tt.q, got, tt.want)
		}
	}
	var a, b Histogram
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	a.Merge(&b)
	if a.N != 2 || a.Max != 3*time.Millisecond || a.Quantile(1) != 3*time.Millisecond {
		t.Fatalf("merge: %+v", a)
	}
}

func TestBucketsMonotonic(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<24; us += 1 + us/50 {
		b := bucketOf(us)
		if b < prev || bucketValue(b) < us {
			t.Fatalf("us=%d bucket %d (upper %d) after %d", us, b, bucketValue(b), prev)
		}
		prev = b
	}
}
