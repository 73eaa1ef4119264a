package bets

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRetryMemoryHoldsNoPointers: the answers map and its order hold no
// pointers, so that the garbage collector never scans a million
// remembered bets. A field that brings one back fails here.
func TestRetryMemoryHoldsNoPointers(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[memoKey](), reflect.TypeFor[answer](), reflect.TypeFor[remembered]()} {
		if p := pointerIn(typ); p != "" {
			t.Errorf("%v holds a pointer: %s", typ, p)
		}
	}
}

// pointerIn names a field or element of typ that is or holds a pointer,
// or "" if none does.
func pointerIn(typ reflect.Type) string {
	switch typ.Kind() {
	case reflect.Array:
		return pointerIn(typ.Elem())
	case reflect.Struct:
		for i := range typ.NumField() {
			if p := pointerIn(typ.Field(i).Type); p != "" {
				return typ.Field(i).Name + ": " + p
			}
		}
		return ""
	case reflect.Pointer, reflect.UnsafePointer, reflect.String, reflect.Slice, reflect.Map,
		reflect.Chan, reflect.Func, reflect.Interface:
		return typ.String()
	default:
		return ""
	}
}

// BenchmarkRetryMemory fills a desk's retry memory with a million answers
// read back from the topic (learn, as the dedup reader does: what a node
// holds after 100 s of 10,000 bets/s) and reports the heap per answer;
// then ns/op is one full garbage collection with them live, which on a
// relay with one core is time taken from the bets and the fan-out.
//
//	go test ./relay/bets -run '^$' -bench RetryMemory -benchtime 10x
func BenchmarkRetryMemory(b *testing.B) {
	const n = 1_000_000
	cfg := DefaultConfig()
	d, err := NewDesk(cfg, []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, "n1", nopHooks{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	sum := sha256.Sum256([]byte("a bet"))
	hexSum := []byte(hex.EncodeToString(sum[:]))
	now := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		d.learn(&kgo.Record{Topic: cfg.Topic, Partition: int32(i % 12), Offset: int64(i), Timestamp: now, Headers: []kgo.RecordHeader{
			{Key: "bet-id", Value: fmt.Appendf(nil, "bet-%d", i)},
			{Key: "user", Value: fmt.Appendf(nil, "user-%d", i%40_000)},
			{Key: "bet-sha256", Value: hexSum},
		}}, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := d.Remembered(); got != n {
		b.Fatalf("remembered %d of %d", got, n)
	}
	for b.Loop() {
		runtime.GC()
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/answer")
	runtime.KeepAlive(d)
}
