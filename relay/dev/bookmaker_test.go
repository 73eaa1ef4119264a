package dev

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBookmaker: a bet record whose odds were current is accepted, then
// settled; one whose market moved is rejected; a duplicate record (same
// idempotency key) gets no second answer. Results are keyed by user.
func TestBookmaker(t *testing.T) {
	kafka, err := StartKafka(0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	brokers := kafka.ListenAddrs()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	book, err := NewBookmaker(ctx, brokers, 200*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { book.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("bets"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	bet := func(id string, seen, latest int) *kgo.Record {
		v := `{"bet_id":"` + id + `","user":"ann","bet":{"channel":"odds:f:l:m:1x2","selection":"home","odds":2.5,"stake":4},` +
			`"odds_seen":{"offset":` + itoa(seen) + `},"odds_latest":{"offset":` + itoa(latest) + `}}`
		return &kgo.Record{Key: []byte("ann"), Value: []byte(v), Headers: []kgo.RecordHeader{{Key: "idempotency-key", Value: []byte("ann/" + id)}}}
	}
	if err := prod.ProduceSync(ctx, bet("b1", 7, 7), bet("b2", 7, 9), bet("b1", 7, 7)).FirstErr(); err != nil {
		t.Fatal(err)
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("results"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []BetResult
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second) // past the settlement, so extra answers would show
	defer pcancel()
	for pctx.Err() == nil {
		cons.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			var res BetResult
			if json.Unmarshal(r.Value, &res) != nil || string(r.Key) != "ann" {
				t.Errorf("result %q keyed %q", r.Value, r.Key)
			}
			got = append(got, res)
		})
	}
	types := map[string]string{}
	for _, r := range got {
		types[r.BetID] += r.Type + " "
	}
	if len(got) != 3 || types["b1"] != "accepted settled " || types["b2"] != "rejected " {
		t.Fatalf("results %+v: want b1 accepted then settled, b2 rejected, nothing else", got)
	}
	for _, r := range got {
		if r.Type == "settled" && (r.Result == "won") != (r.Payout == 10) {
			t.Fatalf("settlement %+v: a win pays stake × odds", r)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
