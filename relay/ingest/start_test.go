package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/fanout"
)

// syncCollect keeps published offsets; safe for Run's goroutine and the
// test's.
type syncCollect struct {
	mu   sync.Mutex
	offs []int64
}

func (c *syncCollect) Publish(p *fanout.Publication) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offs = append(c.offs, p.Pos.Offset)
	return nil
}
func (c *syncCollect) Append(*fanout.Publication) error { return nil }
func (c *syncCollect) KeepsHistory() bool               { return false }

func (c *syncCollect) offsets() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.offs...)
}

// TestLateStartPosition: the partition was empty when the node listed
// offsets on start, but franz-go resolved "the last 5 records" only after
// 50 had arrived (a broker down at start delays it by seconds). Every
// record since the listing is published, once and in order, not just the
// last 5.
func TestLateStartPosition(t *testing.T) {
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "odds"))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n = 50
	for i := range n {
		r := &kgo.Record{Topic: "odds", Value: fmt.Appendf(nil, `{"i":%d}`, i), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:a")}}}
		if err := prod.ProduceSync(t.Context(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.Topics = []Topic{{Name: "odds"}}
	cfg.Start.LastRecords = 5
	pub := &syncCollect{}
	in, err := New(cfg, []kgo.Opt{kgo.SeedBrokers(kafka.ListenAddrs()...)}, pub, &countHooks{}, 255, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// What the listing on start saw, before any record arrived.
	in.targets, in.startAt = map[topicPartition]int64{}, map[topicPartition]int64{{"odds", 0}: 0}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for len(pub.offsets()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := pub.offsets()
	for i, off := range got {
		if off != int64(i) {
			t.Fatalf("published offsets %v: want 0..%d, each once, in order", got, n-1)
		}
	}
	if len(got) != n {
		t.Fatalf("published %d records (%v), want all %d", len(got), got, n)
	}
}
