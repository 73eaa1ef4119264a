package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgerelay/edgerelay/relay"
)

// TestWorkerAndFeed runs a swarm worker and the feed against an in-process
// relay, in every client mode: every healthy client must get every record,
// in order, delta clients must rebuild every value, and the stalled ones
// must not be counted. Delta must cut the bytes per delivery.
func TestWorkerAndFeed(t *testing.T) {
	perDelivery := map[string]float64{}
	for _, tt := range []struct {
		name           string
		delta, deflate bool
	}{{"full", false, false}, {"deflate", false, true}, {"delta", true, false}, {"delta+deflate", true, true}} {
		t.Run(tt.name, func(t *testing.T) {
			res := runWorkerAndFeed(t, WorkerConfig{Conns: 20, Stalled: 4, Delta: tt.delta, Deflate: tt.deflate})
			// Each healthy client (16) gets the records of its channel (50).
			want := uint64(16 * 50)
			if res.Received != want || res.Gaps != 0 || res.OutOfOrder != 0 || res.Latency.N != want || res.BadDeltas != 0 {
				t.Fatalf("result %+v, want %d received, no gaps, no bad deltas", res, want)
			}
			perDelivery[tt.name] = float64(res.WireBytes) / float64(res.Received)
		})
	}
	t.Logf("wire bytes per delivery: %v", perDelivery)
	if perDelivery["delta"] > perDelivery["full"]/2 || perDelivery["deflate"] >= perDelivery["full"] {
		t.Fatalf("delta/deflate do not cut bytes: %v", perDelivery)
	}
}

// runWorkerAndFeed runs one worker with wc (URL, source and channels
// filled in) and 100 records of 300 bytes over two channels.
func runWorkerAndFeed(t *testing.T, wc WorkerConfig) WorkerResult {
	kafka := newKafka(t)
	cfg := relay.DefaultConfig()
	cfg.Kafka.Brokers = kafka.ListenAddrs()
	cfg.Ingest.Topics = cfg.Ingest.Topics[:1]
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
	go func() {
		results <- RunWorker(wctx, wc, func(c, f int) { ready <- [2]int{c, f} })
	}()
	if r := <-ready; r != [2]int{wc.Conns, 0} {
		stop()
		t.Fatalf("connected/failed = %v (%+v)", r, <-results)
	}
	feed, err := RunFeed(ctx, FeedConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Channels: channels, Rate: 200, Size: 300, Duration: 500 * time.Millisecond})
	if err != nil || feed.Sent != 100 || feed.Failed != 0 {
		t.Fatalf("feed %+v, %v", feed, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Hub().Stats().Deliveries < uint64(wc.Conns)*50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the last writes reach the clients; the counts are only read at stop
	stop()
	return <-results
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
	t.Cleanup(func() { cancel(); <-served })
	return srv, ln.Addr().String()
}
