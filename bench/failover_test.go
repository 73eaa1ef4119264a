package bench

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/edgerelay/edgerelay/relay"
)

// TestFailoverCounts feeds a failing-over JSON client the frames of a
// first session, a socket loss and a resubscribe on another relay, and
// checks what it counts across the switch: recovered publications that
// continue the stream (none missed, none twice), a recovered publication
// the client had already read (a duplicate), a reply that could not
// recover (the latest value only: the skipped updates are gaps), and a
// client ahead of the new relay (recovered, nothing sent).
func TestFailoverCounts(t *testing.T) {
	pub := func(seq, off int) string {
		return fmt.Sprintf(`{"data":{"seq":%d,"t":%d,"pad":"x"},"offset":%d}`, seq, time.Now().UnixNano(), off)
	}
	push := func(seq, off int) string { return `{"push":{"channel":"c","pub":` + pub(seq, off) + `}}` }
	reply := func(recovered bool, off int, pubs ...string) string {
		return fmt.Sprintf(`{"id":2,"subscribe":{"recoverable":true,"epoch":"odds-0","offset":%d,"publications":[%s],"recovered":%v,"was_recovering":true}}`,
			off, strings.Join(pubs, ","), recovered)
	}
	for _, tt := range []struct {
		name       string
		after      []string // the resubscribe reply, then pushes on the new relay
		gaps, dups uint64
		recovered  uint64
		notRec     uint64
		last       int64
		offset     uint64
	}{
		{"recovered", []string{reply(true, 14, pub(3, 13), pub(4, 14)), push(5, 15)}, 0, 0, 2, 0, 5, 15},
		{"duplicate", []string{reply(true, 14, pub(2, 12), pub(3, 13)), push(4, 14)}, 0, 1, 2, 0, 4, 14},
		{"not recovered", []string{reply(false, 15, pub(5, 15)), push(6, 16)}, 2, 0, 0, 1, 6, 16},
		{"ahead", []string{reply(true, 12), push(3, 13)}, 0, 0, 0, 0, 3, 13},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &chanState{name: "c"}
			c := &clientResult{failover: true, subs: []*chanState{s}, sink: &seriesSink{series: map[int64]*Histogram{}, connects: map[int64]int{}}}
			now := time.Now()
			// First session: the reply positions the stream, the pushes move it.
			for _, l := range []string{`{"id":2,"subscribe":{"recoverable":true,"epoch":"odds-0","offset":10,"publications":[{"data":{"seq":9,"t":1},"offset":10}]}}`,
				push(1, 11), push(2, 12)} {
				c.line(nil, []byte(l), now)
			}
			if !c.subscribed || s.epoch != "odds-0" || s.offset != 12 || s.lastSeq != 2 || c.gaps != 0 {
				t.Fatalf("first session: subscribed %v, position %s/%d, seq %d, gaps %d", c.subscribed, s.epoch, s.offset, s.lastSeq, c.gaps)
			}
			// The socket is lost; the resubscribe recovers from there.
			c.droppedAt.Store(now.Add(-50 * time.Millisecond).UnixNano())
			c.replied = 0
			cmd := subscribeCommand(t, c)
			if want := `{"id":2,"subscribe":{"channel":"c","recover":true,"epoch":"odds-0","offset":12}}`; !strings.HasSuffix(cmd, "\n"+want) {
				t.Fatalf("resubscribe %q, want it to end with %s", cmd, want)
			}
			for _, l := range tt.after {
				c.line(nil, []byte(l), now)
			}
			if c.gaps != tt.gaps || c.duplicates != tt.dups || c.outOfOrder != 0 || c.recovered != tt.recovered || c.notRecovered != tt.notRec ||
				s.lastSeq != tt.last || s.offset != tt.offset {
				t.Errorf("gaps %d dups %d out of order %d recovered %d not recovered %d, last seq %d offset %d; want %d %d 0 %d %d, %d %d",
					c.gaps, c.duplicates, c.outOfOrder, c.recovered, c.notRecovered, s.lastSeq, s.offset, tt.gaps, tt.dups, tt.recovered, tt.notRec, tt.last, tt.offset)
			}
			if c.reconnect.N != 1 || c.reconnect.Max < 50*time.Millisecond {
				t.Errorf("reconnect time %d recorded, max %v; want 1, from the loss (>= 50ms)", c.reconnect.N, c.reconnect.Max)
			}
		})
	}
}

// subscribeCommand is what c.subscribe writes, as the relay reads it.
func subscribeCommand(t *testing.T, c *clientResult) string {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go c.subscribe(client)
	b, err := wsutil.ReadClientText(server)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFailoverDrain: clients spread over two relays with history; the
// first relay stops (close 3001) during the feed; its clients move to the
// second, resubscribe with recover:true, and every client ends with every
// update of its channel once: no gap, no duplicate across the switch.
func TestFailoverDrain(t *testing.T) {
	kafka := newKafka(t)
	var urls []string
	var stops []func()
	for range 2 {
		cfg := relay.DefaultConfig()
		cfg.Kafka.Brokers = kafka.ListenAddrs()
		cfg.Ingest.Topics = cfg.Ingest.Topics[:1]
		cfg.Overload.ConflateAfter = time.Hour
		cfg.Channels.HistorySize = 1000
		_, addr, stop := startStoppableRelay(t, cfg)
		urls, stops = append(urls, "ws://"+addr+"/connection/websocket"), append(stops, stop)
	}
	channels := []string{"bench:test:0", "bench:test:1"}
	wc := WorkerConfig{URLs: urls, Source: "127.0.0.1", Conns: 6, Channels: channels, Failover: true}
	ctx := t.Context()
	// Values first, so that the subscribe replies name the epoch (as RunFanout's primeChannels).
	var nodes []*relayNode
	for _, u := range urls {
		m, _ := metricsURLOf(u)
		nodes = append(nodes, &relayNode{url: u, metrics: m})
	}
	if err := primeChannels(ctx, FanoutConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Size: 100}, channels, nodes); err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	ready := make(chan [2]int, 1)
	results := make(chan WorkerResult, 1)
	probe := &workerProbe{}
	go func() { results <- runWorker(wctx, wc, func(c, f int) { ready <- [2]int{c, f} }, probe) }()
	if r := <-ready; r != [2]int{6, 0} {
		stopWorker()
		t.Fatalf("connected/failed = %v (%+v)", r, <-results)
	}
	feed := FeedConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Channels: channels, Rate: 100, Size: 100, Duration: time.Second}
	fed := make(chan FeedResult, 1)
	go func() {
		fr, err := RunFeed(ctx, feed)
		if err != nil || fr.Failed != 0 {
			t.Errorf("feed %+v, %v", fr, err)
		}
		fed <- fr
	}()
	// Stop the first relay once its clients have read some of the feed.
	for !probe.beyond(10) {
		time.Sleep(5 * time.Millisecond)
	}
	stops[0]()
	fr := <-fed
	deadline := time.Now().Add(30 * time.Second)
	for !probe.holds(fr.Final) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stopWorker()
	res := <-results
	rep := &Report{Clients: res, Feed: fr}
	rep.judge()
	if err := rep.Verdict(false); err != nil || res.Moved != 3 || res.Reconnect.N != 3 || res.Closes["3001"] != 3 || res.NotRecovered != 0 {
		t.Fatalf("%v; moved %d, reconnects %d, closes %v, not recovered %d; want 3 (the first relay's clients), 0", err, res.Moved, res.Reconnect.N, res.Closes, res.NotRecovered)
	}
	t.Logf("reconnect max %v, recovered %d, not recovered %d", res.Reconnect.Max, res.Recovered, res.NotRecovered)
}
