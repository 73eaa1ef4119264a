package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BookmakerConfig configures the simulated bookmaker.
type BookmakerConfig struct {
	BetsTopic    string // the relay's bets.topic
	OddsTopic    string // where the prices are
	ResultsTopic string // read by the relay with channel template bets:#{key}
	// SettleAfter is how long after accepting a bet it is settled.
	SettleAfter time.Duration
	// Markets, when not nil, are the only channels the book takes bets
	// on (dev mode: the simulator's markets); a bet on any other channel
	// (a benchmark's, one produced by hand) is rejected with the reason
	// "not a dev market: <channel>".
	Markets map[string]bool
}

// DefaultBookmakerConfig is dev mode's topics and a 4 s settlement.
func DefaultBookmakerConfig() BookmakerConfig {
	return BookmakerConfig{BetsTopic: "bets", OddsTopic: "odds", ResultsTopic: "results", SettleAfter: 4 * time.Second}
}

func (c BookmakerConfig) validate() error {
	switch {
	case c.BetsTopic == "" || c.OddsTopic == "" || c.ResultsTopic == "":
		return fmt.Errorf("dev bookmaker: BetsTopic, OddsTopic and ResultsTopic are required")
	case c.SettleAfter <= 0:
		return fmt.Errorf("dev bookmaker: SettleAfter must be positive, not %v", c.SettleAfter)
	}
	return nil
}

// Bookmaker is dev mode's simulated betting backend: what a real backend
// team runs behind the bets topic. It answers every bet record produced
// while it runs on the results topic, keyed by user, so the answer reaches
// the bettor's personal channel (bets:#<user>) on any relay node:
//
//   - at once, "accepted"; or "rejected" with a reason: "not a dev
//     market: <channel>" for a channel outside cfg.Markets, or when the
//     book's own current price for the market says no: "market suspended" (or
//     "market closed" after a tombstone of the market), "unknown
//     selection", or "odds moved to 1.95" when the bet asks for more than
//     the selection pays now (the price shortened after the bettor saw
//     it: a move against the house). A market the book has not priced
//     since it started is taken on the relay's word. The bet record's
//     odds_seen and odds_latest are positions, not prices, so the book
//     keeps the prices itself, from the odds topic;
//   - SettleAfter later, for an accepted bet, "settled" with result "won"
//     (payout stake × odds, in cents) or "lost"; a bet wins with
//     probability 1/odds, drawn from its idempotency key so a replay
//     settles it the same way.
//
// Bets are read from the end of the bets topic as it was when
// NewBookmaker returned, which Run calls before the relay serves: every bet
// of this run is answered, and bets of earlier runs kept in a data
// directory, answered then, are not answered again (the book remembers
// nothing across runs). Prices are read from the last oddsBacklog records
// of every odds partition, enough to know every market at once.
//
// It deduplicates on the records' idempotency-key header, as docs/bets.md
// asks of every consumer, remembering the last maxSeen keys.
//
// Concurrency: Run consumes and decides on its goroutine and settles on a
// second one it starts; both end, and pending settlements are dropped,
// when its context is done. Run may be called once.
type Bookmaker struct {
	cfg    BookmakerConfig
	client *kgo.Client
	log    *slog.Logger

	// Owned by Run's goroutine.
	prices map[string]MarketUpdate // market channel -> latest
	seen   map[string]bool         // idempotency keys of the last maxSeen bets
	order  []string                // seen's keys as a ring, oldest at next
	next   int
	settle chan settlement
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

type settlement struct {
	due time.Time
	res BetResult
}

const (
	maxSeen     = 100_000
	oddsBacklog = 1_000
)

// NewBookmaker positions a consumer at the current end of the bets topic
// and near the end of the odds topic, with a producer for results.
func NewBookmaker(ctx context.Context, brokers []string, cfg BookmakerConfig, log *slog.Logger) (*Bookmaker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, fmt.Errorf("dev bookmaker: %w", err)
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, cfg.BetsTopic, cfg.OddsTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("dev bookmaker: end offsets of %s and %s: %w", cfg.BetsTopic, cfg.OddsTopic, err)
	}
	start := map[string]map[int32]kgo.Offset{cfg.BetsTopic: {}, cfg.OddsTopic: {}}
	ends.Each(func(o kadm.ListedOffset) {
		at := o.Offset
		if o.Topic == cfg.OddsTopic {
			at = max(0, at-oddsBacklog) // below the log start: kgo resets to the start
		}
		start[o.Topic][o.Partition] = kgo.NewOffset().At(at)
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("edgerelay-dev-bookmaker"),
		kgo.ConsumePartitions(start), kgo.DefaultProduceTopic(cfg.ResultsTopic))
	if err != nil {
		return nil, fmt.Errorf("dev bookmaker: %w", err)
	}
	return &Bookmaker{cfg: cfg, client: cl, log: log, prices: map[string]MarketUpdate{}, seen: map[string]bool{},
		settle: make(chan settlement)}, nil
}

// Run answers bets until ctx is done, then closes the client.
func (b *Bookmaker) Run(ctx context.Context) {
	defer b.client.Close()
	settled := make(chan struct{})
	go func() { defer close(settled); b.settleLoop(ctx) }()
	defer func() { <-settled }()
	for {
		fs := b.client.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			b.log.Warn("dev bookmaker: fetch failed", "topic", topic, "partition", p, "err", err)
		})
		// Prices first: a bet in this fetch may be on a price in it.
		fs.EachTopic(func(t kgo.FetchTopic) {
			if t.Topic == b.cfg.OddsTopic {
				t.EachRecord(b.price)
			}
		})
		fs.EachTopic(func(t kgo.FetchTopic) {
			if t.Topic == b.cfg.BetsTopic {
				t.EachRecord(func(r *kgo.Record) { b.bet(ctx, r) })
			}
		})
	}
}

// price keeps the latest odds of a market record; other records of the
// topic (match channels) have no selections and are skipped. A tombstone
// closes the market.
func (b *Bookmaker) price(r *kgo.Record) {
	channel := header(r, "channel")
	if channel != "" && r.Value == nil {
		b.prices[channel] = MarketUpdate{Status: "closed"}
		return
	}
	var u MarketUpdate
	if channel == "" || json.Unmarshal(r.Value, &u) != nil || len(u.Selections) == 0 {
		return
	}
	b.prices[channel] = u
}

func (b *Bookmaker) bet(ctx context.Context, r *kgo.Record) {
	key := header(r, "idempotency-key")
	if key == "" {
		b.log.Warn("dev bookmaker: skipping a record without idempotency-key", "partition", r.Partition, "offset", r.Offset)
		return
	}
	if b.seen[key] {
		return // a duplicate: answered already
	}
	b.remember(key)
	var rec struct {
		BetID string `json:"bet_id"`
		User  string `json:"user"`
		Bet   struct {
			Channel   string  `json:"channel"`
			Selection string  `json:"selection"`
			Odds      float64 `json:"odds"`
			Stake     float64 `json:"stake"`
		} `json:"bet"`
	}
	if err := json.Unmarshal(r.Value, &rec); err != nil || rec.User == "" {
		b.log.Warn("dev bookmaker: skipping a bet record it cannot read", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	res := BetResult{Type: "accepted", BetID: rec.BetID, User: rec.User, Channel: rec.Bet.Channel,
		Selection: rec.Bet.Selection, Odds: rec.Bet.Odds, Stake: rec.Bet.Stake}
	if reason := b.refusal(res); reason != "" {
		res.Type, res.Reason = "rejected", reason
	}
	b.send(ctx, res)
	if res.Type != "accepted" {
		return
	}
	res.Type, res.Result = "settled", "lost"
	if won(key, res.Odds) {
		res.Result, res.Payout = "won", math.Round(res.Stake*res.Odds*100)/100
	}
	select {
	case b.settle <- settlement{due: time.Now().Add(b.cfg.SettleAfter), res: res}:
	case <-ctx.Done():
	}
}

// refusal is why the book rejects the bet at its current prices, or "".
func (b *Bookmaker) refusal(bet BetResult) string {
	if b.cfg.Markets != nil && !b.cfg.Markets[bet.Channel] {
		return "not a dev market: " + bet.Channel
	}
	m, ok := b.prices[bet.Channel]
	if !ok {
		return ""
	}
	if m.Status != "" && m.Status != "open" {
		return "market " + m.Status
	}
	for _, s := range m.Selections {
		if s.ID == bet.Selection {
			if bet.Odds > s.Odds+1e-9 {
				return fmt.Sprintf("odds moved to %.2f", s.Odds)
			}
			return ""
		}
	}
	return "unknown selection"
}

func (b *Bookmaker) remember(key string) {
	if len(b.order) < maxSeen {
		b.order = append(b.order, key)
	} else {
		delete(b.seen, b.order[b.next])
		b.order[b.next] = key
		b.next = (b.next + 1) % maxSeen
	}
	b.seen[key] = true
}

// settleLoop sends settlements when they are due. SettleAfter is the same
// for every bet, so they fall due in the order they arrive: a FIFO and one
// timer serve any number of pending bets.
func (b *Bookmaker) settleLoop(ctx context.Context) {
	var queue []settlement
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var due <-chan time.Time
		if len(queue) > 0 {
			timer.Reset(time.Until(queue[0].due))
			due = timer.C
		}
		select {
		case s := <-b.settle:
			queue = append(queue, s)
		case <-due:
			for len(queue) > 0 && !time.Now().Before(queue[0].due) {
				b.send(ctx, queue[0].res)
				queue = queue[1:]
			}
		case <-ctx.Done():
			return
		}
	}
}

// won decides a bet from its key, so a settlement is reproducible; the
// chance is 1/odds.
func won(key string, odds float64) bool {
	h := fnv.New64a()
	h.Write([]byte(key))
	return float64(h.Sum64()%1_000_000)/1_000_000 < 1/odds
}

// send produces res keyed by its user; safe from both goroutines.
func (b *Bookmaker) send(ctx context.Context, res BetResult) {
	res.TS = time.Now().UnixMilli()
	v, _ := json.Marshal(res) // plain values
	b.client.Produce(ctx, &kgo.Record{Key: []byte(res.User), Value: v}, func(_ *kgo.Record, err error) {
		if err != nil && ctx.Err() == nil {
			b.log.Warn("dev bookmaker: producing a result failed", "bet_id", res.BetID, "err", err)
		}
	})
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
