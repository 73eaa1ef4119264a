package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgerelay/edgerelay/fanout"
)

// healthHooks records what the watch reports; safe for concurrent use.
type healthHooks struct {
	countHooks
	mu        sync.Mutex
	lag       map[int32]int64
	last      map[int32]time.Time
	recreated map[string]int
	errs      map[ErrorOp]int
	in        *Ingester // set by startIngest
}

func newHealthHooks() *healthHooks {
	return &healthHooks{lag: map[int32]int64{}, last: map[int32]time.Time{}, recreated: map[string]int{}, errs: map[ErrorOp]int{}}
}

func (h *healthHooks) OnPosition(_ string, partition int32, lag int64, last time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lag[partition], h.last[partition] = lag, last
}

func (h *healthHooks) OnTopicRecreated(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recreated[topic]++
}

func (h *healthHooks) OnKafkaError(op ErrorOp) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs[op]++
}

// position returns partition 0's last reported lag and record timestamp,
// and how often the topic "odds" was reported recreated.
func (h *healthHooks) position() (int64, time.Time, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	lag, ok := h.lag[0]
	if !ok {
		lag = -1
	}
	return lag, h.last[0], h.recreated["odds"]
}

// pubCollect keeps every publication; safe for Run's goroutine and the
// test's.
type pubCollect struct {
	hold sync.Mutex // held by a test: Publish blocks, as on a stuck hub
	mu   sync.Mutex
	pubs []*fanout.Publication
}

func (c *pubCollect) Publish(p *fanout.Publication) error {
	c.hold.Lock()
	c.hold.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pubs = append(c.pubs, p)
	return nil
}
func (c *pubCollect) Append(*fanout.Publication) error { return nil }
func (c *pubCollect) KeepsHistory() bool               { return false }

func (c *pubCollect) all() []*fanout.Publication {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*fanout.Publication(nil), c.pubs...)
}

func checkFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startIngest runs an Ingester of the topic "odds", with one partition,
// on a broker of its own until the test ends; before, if given, it runs
// before(kafka).
func startIngest(t *testing.T, before ...func(*kfake.Cluster)) (*kfake.Cluster, *pubCollect, *healthHooks) {
	t.Helper()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "odds"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close) // after the ingester stops
	for _, fn := range before {
		fn(kafka)
	}
	pub, hooks := &pubCollect{}, newHealthHooks()
	cfg := DefaultConfig()
	cfg.Topics = []Topic{{Name: "odds"}}
	cfg.ProbeInterval, cfg.LagInterval = 200*time.Millisecond, 50*time.Millisecond
	cfg.CatchUpTimeout = time.Hour
	in, err := New(cfg, []kgo.Opt{kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond })},
		pub, hooks, 255, testLog())
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	hooks.in = in
	return kafka, pub, hooks
}

// run runs in until the test ends.
func run(t *testing.T, in *Ingester) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func produceN(t *testing.T, kafka *kfake.Cluster, n int, format string) {
	t.Helper()
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range n {
		r := &kgo.Record{Topic: "odds", Value: fmt.Appendf(nil, format, i), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:a")}}}
		if err := prod.ProduceSync(t.Context(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLagRisesWhileFetchesFail: the broker answers everything but Fetch,
// so no fetch returns records; the lag the watch reports keeps rising with
// every record produced, and the last record's timestamp stays that of
// the last one consumed. Once fetches work again, everything is read and
// the lag is back to 0.
func TestLagRisesWhileFetchesFail(t *testing.T) {
	kafka, pub, hooks := startIngest(t)
	produceN(t, kafka, 5, `{"before":%d}`)
	var consumedAt time.Time
	checkFor(t, 10*time.Second, func() error {
		pubs := pub.all()
		lag, last, _ := hooks.position()
		if len(pubs) != 5 || lag != 0 || !last.Equal(pubs[4].Time) {
			return fmt.Errorf("published %d of 5, lag %d, last record at %v", len(pubs), lag, last)
		}
		consumedAt = last
		return nil
	})

	var stalled atomic.Bool
	var refused atomic.Int64
	stalled.Store(true)
	kafka.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		if !stalled.Load() {
			return nil, nil, false
		}
		refused.Add(1)
		return nil, errors.New("fetch refused by the test"), true // closes the connection
	})
	// A fetch that was waiting for records when the stall began may
	// still return some; from the first refused fetch on none does.
	checkFor(t, 10*time.Second, func() error {
		if refused.Load() == 0 {
			return errors.New("no fetch refused yet")
		}
		return nil
	})
	for _, want := range []int64{10, 20} {
		produceN(t, kafka, 10, `{"stalled":%d}`)
		checkFor(t, 10*time.Second, func() error {
			if lag, _, _ := hooks.position(); lag != want {
				return fmt.Errorf("lag %d, want %d", lag, want)
			}
			return nil
		})
		if n := len(pub.all()); n != 5 {
			t.Fatalf("published %d records while fetches fail, want still 5", n)
		}
		if _, last, _ := hooks.position(); !last.Equal(consumedAt) {
			t.Fatalf("last record at %v while stalled, want %v (the last consumed)", last, consumedAt)
		}
	}

	stalled.Store(false)
	checkFor(t, 20*time.Second, func() error {
		if lag, _, _ := hooks.position(); len(pub.all()) != 25 || lag != 0 {
			return fmt.Errorf("published %d of 25, lag %d", len(pub.all()), lag)
		}
		return nil
	})
}

// TestLagRisesWhilePublishBlocks: ingest is stuck in publishing a record
// (a hub that does not return); the lag the watch reports keeps rising
// with every record produced meanwhile, and falls to 0 once it returns.
func TestLagRisesWhilePublishBlocks(t *testing.T) {
	kafka, pub, hooks := startIngest(t)
	produceN(t, kafka, 1, `{"before":%d}`)
	checkFor(t, 10*time.Second, func() error {
		if lag, _, _ := hooks.position(); len(pub.all()) != 1 || lag != 0 {
			return fmt.Errorf("published %d of 1, lag %d", len(pub.all()), lag)
		}
		return nil
	})
	pub.hold.Lock()
	for _, want := range []int64{5, 10} {
		produceN(t, kafka, 5, `{"stuck":%d}`)
		checkFor(t, 10*time.Second, func() error {
			if lag, _, _ := hooks.position(); lag != want {
				return fmt.Errorf("lag %d, want %d", lag, want)
			}
			return nil
		})
	}
	pub.hold.Unlock()
	checkFor(t, 10*time.Second, func() error {
		if lag, _, _ := hooks.position(); len(pub.all()) != 11 || lag != 0 {
			return fmt.Errorf("published %d of 11, lag %d", len(pub.all()), lag)
		}
		return nil
	})
}

// lineCounter counts log lines containing a text; safe for concurrent use.
type lineCounter struct {
	mu   sync.Mutex
	text string
	n    int
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += strings.Count(string(p), c.text)
	return len(p), nil
}

func (c *lineCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestConnectErrorsCountedAndLogged: a seed broker that refuses
// connections is counted on every attempt and logged once (then every
// errorLogEvery).
func TestConnectErrorsCountedAndLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	lines := &lineCounter{text: "kafka broker connection failed"}
	hooks := newHealthHooks()
	cfg := DefaultConfig()
	cfg.ProbeInterval = 50 * time.Millisecond
	in, err := New(cfg, []kgo.Opt{kgo.SeedBrokers(addr), kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond })},
		&pubCollect{}, hooks, 255, slog.New(slog.NewTextHandler(lines, nil)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	checkFor(t, 10*time.Second, func() error {
		hooks.mu.Lock()
		n := hooks.errs[OpConnect]
		hooks.mu.Unlock()
		if n < 5 {
			return fmt.Errorf("%d connect errors counted, want 5", n)
		}
		return nil
	})
	if n := lines.count(); n != 1 {
		t.Fatalf("%d log lines about failed connections, want 1 (rate-limited)", n)
	}
}

// TestTopicRecreated: the topic is deleted and created again while
// ingest reads it, and records are produced to the new one. Ingest
// notices, counts it once, and publishes the new records under a new
// epoch, none of the old topic again.
func TestTopicRecreated(t *testing.T) {
	kafka, pub, hooks := startIngest(t)
	produceN(t, kafka, 3, `{"old":%d}`)
	checkFor(t, 10*time.Second, func() error {
		if n := len(pub.all()); n != 3 {
			return fmt.Errorf("published %d of 3", n)
		}
		return nil
	})
	oldEpoch := pub.all()[0].Epoch

	admCl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.DeleteTopic(t.Context(), "odds"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error { // deleting is asynchronous in Kafka
		_, err := adm.CreateTopic(t.Context(), 1, 1, nil, "odds")
		return err
	})
	produceN(t, kafka, 2, `{"new":%d}`)

	checkFor(t, 20*time.Second, func() error {
		if n := len(pub.all()); n != 5 {
			return fmt.Errorf("published %d of 5 (3 old, 2 new)", n)
		}
		return nil
	})
	for i, p := range pub.all()[3:] {
		if p.Epoch == oldEpoch || p.Pos.Offset != int64(i) || string(p.Data) != fmt.Sprintf(`{"new":%d}`, i) {
			t.Fatalf("new record %d: epoch %q (old %q), offset %d, data %s", i, p.Epoch, oldEpoch, p.Pos.Offset, p.Data)
		}
	}
	if _, _, n := hooks.position(); n != 1 {
		t.Fatalf("recreated reported %d times, want 1", n)
	}
}

// TestStreamRestarts: offsets that go backwards under one topic ID start a
// new epoch (a broker without IDs counts it as the topic created again);
// a batch of a topic ID older than the one consumed is dropped.
func TestStreamRestarts(t *testing.T) {
	batch := func(from int64) *kgo.FetchPartition {
		p := &kgo.FetchPartition{}
		for off := from; off < from+2; off++ {
			p.Records = append(p.Records, &kgo.Record{Topic: "odds", Offset: off, Timestamp: time.Now(), Value: []byte(`{}`),
				Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:a")}}})
		}
		return p
	}
	oldID, newID := [16]byte{1}, [16]byte{2}
	for _, tt := range []struct {
		name      string
		ids       [3][16]byte // of the three batches
		from      [3]int64
		epochs    []string // of the publications, in order
		recreated int
	}{
		{"no topic IDs", [3][16]byte{}, [3]int64{0, 2, 0}, []string{"odds-0", "odds-0", "odds-0", "odds-0", "odds-0.1", "odds-0.1"}, 1},
		{"truncated", [3][16]byte{oldID, oldID, oldID}, [3]int64{0, 2, 1}, []string{"01000000-0", "01000000-0", "01000000-0", "01000000-0", "01000000-0.1", "01000000-0.1"}, 0},
		{"old topic after restart", [3][16]byte{oldID, newID, oldID}, [3]int64{5, 0, 7}, []string{"01000000-0", "01000000-0"}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub, hooks := &collect{}, newHealthHooks()
			in := &Ingester{cfg: DefaultConfig(), pub: pub, hooks: hooks, maxName: 255, log: testLog()}
			in.initStreams()
			in.caughtUp.Store(true)
			for i := range 3 {
				if tt.ids[i] == newID { // as the watch's restart does
					in.ids["odds"] = newID
					continue
				}
				in.handlePartition("odds", tt.ids[i], batch(tt.from[i]))
			}
			var epochs []string
			for _, p := range pub.pubs {
				epochs = append(epochs, p.Epoch)
			}
			if fmt.Sprint(epochs) != fmt.Sprint(tt.epochs) {
				t.Fatalf("epochs %v, want %v", epochs, tt.epochs)
			}
			if _, _, n := hooks.position(); n != tt.recreated {
				t.Fatalf("recreated reported %d times, want %d", n, tt.recreated)
			}
		})
	}
}

// produceTxn produces n records in one transaction, committed or aborted.
func produceTxn(t *testing.T, kafka *kfake.Cluster, n int, commit bool) {
	t.Helper()
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.TransactionalID("test"), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r := &kgo.Record{Topic: "odds", Value: fmt.Appendf(nil, `{"txn":%d}`, i), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:a")}}}
		if err := prod.ProduceSync(t.Context(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := prod.EndTransaction(t.Context(), kgo.TransactionEndTry(commit)); err != nil {
		t.Fatal(err)
	}
}

// TestTransactionMarkersReadToEnd: a partition whose last offset is a
// transaction's commit marker is read to its end: the start window counts
// as read (not only after catch_up_timeout) and no lag of 1 stays; an
// aborted transaction publishes nothing and leaves no lag either.
func TestTransactionMarkersReadToEnd(t *testing.T) {
	kafka, pub, hooks := startIngest(t, func(k *kfake.Cluster) { produceTxn(t, k, 3, true) })
	checkFor(t, 10*time.Second, func() error {
		if lag, _, _ := hooks.position(); len(pub.all()) != 3 || lag != 0 || !hooks.in.CaughtUp() {
			return fmt.Errorf("published %d of 3, lag %d, start window read: %v", len(pub.all()), lag, hooks.in.CaughtUp())
		}
		return nil
	})
	produceTxn(t, kafka, 2, false)
	produceN(t, kafka, 1, `{"after":%d}`) // the abort's marker is read by then
	checkFor(t, 10*time.Second, func() error {
		if lag, _, _ := hooks.position(); len(pub.all()) != 4 || lag != 0 {
			return fmt.Errorf("published %d of 4, lag %d", len(pub.all()), lag)
		}
		return nil
	})
	if got := string(pub.all()[3].Data); got != `{"after":0}` {
		t.Fatalf("published %s after the aborted transaction, want only {\"after\":0}", got)
	}
}
