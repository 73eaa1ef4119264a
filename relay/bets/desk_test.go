package bets

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

type nopHooks struct{}

func (nopHooks) OnBet(string, time.Duration) {}
func (nopHooks) OnInFlight(int)              {}
func (nopHooks) OnReaderError(error)         {}

func newTestDesk(t *testing.T, cfg Config) *Desk {
	t.Helper()
	return newDeskOn(t, cfg, newTestKafka(t, 1).ListenAddrs(), "n1")
}

// newTestKafka is a kfake broker with a bets topic of that many partitions.
func newTestKafka(t testing.TB, partitions int) *kfake.Cluster {
	t.Helper()
	kafka, err := kfake.NewCluster(kfake.SeedTopics(int32(partitions), "bets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	return kafka
}

// newDeskOn is a Desk of node on brokers, not running its reader.
func newDeskOn(t testing.TB, cfg Config, brokers []string, node string) *Desk {
	t.Helper()
	if err := cfg.Validate("bets"); err != nil {
		t.Fatal(err)
	}
	d, err := NewDesk(cfg, []kgo.Opt{kgo.SeedBrokers(brokers...)}, node, nopHooks{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// testBet is a bet of user "u" on odds:m, received at.
func testBet(t testing.TB, id string, latest *fanout.Publication, at time.Time) *Bet {
	t.Helper()
	raw := fmt.Appendf(nil, `{"bet_id":%q,"channel":"odds:m","selection":"home","odds":2,"stake":1}`, id)
	req, err := Parse(raw, 4096, 255)
	if err != nil {
		t.Fatal(err)
	}
	return &Bet{Request: req, User: "u", ReceivedAt: at, Latest: latest}
}

// place places a bet and waits for its answer.
func place(t *testing.T, d *Desk, id string, latest *fanout.Publication, at time.Time) (Result, *protocol.Error) {
	t.Helper()
	return placeBet(t, d, testBet(t, id, latest, at))
}

// placeBet places b and waits for its answer.
func placeBet(t testing.TB, d *Desk, b *Bet) (Result, *protocol.Error) {
	t.Helper()
	type answer struct {
		r Result
		e *protocol.Error
	}
	ch := make(chan answer, 1)
	d.Place(b, func(r Result, e *protocol.Error) { ch <- answer{r, e} })
	select {
	case a := <-ch:
		return a.r, a.e
	case <-time.After(10 * time.Second):
		t.Fatalf("bet %s: no answer", b.BetID)
		return Result{}, nil
	}
}

// TestDeskDedupBound: past DedupMaxEntries the oldest answers are
// forgotten (a retry of those produces again), the newest are kept, and
// Sweep forgets what is past the window.
func TestDeskDedupBound(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxInFlight, cfg.MaxInFlightPerConnection, cfg.DedupMaxEntries = 3, 1, 3
	cfg.RatePerUser, cfg.BurstPerUser = 1000, 1000
	d := newTestDesk(t, cfg)
	open := &fanout.Publication{Channel: "odds:m", Data: []byte(`{"status":"open"}`)}
	now := time.Now()
	first := map[string]Result{}
	for i := range 5 {
		id := fmt.Sprint("b", i)
		r, e := place(t, d, id, open, now)
		if e != nil {
			t.Fatalf("%s: %v", id, e)
		}
		first[id] = r
	}
	if n := d.Remembered(); n != 3 {
		t.Fatalf("remembered %d answers, want the bound 3", n)
	}
	for _, tt := range []struct {
		id   string
		same bool
	}{{"b4", true}, {"b3", true}, {"b0", false}} {
		r, e := place(t, d, tt.id, open, now)
		if e != nil || (r == first[tt.id]) != tt.same {
			t.Errorf("retry of %s: %+v %v, first answer %+v; want same=%v", tt.id, r, e, first[tt.id], tt.same)
		}
	}
	d.Sweep(now.Add(cfg.DedupWindow + time.Second))
	if n := d.Remembered(); n != 0 {
		t.Fatalf("after the window, %d answers remembered", n)
	}
}

// TestDeskSuspension: the rule follows the market's latest publication,
// memoized per publication.
func TestDeskSuspension(t *testing.T) {
	cfg := DefaultConfig()
	d := newTestDesk(t, cfg)
	open := &fanout.Publication{Channel: "odds:m", Data: []byte(`{"status":"open"}`)}
	suspended := &fanout.Publication{Channel: "odds:m", Data: []byte(`{"status":"suspended"}`)}
	now := time.Now()
	for i, tt := range []struct {
		pub  *fanout.Publication
		want *protocol.Error
	}{{open, nil}, {open, nil}, {suspended, ErrSuspended}, {suspended, ErrSuspended}, {open, nil}, {nil, ErrSuspended},
		{&fanout.Publication{Channel: "odds:m", Data: []byte(`{"status":"closed"}`)}, ErrSuspended},
		{&fanout.Publication{Channel: "odds:m", Data: []byte(`[1]`)}, nil}} {
		_, e := place(t, d, fmt.Sprint("s", i), tt.pub, now)
		if e != tt.want {
			t.Errorf("bet %d: %v, want %v", i, e, tt.want)
		}
	}
}

// TestDeskTimeoutQueue: bets whose produce requests Kafka holds are each
// answered with the retryable error once their own Timeout has passed,
// not before (one timer for all of them, set for the oldest); when Kafka
// answers at last, a retry gets the accepted record, not a second one.
func TestDeskTimeoutQueue(t *testing.T) {
	kafka := newTestKafka(t, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		kafka.SleepControl(func() { <-release })
		return nil, nil, false // then handled as usual
	})
	cfg := DefaultConfig()
	cfg.Timeout, cfg.DedupAcrossNodes = time.Second, false // franz-go's least delivery timeout
	cfg.RatePerUser, cfg.BurstPerUser = 1000, 1000
	d := newDeskOn(t, cfg, kafka.ListenAddrs(), "n1")
	open := &fanout.Publication{Channel: "odds:m", Data: []byte(`{"status":"open"}`)}
	type answer struct {
		took time.Duration
		e    *protocol.Error
	}
	answers := make(chan answer, 4)
	for i := range 4 {
		start := time.Now()
		d.Place(testBet(t, fmt.Sprint("q", i), open, start), func(_ Result, e *protocol.Error) { answers <- answer{time.Since(start), e} })
		time.Sleep(100 * time.Millisecond) // not for correctness: deadlines apart
	}
	for range 4 {
		select {
		case a := <-answers:
			if a.e == nil || a.e.Code != ErrUnavailable.Code || a.took < cfg.Timeout {
				t.Errorf("answered after %v with %v, want error %d after at least %v", a.took, a.e, ErrUnavailable.Code, cfg.Timeout)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a bet Kafka holds was not answered")
		}
	}
	releaseOnce.Do(func() { close(release) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, e := place(t, d, "q0", open, time.Now())
		if e == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry of q0 after Kafka answered: %v", e)
		}
	}
	// The others may have landed or failed (franz-go fails records it
	// has not sent by the delivery timeout); q0 landed once.
	want := recordCount(t, kafka.ListenAddrs())
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.ConsumeTopics("bets"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var read, q0 int64
	for read < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			read++
			if string(r.Headers[0].Value) == "q0" {
				q0++
			}
		})
	}
	if read != want || q0 != 1 {
		t.Errorf("read %d of %d records, %d of them q0; want q0 once", read, want, q0)
	}
}
