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
// relay: every healthy client must get every record, in order, and the
// stalled ones must not be counted.
func TestWorkerAndFeed(t *testing.T) {
	kafka := newKafka(t)
	cfg := relay.DefaultConfig()
	cfg.Kafka.Brokers = kafka.ListenAddrs()
	cfg.Ingest.Topics = cfg.Ingest.Topics[:1]
	srv, addr := startRelay(t, cfg)
	ctx := t.Context()

	channels := []string{"bench:test:0", "bench:test:1"}
	wctx, stop := context.WithCancel(ctx)
	ready := make(chan [2]int, 1)
	results := make(chan WorkerResult, 1)
	go func() {
		results <- RunWorker(wctx, WorkerConfig{URL: "ws://" + addr + "/connection/websocket", Source: "127.0.0.1",
			Conns: 20, Channels: channels, Stalled: 4}, func(c, f int) { ready <- [2]int{c, f} })
	}()
	if r := <-ready; r != [2]int{20, 0} {
		t.Fatalf("connected/failed = %v", r)
	}
	feed, err := RunFeed(ctx, FeedConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Channels: channels, Rate: 200, Size: 100, Duration: 500 * time.Millisecond})
	if err != nil || feed.Sent != 100 || feed.Failed != 0 {
		t.Fatalf("feed %+v, %v", feed, err)
	}
	// Each healthy client (16) gets the records of its channel (50).
	want := uint64(16 * 50)
	deadline := time.Now().Add(10 * time.Second)
	for srv.Hub().Stats().Deliveries < 20*50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the last writes reach the clients; the counts are only read at stop
	stop()
	res := <-results
	if res.Received != want || res.Gaps != 0 || res.OutOfOrder != 0 || res.Latency.N != want {
		t.Fatalf("result %+v, want %d received, no gaps", res, want)
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
