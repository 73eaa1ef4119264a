package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
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
	// Odds, when set, makes the records instead (a realistic odds and
	// scores feed; Channels must be Odds.Channels() and Size is ignored).
	Odds *OddsFeed
	// Record, when set, gets every record produced as a JSON line
	// {"ns":<offset from start>,"channel":…,"priority":…,"value":{…}},
	// for Replay.
	Record io.Writer
	// Fault injection, to prove the harness fails: the record that would
	// carry sequence number SkipSeq of the first channel is not produced,
	// and the one carrying RepeatSeq is produced twice (0: none).
	SkipSeq, RepeatSeq int64
	// PriorityEvery marks every n-th record as priority (0: none): header
	// priority: 1, and "p":1 in the value so clients can count them.
	PriorityEvery int
	// Key, when set, is every record's Kafka key (a map's entries share
	// one partition: its positions are then Kafka's); default: the
	// record's channel.
	Key string
}

// FeedResult says what the feed sent.
type FeedResult struct {
	Sent   uint64 `json:"sent"`
	Failed uint64 `json:"failed"`
	// Behind is how far the producer fell behind its schedule at worst.
	Behind time.Duration `json:"behind"`
	// SlowestAck is the longest a record took from Produce to the
	// broker's acknowledgement: a stall there ages every record behind
	// it before the relay can see it.
	SlowestAck time.Duration `json:"slowest_ack"`
	// Final is each channel's last sequence number (its final value);
	// Priority its number of priority records.
	Final    map[string]int64 `json:"final"`
	Priority map[string]int64 `json:"priority"`
}

// newFeedProducer connects a producer for a feed or a replay and checks
// that a broker answers, so that a run against an unreachable Kafka fails
// at once instead of retrying every record.
func newFeedProducer(ctx context.Context, brokers []string, id string) (*kgo.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID(id), kgo.ProducerLinger(time.Millisecond),
		kgo.RecordDeliveryTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka at %v: %w", brokers, err)
	}
	return cl, nil
}

// RunFeed produces until cfg.Duration has passed. Each value is
// {"seq":<per-channel sequence>,"t":<intended send time, unix ns>,"pad":"…"}.
func RunFeed(ctx context.Context, cfg FeedConfig) (FeedResult, error) {
	cl, err := newFeedProducer(ctx, cfg.Brokers, "edgebench-feed")
	if err != nil {
		return FeedResult{}, err
	}
	defer cl.Close()
	var res FeedResult
	var a acks
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
		if err := waitUntil(ctx, intended, &res.Behind); err != nil {
			return res, err
		}
		var (
			ci    int
			value []byte
			prio  bool
		)
		if cfg.Odds != nil {
			ci, value, prio = cfg.Odds.Next(func(ci int) int64 { seqs[ci]++; return seqs[ci] }, intended.UnixNano())
		} else {
			ci = int(i) % len(cfg.Channels)
			seqs[ci]++
			prio = cfg.PriorityEvery > 0 && i%int64(cfg.PriorityEvery) == 0
			p := ""
			if prio {
				p = `"p":1,`
			}
			value = fmt.Appendf(nil, `{"seq":%d,"t":%d,%s"pad":"%s"}`, seqs[ci], intended.UnixNano(), p, pad)
		}
		if prio {
			prioCount[ci]++
		}
		ch := cfg.Channels[ci]
		r := &kgo.Record{Topic: cfg.Topic, Key: []byte(cmpOr(cfg.Key, ch)), Value: value, Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}}}
		if prio {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "priority", Value: []byte("1")})
		}
		if cfg.Record != nil {
			fmt.Fprintf(cfg.Record, "{\"ns\":%d,\"channel\":%q,\"priority\":%t,\"value\":%s}\n", intended.Sub(start), ch, prio, value)
		}
		copies := 1
		var dup *kgo.Record
		switch {
		case ci == 0 && seqs[ci] == cfg.SkipSeq:
			copies = 0
		case ci == 0 && seqs[ci] == cfg.RepeatSeq:
			copies = 2
			c := *r
			dup = &c
		}
		for k := range copies {
			rec := r
			if k > 0 {
				// franz-go owns a record until its promise runs: a repeat
				// is a record of its own, copied before the first is produced.
				rec = dup
			}
			a.produce(ctx, cl, rec)
		}
		res.Sent++
	}
	if err := cl.Flush(ctx); err != nil {
		return res, err
	}
	a.report(&res)
	res.Final, res.Priority = map[string]int64{}, map[string]int64{}
	for i, ch := range cfg.Channels {
		res.Final[ch], res.Priority[ch] = seqs[i], prioCount[i]
	}
	return res, nil
}

// ReplayConfig replays a recorded feed (FeedConfig.Record) into Kafka.
type ReplayConfig struct {
	Brokers []string
	Topic   string
	From    io.Reader
	Speed   float64 // 2: twice as fast as recorded
}

var tField = regexp.MustCompile(`"t":\d+`)

// Replay produces the recorded records at their recorded offsets divided
// by Speed, with each value's "t" set to its new intended send time, so
// clients measure latency against the replay. Sequence numbers stay as
// recorded: replay into channels that start fresh, or expect clients to
// see them restart.
func Replay(ctx context.Context, cfg ReplayConfig) (FeedResult, error) {
	cl, err := newFeedProducer(ctx, cfg.Brokers, "edgebench-replay")
	if err != nil {
		return FeedResult{}, err
	}
	defer cl.Close()
	res := FeedResult{Final: map[string]int64{}, Priority: map[string]int64{}}
	var a acks
	sc := bufio.NewScanner(cfg.From)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	start := time.Now()
	for line := 1; sc.Scan(); line++ {
		var rec struct {
			NS       time.Duration   `json:"ns"`
			Channel  string          `json:"channel"`
			Priority bool            `json:"priority"`
			Value    json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Channel == "" {
			return res, fmt.Errorf("recorded feed, line %d: not a record (%v)", line, err)
		}
		intended := start.Add(time.Duration(float64(rec.NS) / cfg.Speed))
		if err := waitUntil(ctx, intended, &res.Behind); err != nil {
			return res, err
		}
		value := tField.ReplaceAll(rec.Value, fmt.Appendf(nil, `"t":%d`, intended.UnixNano()))
		r := &kgo.Record{Topic: cfg.Topic, Key: []byte(rec.Channel), Value: value, Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(rec.Channel)}}}
		if rec.Priority {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "priority", Value: []byte("1")})
			res.Priority[rec.Channel]++
		}
		var seq struct{ Seq int64 }
		json.Unmarshal(rec.Value, &seq)
		res.Final[rec.Channel] = seq.Seq
		a.produce(ctx, cl, r)
		res.Sent++
	}
	if err := sc.Err(); err != nil {
		return res, err
	}
	if err := cl.Flush(ctx); err != nil {
		return res, err
	}
	a.report(&res)
	return res, nil
}

// acks counts a feed's failed records and notes its slowest
// acknowledgement. Promises run on franz-go's goroutines.
type acks struct {
	failed  atomic.Uint64
	slowest atomic.Int64 // nanoseconds
}

func (a *acks) produce(ctx context.Context, cl *kgo.Client, r *kgo.Record) {
	start := time.Now()
	cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
		if err != nil {
			a.failed.Add(1)
			return
		}
		d := int64(time.Since(start))
		for old := a.slowest.Load(); d > old && !a.slowest.CompareAndSwap(old, d); old = a.slowest.Load() {
		}
	})
}

func (a *acks) report(res *FeedResult) {
	res.Failed, res.SlowestAck = a.failed.Load(), time.Duration(a.slowest.Load())
}

// waitUntil sleeps until t, or notes in behind how late it already is.
func waitUntil(ctx context.Context, t time.Time, behind *time.Duration) error {
	d := time.Until(t)
	if d <= 0 {
		*behind = max(*behind, -d)
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
