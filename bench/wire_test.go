package bench

import (
	"context"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
)

// TestMeasureWire: one client per wire mode, JSON and Protobuf, against
// an in-process relay; every mode counts every update, and each encoding
// saves what it should: channel ids and Protobuf the envelope, delta the
// unchanged payload bytes.
func TestMeasureWire(t *testing.T) {
	kafka := newKafka(t)
	cfg := relay.DefaultConfig()
	cfg.Kafka.Brokers = kafka.ListenAddrs()
	cfg.Ingest.Topics = cfg.Ingest.Topics[:1]
	cfg.Overload.ConflateAfter = time.Hour // every update to every client
	srv, addr := startRelay(t, cfg)
	channels := []string{"bench:wire:0", "bench:wire:1", "bench:wire:2"}
	feed := FeedConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Channels: channels, Rate: 300, Size: 300, Duration: 100 * time.Millisecond}
	if _, err := RunFeed(t.Context(), feed); err != nil { // the list of cached channels is what the clients subscribe to
		t.Fatal(err)
	}
	for _, ch := range channels {
		for srv.Hub().Last(ch) == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	probe := &wireProbe{}
	type result struct {
		res []WireResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := measureWire(ctx, "ws://"+addr+"/connection/websocket", "bench:wire:", WireModes, probe)
		done <- result{res, err}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				stop()
				t.Fatalf("%s (%+v)", what, <-done)
			}
		}
	}
	waitFor("not every client subscribed", func() bool { return probe.subscribed.Load() == int64(len(WireModes)) })
	feed.Rate, feed.Duration = 200, 500*time.Millisecond // 100 updates
	fr, err := RunFeed(t.Context(), feed)
	if err != nil || fr.Sent != 100 {
		t.Fatalf("feed: %+v, %v", fr, err)
	}
	waitFor("not every update counted", func() bool { return probe.updates.Load() == int64(len(WireModes))*100 })
	stop()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	by := map[string]float64{}
	for _, m := range r.res {
		t.Logf("%-26s %d updates, %.1f B/update", m.Mode, m.Updates, m.PerUpdate)
		if m.Updates != 100 {
			t.Errorf("%s: %d updates, want 100", m.Mode, m.Updates)
		}
		by[m.Mode] = m.PerUpdate
	}
	for _, less := range [][2]string{
		{"full JSON, channel id", "full JSON"},
		{"Protobuf full", "full JSON, channel id"},
		{"Protobuf delta", "delta"},
		{"delta", "full JSON, channel id"},
		{"Protobuf delta", "Protobuf full"},
		{"Protobuf full + deflate", "Protobuf full"},
	} {
		if by[less[0]] >= by[less[1]] {
			t.Errorf("%s %.1f B/update, not below %s %.1f", less[0], by[less[0]], less[1], by[less[1]])
		}
	}
}
