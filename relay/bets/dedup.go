package bets

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// This file is the retry memory across nodes: every node reads the bets
// topic back and remembers each record's answer (from its headers and
// position; values are dropped) as if it had produced it. See the package
// doc for the model.

// reader is the state of Desk.Run: where it is in each partition and the
// bets held until it has caught up.
type reader struct {
	kick     chan struct{} // buffered 1: a held bet wants a sync round
	progress chan struct{} // buffered 1: the fetch loop moved on

	read               atomic.Uint64
	caughtUp, timedOut atomic.Uint64
	lag                atomic.Int64

	mu      sync.Mutex
	running bool            // until Run returns: bets may be held
	cl      *kgo.Client     // the consumer; nil until start offsets are listed
	next    map[int32]int64 // per partition, the next offset to read
	lags    map[int32]int64 // per partition, high watermark minus next
	synced  time.Time       // every record acknowledged before this is remembered
	waiting []held          // for the next sync round
}

// held is a bet admitted by Place that waits for a sync round.
type held struct {
	b    *Bet
	key  memoKey
	sum  [sha256.Size]byte
	done Done
}

func newReader() *reader {
	return &reader{running: true, kick: make(chan struct{}, 1), progress: make(chan struct{}, 1), next: map[int32]int64{}, lags: map[int32]int64{}}
}

// DedupStats are the dedup reader's counters.
type DedupStats struct {
	Read int64 // records read
	Lag  int64 // records behind the high watermarks, over all partitions
	// CaughtUp and TimedOut count bets that waited for the reader: it
	// caught up, or DedupSyncTimeout passed and they were produced anyway.
	CaughtUp, TimedOut int64
}

// DedupStats returns the reader's counters (zero without DedupAcrossNodes).
func (d *Desk) DedupStats() DedupStats {
	r := d.rd
	if r == nil {
		return DedupStats{}
	}
	return DedupStats{Read: int64(r.read.Load()), Lag: r.lag.Load(), CaughtUp: int64(r.caughtUp.Load()), TimedOut: int64(r.timedOut.Load())}
}

// Run reads the bets topic into the retry memory, from DedupWindow ago,
// until ctx is done; without DedupAcrossNodes it returns at once. Call it
// once, before Close: until it runs, bets with a ConnectedAt wait for it.
// Broker outages are retried; bets held meanwhile are produced after
// DedupSyncTimeout.
func (d *Desk) Run(ctx context.Context) {
	r := d.rd
	if r == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { d.syncLoop(ctx) })
	cl, err := d.startConsumer(ctx)
	if err != nil {
		wg.Wait()
		return // ctx is done
	}
	defer func() {
		wg.Wait() // syncLoop may still add partitions
		cl.Close()
	}()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		fetches.EachError(func(_ string, _ int32, err error) { d.hooks.OnReaderError(err) })
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, rec := range p.Records {
				d.learn(rec, now)
			}
			r.read.Add(uint64(len(p.Records)))
			r.mu.Lock()
			if n := len(p.Records); n > 0 {
				r.next[p.Partition] = p.Records[n-1].Offset + 1
			}
			if p.HighWatermark >= 0 && len(p.Records) > 0 {
				r.lags[p.Partition] = max(p.HighWatermark-r.next[p.Partition], 0)
				var lag int64
				for _, l := range r.lags {
					lag += l
				}
				r.lag.Store(lag)
			}
			r.mu.Unlock()
		})
		select {
		case r.progress <- struct{}{}:
		default:
		}
	}
}

// startConsumer lists each partition's first offset within DedupWindow,
// retrying every second until it can, and returns a client consuming from
// there (every partition, no group).
func (d *Desk) startConsumer(ctx context.Context) (*kgo.Client, error) {
	for {
		offsets, err := d.startOffsets(ctx)
		if err != nil && ctx.Err() == nil {
			d.hooks.OnReaderError(err)
		}
		if err == nil {
			opts := append(append([]kgo.Opt(nil), d.kopts...),
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{d.cfg.Topic: offsets}),
				// Past the end after retention or a broker lost data: read what is there.
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			)
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				return nil, fmt.Errorf("bets: dedup reader: %w", err)
			}
			r := d.rd
			r.mu.Lock()
			r.cl = cl
			for p, o := range offsets {
				if _, ok := r.next[p]; !ok {
					r.next[p] = o.EpochOffset().Offset
				}
			}
			r.mu.Unlock()
			return cl, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// startOffsets lists, per partition, the first offset of a record at most
// DedupWindow old, and not more than DedupMaxEntries before the end. Where
// there is none, kadm answers with the end offset
// listed afterwards, which may skip a record that landed in between: the
// end offset listed before is used instead.
func (d *Desk) startOffsets(ctx context.Context) (map[int32]kgo.Offset, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	adm := kadm.NewClient(d.client)
	ends, err := adm.ListEndOffsets(ctx, d.cfg.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, err
	}
	after, err := adm.ListOffsetsAfterMilli(ctx, time.Now().Add(-d.cfg.DedupWindow).UnixMilli(), d.cfg.Topic)
	if err == nil {
		err = after.Error()
	}
	if err != nil {
		return nil, err
	}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(end kadm.ListedOffset) {
		start := end.Offset
		if a, ok := after.Lookup(end.Topic, end.Partition); ok && a.Timestamp >= 0 {
			start = min(start, a.Offset)
		}
		// What lies further back would be forgotten for the bound anyway.
		start = max(start, end.Offset-int64(d.cfg.DedupMaxEntries))
		offsets[end.Partition] = kgo.NewOffset().At(start)
	})
	if len(offsets) == 0 {
		return nil, errors.New("no partitions")
	}
	return offsets, nil
}

// learn remembers the answer of a record read back from the topic. Records
// without the idempotency headers (other producers, older relays) and
// those past the window are skipped; an answer already remembered (this
// node's own bet, or an earlier duplicate) is kept.
func (d *Desk) learn(rec *kgo.Record, now time.Time) {
	var user, id, sum []byte
	for _, h := range rec.Headers {
		switch h.Key {
		case "user":
			user = h.Value
		case "bet-id":
			id = h.Value
		case "bet-sha256":
			sum = h.Value
		}
	}
	expires := rec.Timestamp.Add(d.cfg.DedupWindow)
	if len(user) == 0 || len(id) == 0 || len(sum) != 2*sha256.Size || !now.Before(expires) {
		return
	}
	s, err := strconv.ParseUint(string(sum[:16]), 16, 64)
	if err != nil {
		return
	}
	key := d.keyOfBytes(user, id)
	ns := now.UnixNano()
	d.mu.Lock()
	if a, ok := d.answers[key]; ok && ns < a.expires {
		// Known already, most often this node's own bet, acknowledged:
		// nothing to learn.
		d.mu.Unlock()
		return
	}
	var waiters []Done
	var r Result
	switch old := d.pending[key]; {
	case old == nil || !now.Before(old.expires):
		d.rememberLocked(key, answer{sum: s, expires: expires.UnixNano(), offset: rec.Offset,
			received: rec.Timestamp.UnixMilli(), partition: rec.Partition, remote: true})
	case old.sum == s:
		// A bet waiting for its ack, read back first: answer it now, and
		// keep the answer should the ack be a delivery timeout.
		r = resultOf(rec, string(id))
		r.Topic = d.cfg.Topic
		d.answeredLocked(old, r)
		waiters, old.waiters = old.waiters, nil
	}
	d.mu.Unlock()
	for _, w := range waiters {
		w(r, nil)
	}
}

// hold queues an admitted bet until the reader has read every record
// acknowledged before the bet's connection opened, if it may not have
// yet; it reports whether it did. A retry reaches another node only on a
// connection opened after the original was acknowledged (the client saw
// the first node's socket die, then reconnected), so this closes the race
// for it; later bets of the same connection pass at once.
func (r *reader) hold(h held) bool {
	if h.b.ConnectedAt.IsZero() {
		return false
	}
	r.mu.Lock()
	if !r.running || !r.synced.Before(h.b.ConnectedAt) {
		r.mu.Unlock()
		return false
	}
	r.waiting = append(r.waiting, h)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return true
}

// syncLoop runs sync rounds for held bets, one at a time: a round lists
// the end offsets, waits (at most DedupSyncTimeout) until the reader has
// read up to them, then produces the bets held before it started, which
// first look into the retry memory again. A bet waits at most two rounds.
func (d *Desk) syncLoop(ctx context.Context) {
	r := d.rd
	release := func(batch []held) {
		for _, h := range batch {
			d.produce(h.b, h.key, h.sum, h.done)
		}
	}
	defer func() {
		r.mu.Lock()
		r.running = false
		batch := r.waiting
		r.waiting = nil
		r.mu.Unlock()
		release(batch)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		r.mu.Lock()
		batch := r.waiting
		r.waiting = nil
		r.mu.Unlock()
		start := time.Now()
		if d.catchUp(ctx, start) {
			r.mu.Lock()
			if r.synced.Before(start) {
				r.synced = start
			}
			r.mu.Unlock()
			r.caughtUp.Add(uint64(len(batch)))
		} else {
			r.timedOut.Add(uint64(len(batch)))
		}
		release(batch)
	}
}

// catchUp waits until the reader has read every record below the end
// offsets listed now, at most DedupSyncTimeout. A partition the reader
// does not know yet (added to the topic) is read from its start.
func (d *Desk) catchUp(ctx context.Context, start time.Time) bool {
	ctx, cancel := context.WithDeadline(ctx, start.Add(d.cfg.DedupSyncTimeout))
	defer cancel()
	ends, err := kadm.NewClient(d.client).ListEndOffsets(ctx, d.cfg.Topic)
	if err != nil {
		return false
	}
	targets := map[int32]int64{}
	failed := false
	ends.Each(func(o kadm.ListedOffset) {
		switch {
		case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			// No topic yet: no record to wait for.
		case o.Err != nil:
			failed = true
		case o.Offset > 0:
			targets[o.Partition] = o.Offset
		}
	})
	if failed {
		return false
	}
	r := d.rd
	r.mu.Lock()
	add := map[int32]kgo.Offset{}
	if r.cl != nil {
		for p := range targets {
			if _, ok := r.next[p]; !ok {
				r.next[p] = 0
				add[p] = kgo.NewOffset().AtStart()
			}
		}
	}
	cl := r.cl
	r.mu.Unlock()
	if len(add) > 0 {
		cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{d.cfg.Topic: add})
	}
	for {
		if r.reached(targets) {
			return true
		}
		select {
		case <-r.progress:
		case <-ctx.Done():
			return false
		}
	}
}

// reached reports whether the reader has read below every target.
func (r *reader) reached(targets map[int32]int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, end := range targets {
		if next, ok := r.next[p]; !ok || next < end {
			return false
		}
	}
	return true
}
