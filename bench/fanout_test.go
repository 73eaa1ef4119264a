package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgerelay/edgerelay/relay"
)

// TestWorkerAndFeed runs a swarm worker and the feed against an in-process
// relay, in every client mode, JSON and Protobuf: every healthy client
// must get every record, in order, delta clients must rebuild every
// value, and the stalled ones must not be counted. Delta must cut the
// bytes per delivery, and Protobuf the envelope's.
func TestWorkerAndFeed(t *testing.T) {
	perDelivery := map[string]float64{}
	for _, tt := range []struct {
		name                     string
		delta, deflate, protobuf bool
	}{
		{"full", false, false, false}, {"deflate", false, true, false}, {"delta", true, false, false}, {"delta+deflate", true, true, false},
		{"protobuf", false, false, true}, {"protobuf deflate", false, true, true}, {"protobuf delta", true, false, true},
		{"protobuf delta+deflate", true, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Every update must arrive: no conflation, even if this
			// shared machine delays the relay past conflate_after.
			noConflation := func(c *relay.Config) { c.Overload.ConflateAfter = time.Hour }
			res, fr := runWorkerAndFeed(t, WorkerConfig{Conns: 20, Stalled: 4, Delta: tt.delta, Deflate: tt.deflate, Protobuf: tt.protobuf}, noConflation,
				FeedConfig{Rate: 200, Size: 300, Duration: 500 * time.Millisecond, PriorityEvery: 10})
			// Each healthy client (16) gets the records of its channel (50).
			want := uint64(16 * 50)
			if res.Received != want || res.Gaps != 0 || res.OutOfOrder != 0 || res.Duplicates != 0 || res.Latency.N != want || res.BadDeltas != 0 {
				t.Fatalf("result %+v, want %d received, no gaps, no bad deltas", res, want)
			}
			rep := &Report{Clients: res, Feed: fr}
			rep.judge()
			// Every 10th of 100 records is priority: all 10 on channel 0 (of
			// two, round robin), read by its 8 healthy clients.
			if err := rep.Verdict(false); err != nil || rep.FinalExpected != 16 || rep.PriorityExpected != 8*10 {
				t.Fatalf("%v (final %d/%d, priority %d/%d)", err, rep.FinalCorrect, rep.FinalExpected, rep.PriorityRead, rep.PriorityExpected)
			}
			perDelivery[tt.name] = float64(res.WireBytes) / float64(res.Received)
		})
	}
	t.Logf("wire bytes per delivery: %v", perDelivery)
	if perDelivery["delta"] > perDelivery["full"]/2 || perDelivery["deflate"] >= perDelivery["full"] {
		t.Fatalf("delta/deflate do not cut bytes: %v", perDelivery)
	}
	// The same payloads in a smaller envelope: a push's channel name,
	// "data", "offset" and braces become a few bytes of tags and lengths.
	for _, m := range []string{"full", "delta"} {
		if perDelivery["protobuf "+m] >= perDelivery[m]-20 {
			t.Fatalf("protobuf %s does not cut the envelope: %v", m, perDelivery)
		}
	}
	if perDelivery["protobuf"] == 0 || perDelivery["protobuf"] >= perDelivery["full"] {
		t.Fatalf("protobuf full: %v", perDelivery)
	}
}

// runWorkerAndFeed runs one worker with wc (URL, source and channels
// filled in) against a relay (its config adjusted by tune, if not nil) and
// feed (brokers, topic and channels filled in) over two channels.
func runWorkerAndFeed(t *testing.T, wc WorkerConfig, tune func(*relay.Config), feed FeedConfig) (WorkerResult, FeedResult) {
	kafka := newKafka(t)
	cfg := relay.DefaultConfig()
	cfg.Kafka.Brokers = kafka.ListenAddrs()
	cfg.Ingest.Topics = cfg.Ingest.Topics[:1]
	if tune != nil {
		tune(&cfg)
	}
	srv, addr := startRelay(t, cfg)
	ctx := t.Context()

	channels := []string{"bench:test:0", "bench:test:1"}
	wc.URL, wc.Source, wc.Channels = "ws://"+addr+"/connection/websocket", "127.0.0.1", channels
	// The channels hold a value before the clients subscribe: a delta
	// client gets it in the subscribe reply as the base of the first patch.
	if _, err := RunFeed(ctx, FeedConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Channels: channels, Rate: 100, Size: 300, Duration: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	for srv.Hub().Last(channels[0]) == nil || srv.Hub().Last(channels[1]) == nil {
		time.Sleep(10 * time.Millisecond)
	}
	wctx, stop := context.WithCancel(ctx)
	ready := make(chan [2]int, 1)
	results := make(chan WorkerResult, 1)
	probe := &workerProbe{}
	go func() {
		results <- runWorker(wctx, wc, func(c, f int) { ready <- [2]int{c, f} }, probe)
	}()
	if r := <-ready; r != [2]int{wc.Conns, 0} {
		stop()
		t.Fatalf("connected/failed = %v (%+v)", r, <-results)
	}
	feed.Brokers, feed.Topic, feed.Channels = kafka.ListenAddrs(), "odds", channels
	fr, err := RunFeed(ctx, feed)
	if want := uint64(feed.Rate * feed.Duration.Seconds()); err != nil || fr.Sent != want || fr.Failed != 0 {
		t.Fatalf("feed %+v, %v; want %d sent", fr, err, want)
	}
	// Done when every healthy client holds every channel's final value:
	// its stream is in order, so everything before it has been read (or
	// counted as skipped). The bound only keeps a broken run from hanging;
	// the caller's checks then say what is missing.
	deadline := time.Now().Add(30 * time.Second)
	for !probe.holds(fr.Final) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	return <-results, fr
}

// TestOverloadVerdicts: with conflation on at once (conflate_after 0) and
// a fast feed, clients may skip intermediate updates, but every priority
// publication and every channel's final value reaches every healthy
// client. The Protobuf delta clients also check that the first update
// after a conflation comes full (a patch against a value they never got
// would not apply).
func TestOverloadVerdicts(t *testing.T) {
	for _, wc := range []WorkerConfig{{Conns: 40}, {Conns: 40, Protobuf: true, Delta: true}} {
		t.Run(fmt.Sprintf("protobuf=%v", wc.Protobuf), func(t *testing.T) {
			res, fr := runWorkerAndFeed(t, wc, func(c *relay.Config) { c.Overload.ConflateAfter = 0 },
				FeedConfig{Rate: 4000, Size: 300, Duration: 500 * time.Millisecond, PriorityEvery: 7})
			rep := &Report{Clients: res, Feed: fr, Expected: fr.Sent * 40 / 2}
			rep.judge()
			t.Logf("skipped %.1f%% of %d deliveries; priority %d/%d; final %d/%d",
				rep.Skipped*100, rep.Expected, rep.PriorityRead, rep.PriorityExpected, rep.FinalCorrect, rep.FinalExpected)
			// 2,000 records, every 7th priority: 286, each read by the 20 clients of its channel.
			if rep.Skipped == 0 {
				t.Fatal("no update was conflated: the run did not overload the relay, so it checks nothing")
			}
			if err := rep.Verdict(true); err != nil || rep.FinalExpected != 40 || rep.PriorityExpected != 20*286 {
				t.Fatalf("%v (final expected %d, priority expected %d)", err, rep.FinalExpected, rep.PriorityExpected)
			}
		})
	}
}

// TestVerdict: the harness fails a run that lost a priority publication or
// a final value, or delivered out of order.
func TestVerdict(t *testing.T) {
	good := func() *Report {
		return &Report{Feed: FeedResult{Final: map[string]int64{"a": 20, "b": 30}, Priority: map[string]int64{"a": 2, "b": 3}}, Clients: WorkerResult{Channels: map[string]*ChannelResult{
			"a": {Clients: 2, Last: map[int64]int{20: 2}, Priority: 4},
			"b": {Clients: 1, Last: map[int64]int{30: 1}, Priority: 3},
		}}}
	}
	for _, tt := range []struct {
		name   string
		breaks func(*Report)
		errHas string
	}{
		{"all there", func(*Report) {}, ""},
		{"skips allowed", func(r *Report) { r.Clients.Gaps = 3 }, ""},
		{"a duplicate", func(r *Report) { r.Clients.Duplicates = 1 }, "1 duplicates"},
		{"a priority publication missing", func(r *Report) { r.Clients.Channels["a"].Priority = 3 }, "priority publications read 6 of 7"},
		{"a stale final value", func(r *Report) { r.Clients.Channels["b"].Last = map[int64]int{29: 1} }, "final value 2 of 3"},
		{"out of order", func(r *Report) { r.Clients.OutOfOrder = 1 }, "out of order"},
		{"bad delta", func(r *Report) { r.Clients.BadDeltas = 1 }, "bad deltas"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.breaks(r)
			r.judge()
			err := r.Verdict(true)
			if (err == nil) != (tt.errHas == "") || (err != nil && !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("Verdict() = %v, want an error with %q", err, tt.errHas)
			}
		})
	}
}

func newKafka(t *testing.T) *kfake.Cluster {
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "odds", "bets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	return kafka
}

// startRelay serves cfg on an ephemeral port until the test ends.
func startRelay(t *testing.T, cfg relay.Config) (*relay.Server, string) {
	srv, addr, _ := startStoppableRelay(t, cfg)
	return srv, addr
}

// startStoppableRelay is startRelay that stop also ends (a drain with
// no delays: every client gets close 3001 at once), waiting for it.
func startStoppableRelay(t *testing.T, cfg relay.Config) (*relay.Server, string, func()) {
	cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = 0, 0 // a test relay stops at once (drain_test.go times drains)
	srv, err := relay.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	stop := sync.OnceFunc(func() { cancel(); <-served })
	t.Cleanup(stop)
	return srv, ln.Addr().String(), stop
}

// TestInjectedFaults: a feed that skips one update and repeats another
// fails a strict run: the harness sees the gap and the duplicate, in
// either encoding.
func TestInjectedFaults(t *testing.T) {
	for _, pb := range []bool{false, true} {
		t.Run(fmt.Sprintf("protobuf=%v", pb), func(t *testing.T) {
			res, fr := runWorkerAndFeed(t, WorkerConfig{Conns: 4, Protobuf: pb}, func(c *relay.Config) { c.Overload.ConflateAfter = time.Hour },
				FeedConfig{Rate: 100, Size: 100, Duration: 200 * time.Millisecond, SkipSeq: 3, RepeatSeq: 6})
			rep := &Report{Clients: res, Feed: fr}
			rep.judge()
			err := rep.Verdict(false)
			if err == nil || !strings.Contains(err.Error(), "2 updates missing") || !strings.Contains(err.Error(), "2 duplicates") {
				t.Fatalf("verdict %v: want the gap and the duplicate seen by both clients of channel 0 (%+v)", err, res)
			}
		})
	}
}

// TestReconnectStorm: every client drops its socket and reconnects at the
// same moment, twice or more; all come back, in order, and end with every
// channel's final value (from a push or a resubscribe's cached value).
// Priority publications sent while a client is away are not replayed (no
// history), so this run has none. Half the clients speak Protobuf: their
// delta base comes from each new subscribe reply too.
func TestReconnectStorm(t *testing.T) {
	res, fr := runWorkerAndFeed(t, WorkerConfig{Conns: 10, ReconnectEvery: 250 * time.Millisecond, Delta: true, ProtobufShare: 0.5}, nil,
		FeedConfig{Rate: 100, Size: 100, Duration: 700 * time.Millisecond})
	rep := &Report{Clients: res, Feed: fr}
	rep.judge()
	if err := rep.Verdict(true); err != nil || res.Reconnect.N < 20 || res.ReconnectFailed != 0 {
		t.Fatalf("%v; %d reconnects (%d failed), want at least 2 storms of 10 clients", err, res.Reconnect.N, res.ReconnectFailed)
	}
	t.Logf("%d reconnects, p99 %v; skipped %d", res.Reconnect.N, res.Reconnect.Quantile(0.99), res.Gaps)
}

// TestSubscriptionMix: clients on several channels each, half with delta
// and half with deflate, and half of each speaking Protobuf, get every
// update of every channel (Protobuf pushes name their channel).
func TestSubscriptionMix(t *testing.T) {
	res, fr := runWorkerAndFeed(t, WorkerConfig{Conns: 20, ChannelsPerClient: 2, DeltaShare: 0.5, DeflateShare: 0.5, ProtobufShare: 0.5},
		func(c *relay.Config) { c.Overload.ConflateAfter = time.Hour },
		FeedConfig{Rate: 200, Size: 300, Duration: 500 * time.Millisecond})
	rep := &Report{Clients: res, Feed: fr}
	rep.judge()
	if err := rep.Verdict(false); err != nil || res.Received != 20*100 || rep.FinalExpected != 40 || rep.Expected != 2000 {
		t.Fatalf("%v: received %d of %d, final %d/%d", err, res.Received, rep.Expected, rep.FinalCorrect, rep.FinalExpected)
	}
}

func TestChannelsOf(t *testing.T) {
	var chans []string
	for i := range 100 {
		chans = append(chans, fmt.Sprint("c", i))
	}
	cfg := WorkerConfig{Channels: chans, ChannelsPerClient: 5, Popular: 0.8}
	hot := 0
	for i := range 1000 {
		got := channelsOf(cfg, i)
		seen := map[string]bool{}
		for _, ch := range got {
			if seen[ch] {
				t.Fatalf("client %d subscribes %s twice: %v", i, ch, got)
			}
			seen[ch] = true
			var n int
			fmt.Sscanf(ch, "c%d", &n)
			if n < 10 {
				hot++
			}
		}
		if len(got) != 5 {
			t.Fatalf("client %d: %v", i, got)
		}
	}
	if share := float64(hot) / 5000; share < 0.75 || share > 0.85 {
		t.Fatalf("%.2f of subscriptions on the hottest tenth, want about 0.8", share)
	}
	if got := channelsOf(WorkerConfig{Channels: chans}, 7); len(got) != 1 || got[0] != "c7" {
		t.Fatalf("default: %v, want round robin", got)
	}
}
