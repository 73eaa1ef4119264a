package bets

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgerelay/edgerelay/fanout"
)

// runDesk runs d's dedup reader until the test ends.
func runDesk(t testing.TB, d *Desk) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// recordCount is the number of records in the bets topic.
func recordCount(t testing.TB, brokers []string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "bets")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func testDedupConfig() Config {
	cfg := DefaultConfig()
	cfg.RatePerUser, cfg.BurstPerUser = 1e6, 1e6
	cfg.DedupSyncTimeout = cfg.Timeout // a loaded machine must not turn a wait into a second record
	return cfg
}

var openMarket = &fanout.Publication{Channel: "odds:m", Data: []byte(`{"status":"open"}`)}

// twoNodes is a broker with a 3-partition bets topic and the desks of
// nodes a and b on it, b's reader running.
func twoNodes(t testing.TB) (brokers []string, a, b *Desk) {
	brokers = newTestKafka(t, 3).ListenAddrs()
	a = newDeskOn(t, testDedupConfig(), brokers, "a")
	b = newDeskOn(t, testDedupConfig(), brokers, "b")
	runDesk(t, b)
	return brokers, a, b
}

// TestDeskRetryRightAfterAck: a retry placed on node B the moment node A's
// bet is acknowledged (on a connection opened then) gets A's answer and no
// second record, every time: B waits for its reader to reach the end
// offsets before producing.
func TestDeskRetryRightAfterAck(t *testing.T) {
	brokers, a, b := twoNodes(t)
	runDesk(t, a)
	const n = 20
	for i := range n {
		bet := testBet(t, fmt.Sprint("r", i), openMarket, time.Now())
		first, e := placeBet(t, a, bet)
		if e != nil {
			t.Fatal(e)
		}
		retry := *bet
		retry.ReceivedAt, retry.ConnectedAt = time.Now(), time.Now()
		again, e := placeBet(t, b, &retry)
		if e != nil || again != first {
			t.Fatalf("retry %d on node b: %+v %v, want a's answer %+v", i, again, e, first)
		}
	}
	if got := recordCount(t, brokers); got != n {
		t.Fatalf("%d records, want %d (one per bet)", got, n)
	}
	// A retry either found the record read already or waited for the
	// reader; which, depends on the race.
	if s := b.DedupStats(); s.TimedOut != 0 {
		t.Fatalf("node b's reader did not catch up in time: %+v", s)
	}
	t.Logf("retries that waited for the reader: %d of %d", b.DedupStats().CaughtUp, n)
}

// TestDeskRetryMismatchAcrossNodes: the bet id of a bet taken by node A,
// reused on node B for a different bet, gets ErrIDReused, as on A.
func TestDeskRetryMismatchAcrossNodes(t *testing.T) {
	brokers, a, b := twoNodes(t)
	if _, e := placeBet(t, a, testBet(t, "m1", openMarket, time.Now())); e != nil {
		t.Fatal(e)
	}
	other := testBet(t, "m1", openMarket, time.Now())
	other.Raw = []byte(strings.Replace(string(other.Raw), `"stake":1`, `"stake":2`, 1))
	other.ConnectedAt = time.Now()
	if _, e := placeBet(t, b, other); e != ErrIDReused {
		t.Fatalf("reused id on node b: %v, want %v", e, ErrIDReused)
	}
	if got := recordCount(t, brokers); got != 1 {
		t.Fatalf("%d records, want 1", got)
	}
}

// TestDeskReaderStartsWithinWindow: a node started after a bet reads the
// topic from DedupWindow ago: it recognises the bet, and not one older
// than the window.
func TestDeskReaderStartsWithinWindow(t *testing.T) {
	kafka := newTestKafka(t, 3)
	cfg := testDedupConfig()
	cfg.DedupWindow = time.Minute
	a := newDeskOn(t, cfg, kafka.ListenAddrs(), "a")
	// A desk cannot produce a bet received that long ago (the delivery
	// timeout runs from the record's timestamp): write its record as the
	// desk would have.
	old := testBet(t, "w0", openMarket, time.Now().Add(-2*cfg.DedupWindow))
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.DefaultProduceTopic("bets"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(context.Background(), a.record(old, sha256.Sum256(old.Raw))).FirstErr(); err != nil {
		t.Fatal(err)
	}
	recent := testBet(t, "w1", openMarket, time.Now())
	first, e := placeBet(t, a, recent)
	if e != nil {
		t.Fatal(e)
	}

	b := newDeskOn(t, cfg, kafka.ListenAddrs(), "b")
	runDesk(t, b)
	retry := *recent
	retry.ReceivedAt, retry.ConnectedAt = time.Now(), time.Now()
	if again, e := placeBet(t, b, &retry); e != nil || again != first {
		t.Fatalf("retry on a node started later: %+v %v, want %+v", again, e, first)
	}
	if s := b.DedupStats(); s.Read != 1 {
		t.Fatalf("read %d records, want 1: the one within the window", s.Read)
	}
	oldRetry := *old
	oldRetry.ReceivedAt, oldRetry.ConnectedAt = time.Now(), time.Now()
	if _, e := placeBet(t, b, &oldRetry); e != nil {
		t.Fatal(e)
	}
	if got := recordCount(t, kafka.ListenAddrs()); got != 3 {
		t.Fatalf("%d records, want 3: the retry of the bet past the window produces again", got)
	}
}

// TestDeskReaderBound: a topic holding more bets than DedupMaxEntries
// leaves a node reading them as they come, and one started afterwards
// (which reads only the last DedupMaxEntries back), with the newest
// DedupMaxEntries answers.
func TestDeskReaderBound(t *testing.T) {
	kafka := newTestKafka(t, 1)
	cfg := testDedupConfig()
	cfg.MaxInFlight, cfg.MaxInFlightPerConnection, cfg.DedupMaxEntries = 5, 1, 10
	a := newDeskOn(t, cfg, kafka.ListenAddrs(), "a")
	live := newDeskOn(t, cfg, kafka.ListenAddrs(), "live")
	runDesk(t, live)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		live.rd.mu.Lock()
		started := live.rd.cl != nil // its start offsets are listed
		live.rd.mu.Unlock()
		if started {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node live's reader did not start")
		}
	}
	const n = 50
	var results []Result
	now := time.Now()
	for i := range n {
		r, e := placeBet(t, a, testBet(t, fmt.Sprint("x", i), openMarket, now))
		if e != nil {
			t.Fatal(e)
		}
		results = append(results, r)
	}
	later := newDeskOn(t, cfg, kafka.ListenAddrs(), "later")
	runDesk(t, later)
	for _, tt := range []struct {
		d    *Desk
		read int64
	}{{live, n}, {later, int64(cfg.DedupMaxEntries)}} {
		deadline := time.Now().Add(10 * time.Second)
		for tt.d.DedupStats().Read < tt.read {
			if time.Now().After(deadline) {
				t.Fatalf("node %s read %d records, want %d", tt.d.node, tt.d.DedupStats().Read, tt.read)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := tt.d.Remembered(); got != cfg.DedupMaxEntries {
			t.Fatalf("node %s remembered %d, want the bound %d", tt.d.node, got, cfg.DedupMaxEntries)
		}
		for _, i := range []int{n - 1, n - cfg.DedupMaxEntries} {
			if r, e := placeBet(t, tt.d, testBet(t, fmt.Sprint("x", i), openMarket, time.Now())); e != nil || r != results[i] {
				t.Fatalf("node %s, retry of x%d (kept): %+v %v, want %+v", tt.d.node, i, r, e, results[i])
			}
		}
	}
	if r, e := placeBet(t, live, testBet(t, "x0", openMarket, time.Now())); e != nil || slices.Contains(results, r) {
		t.Fatalf("retry of x0 (forgotten): %+v %v, want a new record", r, e)
	}
}

// TestDeskSyncTimeout: when the reader cannot catch up, a held bet is
// produced anyway and counted: ListOffsets failing, or hanging past
// DedupSyncTimeout.
func TestDeskSyncTimeout(t *testing.T) {
	for _, hang := range []bool{false, true} {
		t.Run(fmt.Sprint("hang=", hang), func(t *testing.T) {
			kafka := newTestKafka(t, 1)
			cfg := testDedupConfig()
			cfg.DedupSyncTimeout = 100 * time.Millisecond
			d := newDeskOn(t, cfg, kafka.ListenAddrs(), "b")
			// The producer's id first: InitProducerID shares the
			// connection of a sleeping ListOffsets.
			if _, e := placeBet(t, d, testBet(t, "t0", openMarket, time.Now())); e != nil {
				t.Fatal(e)
			}
			release := make(chan struct{})
			defer close(release)
			kafka.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
				kafka.KeepControl()
				if hang {
					kafka.SleepControl(func() { <-release })
				}
				return nil, errors.New("injected"), true // the connection is dropped
			})
			runDesk(t, d)
			bet := testBet(t, "t1", openMarket, time.Now())
			bet.ConnectedAt = time.Now()
			if _, e := placeBet(t, d, bet); e != nil {
				t.Fatalf("held bet: %v, want it produced", e)
			}
			if s := d.DedupStats(); s.TimedOut != 1 || s.CaughtUp != 0 {
				t.Fatalf("stats %+v, want one timed-out wait", s)
			}
		})
	}
}
