package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Bookmaker is dev mode's simulated betting backend: what a real backend
// team runs behind the bets topic. It reads every bet record produced while
// it runs and answers on the results topic, keyed by user, so the answer
// reaches the bettor's personal channel (bets:#<user>) on any relay node:
//
//   - at once, "accepted", or "rejected" with reason "odds changed" when
//     the market moved between what the app showed (odds_seen) and the
//     bet's arrival (odds_latest);
//   - SettleAfter later, for an accepted bet, "settled" with result "won"
//     (payout stake × odds) or "lost", won with probability 1/odds.
//
// It deduplicates on the records' idempotency-key header, as docs/bets.md
// asks of every consumer. Run blocks; pending settlements are dropped when
// its context ends.
type Bookmaker struct {
	client      *kgo.Client
	settleAfter time.Duration
	log         *slog.Logger

	seen     map[string]bool // idempotency keys, bounded by forgetting in order
	seenFIFO []string
	timers   sync.WaitGroup
}

// BetResult is a message on the results topic.
type BetResult struct {
	Type      string  `json:"type"` // accepted, rejected, settled
	BetID     string  `json:"bet_id"`
	User      string  `json:"user"`
	Channel   string  `json:"channel"`
	Selection string  `json:"selection"`
	Odds      float64 `json:"odds"`
	Stake     float64 `json:"stake"`
	Reason    string  `json:"reason,omitempty"` // rejected
	Result    string  `json:"result,omitempty"` // settled: won or lost
	Payout    float64 `json:"payout,omitempty"` // settled and won
	TS        int64   `json:"ts"`               // unix milliseconds
}

const maxSeen = 100_000

// NewBookmaker positions a consumer at the current end of the bets topic
// (bets placed from now on are answered) and a producer for results.
func NewBookmaker(ctx context.Context, brokers []string, settleAfter time.Duration, log *slog.Logger) (*Bookmaker, error) {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, "bets")
	adm.Close()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("dev bookmaker: bets topic end offsets: %w", err)
	}
	start := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { start[o.Partition] = kgo.NewOffset().At(o.Offset) })
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("edgerelay-dev-bookmaker"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"bets": start}), kgo.DefaultProduceTopic("results"))
	if err != nil {
		return nil, err
	}
	return &Bookmaker{client: cl, settleAfter: settleAfter, log: log, seen: map[string]bool{}}, nil
}

// Run answers bets until ctx is done, then closes the clients.
func (b *Bookmaker) Run(ctx context.Context) {
	defer b.client.Close()
	defer b.timers.Wait()
	for {
		fs := b.client.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			b.log.Warn("dev bookmaker: fetch failed", "topic", topic, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) { b.handle(ctx, r) })
	}
}

func (b *Bookmaker) handle(ctx context.Context, r *kgo.Record) {
	key := ""
	for _, h := range r.Headers {
		if h.Key == "idempotency-key" {
			key = string(h.Value)
		}
	}
	if key == "" || b.seen[key] {
		return // not a relay's bet record, or a duplicate: already answered
	}
	b.seen[key] = true
	b.seenFIFO = append(b.seenFIFO, key)
	if len(b.seenFIFO) > maxSeen {
		delete(b.seen, b.seenFIFO[0])
		b.seenFIFO = b.seenFIFO[1:]
	}
	var rec struct {
		BetID string `json:"bet_id"`
		User  string `json:"user"`
		Bet   struct {
			Channel   string  `json:"channel"`
			Selection string  `json:"selection"`
			Odds      float64 `json:"odds"`
			Stake     float64 `json:"stake"`
		} `json:"bet"`
		Seen   *struct{ Offset int64 } `json:"odds_seen"`
		Latest *struct{ Offset int64 } `json:"odds_latest"`
	}
	if err := json.Unmarshal(r.Value, &rec); err != nil || rec.User == "" {
		b.log.Warn("dev bookmaker: skipping a bet record it cannot read", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	res := BetResult{Type: "accepted", BetID: rec.BetID, User: rec.User, Channel: rec.Bet.Channel,
		Selection: rec.Bet.Selection, Odds: rec.Bet.Odds, Stake: rec.Bet.Stake}
	if rec.Seen == nil || rec.Latest == nil || rec.Seen.Offset != rec.Latest.Offset {
		res.Type, res.Reason = "rejected", "odds changed"
	}
	b.send(ctx, res)
	if res.Type != "accepted" {
		return
	}
	res.Type, res.Result = "settled", "lost"
	if won(key, rec.Bet.Odds) {
		res.Result, res.Payout = "won", rec.Bet.Stake*rec.Bet.Odds
	}
	b.timers.Add(1)
	go func() {
		defer b.timers.Done()
		select {
		case <-ctx.Done():
		case <-time.After(b.settleAfter):
			b.send(ctx, res)
		}
	}()
}

// won decides a bet from its key, so a settlement is reproducible; the
// chance is 1/odds.
func won(key string, odds float64) bool {
	h := fnv.New64a()
	h.Write([]byte(key))
	return float64(h.Sum64()%1_000_000)/1_000_000 < 1/odds
}

func (b *Bookmaker) send(ctx context.Context, res BetResult) {
	res.TS = time.Now().UnixMilli()
	v, _ := json.Marshal(res) // plain values
	b.client.Produce(ctx, &kgo.Record{Key: []byte(res.User), Value: v}, func(_ *kgo.Record, err error) {
		if err != nil && ctx.Err() == nil {
			b.log.Warn("dev bookmaker: producing a result failed", "bet_id", res.BetID, "err", err)
		}
	})
}
