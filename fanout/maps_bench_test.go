package fanout

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
)

type nopSub struct{}

func (nopSub) Deliver(*Update) {}

// marketData is an odds-like value of about 120 bytes.
const marketData = `{"market":"1x2","status":"open","selections":[{"id":"home","odds":2.10},{"id":"draw","odds":3.40},{"id":"away","odds":3.05}]}`

func filledMap(b testing.TB, n int) *Hub {
	h := newTestHub(func(c *Config) { c.Maps = []MapRule{{Prefix: "odds:", Depth: 1}}; c.MaxMapEntries = n })
	for i := range n {
		h.Publish(entryPub("odds:f:m1:k"+strconv.Itoa(i), "e", int64(i), marketData))
	}
	return h
}

// BenchmarkMapSnapshot: one whole snapshot of an n-key map in pages of
// 100, as a subscribing client asks for it (the hub's side only: no
// encoding).
func BenchmarkMapSnapshot(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := filledMap(b, n)
			b.ReportAllocs()
			for b.Loop() {
				cursor, got := "", 0
				for {
					var page []*Publication
					h.ViewMap("odds:f:m1", func(v *MapView) { page, cursor = v.Page(cursor, 100, 1<<20) })
					got += len(page)
					if cursor == "" {
						break
					}
				}
				if got != n {
					b.Fatalf("%d entries, want %d", got, n)
				}
			}
		})
	}
}

// BenchmarkMapMemory reports the heap held per map entry beyond the
// channels' own cached values.
func BenchmarkMapMemory(b *testing.B) {
	const n = 10000
	for b.Loop() {
		plain := newTestHub(nil)
		var m0, m1, m2 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range n {
			plain.Publish(entryPub("odds:f:m1:k"+strconv.Itoa(i), "e", int64(i), marketData))
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		h := filledMap(b, n)
		runtime.GC()
		runtime.ReadMemStats(&m2)
		b.ReportMetric(float64(int64(m2.HeapAlloc-m1.HeapAlloc)-int64(m1.HeapAlloc-m0.HeapAlloc))/n, "B/entry")
		runtime.KeepAlive(plain)
		runtime.KeepAlive(h)
	}
}

// BenchmarkMapPublish: the cost of one update of a channel with one
// subscriber, as a plain channel and as the entry of a map with one map
// subscriber (the hub's side: lookup, entry, delivery; no encoding).
func BenchmarkMapPublish(b *testing.B) {
	for _, asMap := range []bool{false, true} {
		b.Run(map[bool]string{false: "channel", true: "map-entry"}[asMap], func(b *testing.B) {
			h := newTestHub(func(c *Config) {
				if asMap {
					c.Maps = []MapRule{{Prefix: "odds:", Depth: 1}}
				}
			})
			const ch = "odds:f:m1:1x2"
			if asMap {
				h.SubscribeMap("odds:f:m1", nopSub{}, func(*MapView) bool { return true })
			} else {
				h.Subscribe(ch, nopSub{}, nil)
			}
			b.ReportAllocs()
			off := int64(0)
			for b.Loop() {
				off++
				h.Publish(entryPub(ch, "e", off, marketData))
			}
		})
	}
}

// BenchmarkMapCatchUp: what changed since a position, in a 10,000-key
// map whose last 100 changes came after it (a reconnecting client).
func BenchmarkMapCatchUp(b *testing.B) {
	const n = 10000
	h := filledMap(b, n)
	for i := range 100 {
		h.Publish(entryPub("odds:f:m1:k"+strconv.Itoa(i*7), "e", int64(n+i), marketData))
	}
	b.ReportAllocs()
	for b.Loop() {
		h.ViewMap("odds:f:m1", func(v *MapView) {
			if got, ok := v.Since("e", n, 1<<20); !ok || len(got) != 100 {
				b.Fatalf("%d changes, want 100", len(got))
			}
		})
	}
}
