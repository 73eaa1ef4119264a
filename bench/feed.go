package bench

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// FeedConfig is a fixed-rate feed of timestamped, sequenced records.
type FeedConfig struct {
	Brokers  []string
	Topic    string
	Channels []string // updates go round-robin over these
	Rate     float64  // records per second, all channels together
	Size     int      // approximate JSON value size in bytes
	Duration time.Duration
	// Fault injection, to prove the harness fails: the record that would
	// carry sequence number SkipSeq of the first channel is not produced,
	// and the one carrying RepeatSeq is produced twice (0: none).
	SkipSeq, RepeatSeq int64
	// PriorityEvery marks every n-th record as priority (0: none): header
	// priority: 1, and "p":1 in the value so clients can count them.
	PriorityEvery int
}

// FeedResult says what the feed sent.
type FeedResult struct {
	Sent   uint64 `json:"sent"`
	Failed uint64 `json:"failed"`
	// Behind is how far the producer fell behind its schedule at worst.
	Behind time.Duration `json:"behind"`
	// Final is each channel's last sequence number (its final value);
	// Priority its number of priority records.
	Final    map[string]int64 `json:"final"`
	Priority map[string]int64 `json:"priority"`
}

// RunFeed produces until cfg.Duration has passed. Each value is
// {"seq":<per-channel sequence>,"t":<intended send time, unix ns>,"pad":"…"}.
func RunFeed(ctx context.Context, cfg FeedConfig) (FeedResult, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ClientID("edgebench-feed"), kgo.ProducerLinger(time.Millisecond),
		kgo.RecordDeliveryTimeout(10*time.Second))
	if err != nil {
		return FeedResult{}, err
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = cl.Ping(pctx)
	cancel()
	if err != nil {
		return FeedResult{}, fmt.Errorf("kafka at %v: %w", cfg.Brokers, err)
	}
	var res FeedResult
	var failed atomic.Uint64
	pad := strings.Repeat("o", max(cfg.Size-60, 1))
	seqs := make([]int64, len(cfg.Channels))
	prioCount := make([]int64, len(cfg.Channels))
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	start := time.Now()
	for i := int64(0); ; i++ {
		intended := start.Add(time.Duration(i) * interval)
		if intended.Sub(start) >= cfg.Duration {
			break
		}
		if d := time.Until(intended); d > 0 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(d):
			}
		} else {
			res.Behind = max(res.Behind, -d)
		}
		ci := int(i) % len(cfg.Channels)
		seqs[ci]++
		ch := cfg.Channels[ci]
		prio := cfg.PriorityEvery > 0 && i%int64(cfg.PriorityEvery) == 0
		p := ""
		if prio {
			p = `"p":1,`
			prioCount[ci]++
		}
		r := &kgo.Record{Topic: cfg.Topic, Key: []byte(ch),
			Value:   fmt.Appendf(nil, `{"seq":%d,"t":%d,%s"pad":"%s"}`, seqs[ci], intended.UnixNano(), p, pad),
			Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}}}
		if prio {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "priority", Value: []byte("1")})
		}
		copies := 1
		switch {
		case ci == 0 && seqs[ci] == cfg.SkipSeq:
			copies = 0
		case ci == 0 && seqs[ci] == cfg.RepeatSeq:
			copies = 2
		}
		for range copies {
			cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				}
			})
		}
		res.Sent++
	}
	if err := cl.Flush(ctx); err != nil {
		return res, err
	}
	res.Failed = failed.Load()
	res.Final, res.Priority = map[string]int64{}, map[string]int64{}
	for i, ch := range cfg.Channels {
		res.Final[ch], res.Priority[ch] = seqs[i], prioCount[i]
	}
	return res, nil
}
