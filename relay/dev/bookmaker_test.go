package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBookmaker: against a real (embedded) Kafka, bets at the book's price
// are accepted and then settled; bets above it, on a suspended market, on
// one closed by a tombstone or on an unknown selection are rejected; a market the book has not priced is taken
// on trust; a bet on a channel outside its Markets (a benchmark's) is
// rejected as not a dev market; a duplicate record (same idempotency key)
// gets no second answer.
// Results are keyed by user.
func TestBookmaker(t *testing.T) {
	brokers := startBookKafka(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prod := newProducer(t, brokers)
	market := func(channel, status string, sels ...Selection) *kgo.Record {
		v, _ := json.Marshal(MarketUpdate{Match: "m", Market: "x", Status: status, Selections: sels})
		return &kgo.Record{Topic: "odds", Key: []byte("m"), Value: v, Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(channel)}}}
	}
	// Priced before the book starts: it reads back into the odds topic.
	if err := prod.ProduceSync(ctx,
		market("odds:f:l:m:1x2", "open", Selection{ID: "home", Odds: 2.5}, Selection{ID: "away", Odds: 3}),
		market("odds:f:l:m:btts", "suspended", Selection{ID: "yes", Odds: 1.8}, Selection{ID: "no", Odds: 1.9}),
		market("odds:f:l:m:corner", "open", Selection{ID: "home", Odds: 1.8}, Selection{ID: "away", Odds: 1.9}),
		&kgo.Record{Topic: "odds", Key: []byte("m"), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:f:l:m:corner")}}},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	book, err := NewBookmaker(ctx, brokers, BookmakerConfig{BetsTopic: "bets", OddsTopic: "odds", ResultsTopic: "results", SettleAfter: 200 * time.Millisecond,
		Markets: map[string]bool{"odds:f:l:m:1x2": true, "odds:f:l:m:btts": true, "odds:f:l:m:corner": true, "odds:f:l:other:1x2": true}}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { book.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// One user: one bets partition, answered in order, so the sentinel's
	// answer comes after any (wrong) answer to the duplicate.
	noKey := betRecord("ann", "b0", "odds:f:l:m:1x2", "home", 2.5)
	noKey.Headers = nil
	if err := prod.ProduceSync(ctx,
		betRecord("ann", "b1", "odds:f:l:m:1x2", "home", 2.5),
		betRecord("ann", "b2", "odds:f:l:m:1x2", "home", 2.6),
		betRecord("ann", "b3", "odds:f:l:m:btts", "yes", 1.8),
		betRecord("ann", "b4", "odds:f:l:m:1x2", "draw", 3),
		betRecord("ann", "b5", "odds:f:l:other:1x2", "home", 4),
		betRecord("ann", "b6", "odds:basketball:nba:m-3:moneyline", "home", 1.9),
		betRecord("ann", "b7", "odds:f:l:m:corner", "home", 1.8),
		betRecord("ann", "b1", "odds:f:l:m:1x2", "home", 2.5),
		noKey,
		betRecord("ann", "sentinel", "odds:f:l:m:1x2", "draw", 3),
	).FirstErr(); err != nil {
		t.Fatal(err)
	}

	byBet := map[string][]BetResult{}
	readResults(t, brokers, func(r *kgo.Record, res BetResult) bool {
		if string(r.Key) != "ann" || res.User != "ann" || res.TS == 0 {
			t.Errorf("result %s keyed %q", r.Value, r.Key)
		}
		byBet[res.BetID] = append(byBet[res.BetID], res)
		return len(byBet["sentinel"]) > 0 && len(byBet["b1"]) >= 2 && len(byBet["b5"]) >= 2
	})
	for _, tc := range []struct{ bet, want string }{
		{"b1", "accepted settled"},
		{"b2", "rejected odds moved to 2.50"},
		{"b3", "rejected market suspended"},
		{"b4", "rejected unknown selection"},
		{"b5", "accepted settled"},
		{"b6", "rejected not a dev market: odds:basketball:nba:m-3:moneyline"},
		{"b7", "rejected market closed"},
		{"b0", ""},
		{"sentinel", "rejected unknown selection"},
	} {
		var got []string
		for _, r := range byBet[tc.bet] {
			got = append(got, strings.TrimSpace(r.Type+" "+r.Reason))
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: answers %q, want %q", tc.bet, got, tc.want)
		}
	}
	for _, bet := range []string{"b1", "b5"} {
		rs := byBet[bet]
		if len(rs) != 2 {
			continue
		}
		s, want := rs[1], rs[0]
		want.Type, want.Result, want.Payout, want.TS = s.Type, s.Result, s.Payout, s.TS
		if s != want || (s.Result == "won") != (s.Payout == round2(s.Stake*s.Odds)) || (s.Result != "won" && s.Result != "lost") {
			t.Errorf("%s: settled %+v after %+v: a win pays stake × odds, a loss nothing", bet, s, rs[0])
		}
	}
}

// TestBookmakerShutdown: Run returns when its context ends although a
// settlement is pending, which is dropped.
func TestBookmakerShutdown(t *testing.T) {
	brokers := startBookKafka(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := DefaultBookmakerConfig()
	cfg.SettleAfter = time.Hour
	book, err := NewBookmaker(ctx, brokers, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { book.Run(ctx); close(done) }()
	if err := newProducer(t, brokers).ProduceSync(ctx, betRecord("bob", "b1", "odds:f:l:m:1x2", "home", 2)).FirstErr(); err != nil {
		t.Fatal(err)
	}
	readResults(t, brokers, func(_ *kgo.Record, res BetResult) bool { return res.Type == "accepted" })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestBookmakerConfig(t *testing.T) {
	for _, tc := range []struct {
		change func(*BookmakerConfig)
		want   string
	}{
		{func(c *BookmakerConfig) { c.SettleAfter = 0 }, "SettleAfter"},
		{func(c *BookmakerConfig) { c.BetsTopic = "" }, "BetsTopic"},
	} {
		cfg := DefaultBookmakerConfig()
		tc.change(&cfg)
		if _, err := NewBookmaker(context.Background(), []string{"127.0.0.1:1"}, cfg, quietLog()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want one naming %s", err, tc.want)
		}
	}
}

func startBookKafka(t *testing.T) []string {
	t.Helper()
	kafka, err := StartKafka(0, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	return kafka.ListenAddrs()
}

func newProducer(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("bets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// betRecord is a bet record as the relay writes it (docs/bets.md).
func betRecord(user, id, channel, selection string, odds float64) *kgo.Record {
	v := fmt.Sprintf(`{"bet_id":%q,"user":%q,"node":"t","bet":{"bet_id":%q,"channel":%q,"selection":%q,"odds":%v,"stake":4},`+
		`"odds_seen":null,"odds_latest":null}`, id, user, id, channel, selection, odds)
	return &kgo.Record{Key: []byte(user), Value: []byte(v), Headers: []kgo.RecordHeader{
		{Key: "bet-id", Value: []byte(id)}, {Key: "user", Value: []byte(user)}, {Key: "idempotency-key", Value: []byte(user + "/" + id)}}}
}

// readResults reads the results topic from its start until enough returns
// true, or fails the test after 20 s.
func readResults(t *testing.T, brokers []string, enough func(*kgo.Record, BetResult) bool) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("results"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("results: not all answers within 20s")
		}
		stop := false
		fs.EachRecord(func(r *kgo.Record) {
			var res BetResult
			if err := json.Unmarshal(r.Value, &res); err != nil {
				t.Errorf("result %q: %v", r.Value, err)
			}
			if enough(r, res) {
				stop = true
			}
		})
		if stop {
			return
		}
	}
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
