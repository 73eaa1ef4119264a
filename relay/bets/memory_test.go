package bets

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/relay/protocol"
)

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

// memDesk is a Desk whose producer never reaches a broker: for tests of
// the retry memory alone.
func memDesk(t testing.TB, cfg Config) *Desk {
	t.Helper()
	d, err := NewDesk(cfg, []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, "n1", nopHooks{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// betRecord is the record of b as the reader reads it back (or as
// franz-go hands it to the produce callback): at partition/offset, its
// timestamp in Kafka's milliseconds.
func betRecord(d *Desk, b *Bet, partition int32, offset int64) *kgo.Record {
	sum := sha256.Sum256(b.Raw)
	r := d.record(b, sum)
	r.Topic, r.Partition, r.Offset = d.cfg.Topic, partition, offset
	r.Timestamp = time.UnixMilli(b.ReceivedAt.UnixMilli())
	return r
}

// lookup is what a Place of b would get from the retry memory now:
// ok=false means "not known, produce".
func lookup(d *Desk, b *Bet) (r Result, e *protocol.Error, ok bool) {
	sum := sha256.Sum256(b.Raw)
	d.mu.Lock()
	f := d.knownLocked(d.keyOf(b.User, b.BetID), b.BetID, sumOf(sum), b.ReceivedAt, func(rr Result, ee *protocol.Error) { r, e = rr, ee })
	d.mu.Unlock()
	if f == nil {
		return Result{}, nil, false
	}
	f()
	return r, e, true
}

// pendingEntry puts b in the memory as produce does, with one waiter.
func pendingEntry(d *Desk, b *Bet, done Done) *entry {
	sum := sha256.Sum256(b.Raw)
	e := &entry{key: d.keyOf(b.User, b.BetID), sum: sumOf(sum), expires: b.ReceivedAt.Add(d.cfg.DedupWindow), waiters: []Done{done}}
	d.mu.Lock()
	d.pending[e.key] = e
	d.mu.Unlock()
	return e
}

// TestStaleAckKeepsNewerAnswer: a bet still waiting for Kafka past
// its window (DedupWindow shorter than an ack, as Validate allows: 1s vs
// Timeout 5s) is retried and produced again; the retry is answered (here
// by the reader, which may read the second record before the first's ack
// callback runs); then the first bet's ack comes. The retry's answer must
// stay: a second retry of it within its window gets it, not a third record.
func TestStaleAckKeepsNewerAnswer(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DedupWindow = time.Second
	d := memDesk(t, cfg)
	t0 := time.Now()
	first := testBet(t, "s1", openMarket, t0)
	e1 := pendingEntry(d, first, func(Result, *protocol.Error) {})

	retry := testBet(t, "s1", openMarket, t0.Add(cfg.DedupWindow+100*time.Millisecond))
	if _, _, ok := lookup(d, retry); ok {
		t.Fatal("the first bet is past its window: its retry should produce")
	}
	var got Result
	e2 := pendingEntry(d, retry, func(r Result, _ *protocol.Error) { got = r })
	rec2 := betRecord(d, retry, 0, 8)
	d.learn(rec2, retry.ReceivedAt.Add(10*time.Millisecond)) // the reader reads the retry's record
	d.finish(e1, betRecord(d, first, 0, 7), nil, 0)          // the first bet's ack, late
	d.finish(e2, rec2, nil, 0)                               // the retry's ack

	again := testBet(t, "s1", openMarket, retry.ReceivedAt.Add(200*time.Millisecond))
	r, e, ok := lookup(d, again)
	if !ok || e != nil || r != got {
		t.Fatalf("second retry within the retry's window: known=%v %+v %v, want the retry's answer %+v", ok, r, e, got)
	}
}

// TestDuplicateGetsOriginalReply: a duplicate gets byte for byte the
// reply the original got, whether the answer was this node's ack, the
// reader's (answering a bet still waiting for its ack), or learnt from
// another node's record; ReceivedAt carries sub-millisecond digits and a
// zone, which Kafka's timestamp drops.
func TestDuplicateGetsOriginalReply(t *testing.T) {
	d := memDesk(t, DefaultConfig())
	at := time.Now().In(time.FixedZone("x", 5400)).Add(123456 * time.Nanosecond)
	reply := func(r Result) []byte { return r.AppendJSON(nil) }

	check := func(name string, b *Bet, orig Result) {
		t.Helper()
		r, e, ok := lookup(d, b)
		if !ok || e != nil || r != orig || !bytes.Equal(reply(r), reply(orig)) {
			t.Errorf("%s: duplicate got %v %s %v, original %s", name, ok, reply(r), e, reply(orig))
		}
	}

	// This node's bet, acknowledged by Kafka.
	b := testBet(t, "local", openMarket, at)
	var orig Result
	e := pendingEntry(d, b, func(r Result, _ *protocol.Error) { orig = r })
	d.finish(e, betRecord(d, b, 3, 41), nil, 0)
	check("local ack", testBet(t, "local", openMarket, at.Add(time.Second)), orig)

	// This node's bet, answered by the reader before the ack; the ack
	// then fails (a delivery timeout after all): the answer stands.
	b = testBet(t, "read-first", openMarket, at)
	e = pendingEntry(d, b, func(r Result, _ *protocol.Error) { orig = r })
	d.learn(betRecord(d, b, 1, 9), at.Add(time.Millisecond))
	d.finish(e, nil, kgo.ErrRecordTimeout, 0)
	check("reader first", testBet(t, "read-first", openMarket, at.Add(time.Second)), orig)

	// Another node's bet: its reply there was resultOf its record.
	b = testBet(t, "remote", openMarket, at)
	rec := betRecord(d, b, 2, 1<<40)
	d.learn(rec, at.Add(time.Millisecond))
	orig = resultOf(rec, b.BetID)
	check("remote", testBet(t, "remote", openMarket, at.Add(time.Second)), orig)

	// A reused id still gets ErrIDReused from the answers.
	other := testBet(t, "remote", openMarket, at.Add(time.Second))
	other.Raw = bytes.Replace(other.Raw, []byte(`"stake":1`), []byte(`"stake":2`), 1)
	if _, e, ok := lookup(d, other); !ok || e != ErrIDReused {
		t.Errorf("reused id: known=%v %v, want %v", ok, e, ErrIDReused)
	}
}

// TestRetryMemoryTrimOrder: past DedupMaxEntries the earliest answered go
// first; an overwritten key's old order element does not delete its newer
// answer; Sweep forgets nothing before its window ends, and everything
// after, even when answers entered order out of expiry order (the reader
// reading partitions one after another); order does not grow with
// overwrites.
func TestRetryMemoryTrimOrder(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DedupMaxEntries = 4
	d := memDesk(t, cfg)
	t0 := time.Now()
	learnAt := func(id string, at time.Time) {
		b := testBet(t, id, openMarket, at)
		d.learn(betRecord(d, b, 0, 0), t0)
	}
	known := func(id string, at time.Time) bool {
		_, _, ok := lookup(d, testBet(t, id, openMarket, at))
		return ok
	}
	// Out of expiry order: x2 (later) enters first.
	learnAt("x2", t0.Add(2*time.Second))
	learnAt("x1", t0.Add(time.Second))
	learnAt("x3", t0.Add(3*time.Second))
	d.Sweep(t0.Add(cfg.DedupWindow + 1500*time.Millisecond)) // x1 expired, x2 not
	if !known("x2", t0.Add(3*time.Second)) || !known("x3", t0.Add(3*time.Second)) {
		t.Fatal("Sweep forgot an answer within its window")
	}
	if n := d.Remembered(); n > 3 {
		t.Fatalf("remembered %d", n)
	}
	d.Sweep(t0.Add(cfg.DedupWindow + 4*time.Second))
	if n := d.Remembered(); n != 0 {
		t.Fatalf("after every window, %d remembered", n)
	}

	// An answer that expired, then is learnt again (a new bet with the
	// same id after the window): the old element must not delete it.
	learnAt("k", t0)
	later := t0.Add(cfg.DedupWindow + time.Second)
	d.learn(betRecord(d, testBet(t, "k", openMarket, later), 0, 1), later)
	d.Sweep(t0.Add(cfg.DedupWindow + 500*time.Millisecond))
	if !known("k", later) {
		t.Fatal("the old order element of k deleted its newer answer")
	}

	// The bound: the earliest answered go first.
	for i := range 5 {
		learnAt(fmt.Sprint("b", i), later)
	}
	if n := d.Remembered(); n != cfg.DedupMaxEntries {
		t.Fatalf("remembered %d, want the bound %d", n, cfg.DedupMaxEntries)
	}
	if known("k", later) || known("b0", later) || !known("b1", later) || !known("b4", later) {
		t.Fatal("the bound did not forget the earliest answered")
	}

	// Overwrites of the same few keys, window after window, with Sweep
	// between: order stays bounded.
	for w := range 2000 {
		at := later.Add(time.Duration(w+1) * (cfg.DedupWindow + time.Second))
		for i := range 3 {
			d.learn(betRecord(d, testBet(t, fmt.Sprint("r", i), openMarket, at), 0, int64(w)), at)
		}
		d.Sweep(at)
	}
	d.mu.Lock()
	live, ln, c := len(d.order)-d.head, len(d.order), cap(d.order)
	d.mu.Unlock()
	if live > 2*cfg.DedupMaxEntries+1024 || ln > 4096 {
		t.Fatalf("order holds %d elements (%d past head, cap %d) for %d answers", ln, live, c, d.Remembered())
	}
}

// TestRetryMemoryHoldsNoPointers: the keys and values of Desk.answers and
// the elements of Desk.order hold no pointers, so that the garbage
// collector never scans a million remembered bets. A field that brings one
// back (a string, a time.Time, a *answer) fails here.
func TestRetryMemoryHoldsNoPointers(t *testing.T) {
	desk := reflect.TypeFor[Desk]()
	answers, _ := desk.FieldByName("answers")
	order, _ := desk.FieldByName("order")
	for _, typ := range []reflect.Type{answers.Type.Key(), answers.Type.Elem(), order.Type.Elem()} {
		if p := pointerIn(typ); p != "" {
			t.Errorf("%v holds a pointer: %s", typ, p)
		}
	}
}

// TestLateAckKeepsLearntAnswer: a bet waiting for Kafka past its
// window; meanwhile the reader learns another node's bet of the same id
// (a retry there, after the window). The late ack must not replace that
// answer with its own, expired one.
func TestLateAckKeepsLearntAnswer(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DedupWindow = time.Second
	d := memDesk(t, cfg)
	t0 := time.Now()
	first := testBet(t, "s2", openMarket, t0)
	e1 := pendingEntry(d, first, func(Result, *protocol.Error) {})
	remote := testBet(t, "s2", openMarket, t0.Add(cfg.DedupWindow+100*time.Millisecond))
	rec := betRecord(d, remote, 1, 5)
	d.learn(rec, remote.ReceivedAt.Add(10*time.Millisecond))
	d.finish(e1, betRecord(d, first, 0, 7), nil, 0)
	r, e, ok := lookup(d, testBet(t, "s2", openMarket, remote.ReceivedAt.Add(200*time.Millisecond)))
	if want := resultOf(rec, "s2"); !ok || e != nil || r != want {
		t.Fatalf("retry within the remote bet's window: known=%v %+v %v, want %+v", ok, r, e, want)
	}
}

// BenchmarkRetryMemory fills a desk's retry memory to its bound, a
// million answers (what a node holds after 100 s of 10,000 bets/s), with
// records read back from the topic (learn, as the dedup reader does), and
// goes on past it until every insert forgets one, as a node that has taken
// bets for long does. It reports the heap per answer then; ns/op is one
// full garbage collection with them live, which on a relay with one core
// is time taken from the bets and the fan-out.
//
//	go test ./relay/bets -run '^$' -bench RetryMemory -benchtime 10x
func BenchmarkRetryMemory(b *testing.B) {
	cfg := DefaultConfig()
	n := cfg.DedupMaxEntries
	d := memDesk(b, cfg)
	sum := sha256.Sum256([]byte("a bet"))
	hexSum := []byte(hex.EncodeToString(sum[:]))
	now := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n + n/2 {
		d.learn(&kgo.Record{Topic: cfg.Topic, Partition: int32(i % 12), Offset: int64(i), Timestamp: now, Headers: []kgo.RecordHeader{
			{Key: "bet-id", Value: fmt.Appendf(nil, "bet-%d", i)},
			{Key: "user", Value: fmt.Appendf(nil, "user-%d", i%40_000)},
			{Key: "bet-sha256", Value: hexSum},
		}}, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := d.Remembered(); got != n {
		b.Fatalf("remembered %d, want the bound %d", got, n)
	}
	for b.Loop() {
		runtime.GC()
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/answer")
	runtime.KeepAlive(d)
}
