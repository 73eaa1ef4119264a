package bets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
	"github.com/edgerelay/edgerelay/relay/ratelimit"
	"github.com/edgerelay/edgerelay/relay/units"
)

// Config configures bet taking. The zero value of a field means its
// default, except Enabled and DedupAcrossNodes.
type Config struct {
	Enabled bool   `yaml:"enabled"`
	Topic   string `yaml:"topic"` // default "bets"
	// Key is the record key: "user" (default: one user's bets stay in
	// order) or "market" (the channel).
	Key string `yaml:"key"`
	// Timeout: a bet Kafka has not acknowledged by then is answered with
	// the retryable error (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// Linger is how long the producer may hold a bet to batch it with
	// others (default 1ms; 0: send at once). Under storms it cuts Kafka
	// requests per bet, at that cost in reply latency.
	Linger   time.Duration  `yaml:"linger"`
	MaxBytes units.ByteSize `yaml:"max_bytes"` // largest bet request (default 4KiB)
	// MaxInFlightPerConnection and MaxInFlight bound bets waiting for
	// Kafka, per connection (default 32) and per node (default 20,000).
	MaxInFlightPerConnection int `yaml:"max_in_flight_per_connection"`
	MaxInFlight              int `yaml:"max_in_flight"`
	// RatePerUser bets per second, with bursts of BurstPerUser (defaults
	// 10 and 20).
	RatePerUser  float64 `yaml:"rate_per_user"`
	BurstPerUser int     `yaml:"burst_per_user"`
	// DedupWindow: a repeated bet id from the same user within this gets
	// the original answer (default 10m).
	DedupWindow time.Duration `yaml:"dedup_window"`
	// DedupMaxEntries bounds the answers remembered for retries (default
	// 1,000,000, about 180 MB). Past it the oldest answers are forgotten
	// before their window ends.
	DedupMaxEntries int `yaml:"dedup_max_entries"`
	// DedupAcrossNodes: read the topic's idempotency headers back, so a
	// retry on any node gets the original answer (default true; the
	// relay's Kafka user then needs read access to Topic).
	DedupAcrossNodes bool `yaml:"dedup_across_nodes"`
	// DedupSyncTimeout bounds how long the first new bet of a connection
	// waits for the reader to have read every record acknowledged before
	// the connection opened (default 1s); past it the bet is produced.
	DedupSyncTimeout time.Duration `yaml:"dedup_sync_timeout"`
	// SuspendedField and SuspendedValues: a bet is refused when the
	// market's cached publication has this top-level field with one of
	// these string values (defaults "status" and suspended, closed).
	SuspendedField  string   `yaml:"suspended_field"`
	SuspendedValues []string `yaml:"suspended_values"`
	// MarketPrefixes: a bet's channel must start with one of these
	// (default "odds:"); a personal channel (with '#') never may.
	MarketPrefixes []string `yaml:"market_prefixes"`
}

// IsMarket says whether a bet may name channel: one under MarketPrefixes,
// and not a personal channel.
func (c *Config) IsMarket(channel string) bool {
	if strings.IndexByte(channel, '#') >= 0 {
		return false
	}
	for _, p := range c.MarketPrefixes {
		if strings.HasPrefix(channel, p) {
			return true
		}
	}
	return false
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Enabled:                  true,
		Topic:                    "bets",
		Key:                      "user",
		Timeout:                  5 * time.Second,
		Linger:                   time.Millisecond,
		MaxBytes:                 4 << 10,
		MaxInFlightPerConnection: 32,
		MaxInFlight:              20_000,
		RatePerUser:              10,
		BurstPerUser:             20,
		DedupWindow:              10 * time.Minute,
		DedupMaxEntries:          1_000_000,
		DedupAcrossNodes:         true,
		DedupSyncTimeout:         time.Second,
		SuspendedField:           "status",
		SuspendedValues:          []string{"suspended", "closed"},
		MarketPrefixes:           []string{"odds:"},
	}
}

// Validate reports invalid fields, named under prefix. Each error reads
// "<prefix>.<key>: <message>", key a YAML path under prefix, so that the
// relay can name the line or variable that set it.
func (c *Config) Validate(prefix string) error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, field, msg)) }
	if c.Topic == "" {
		bad("topic", "required")
	}
	if c.Key != "user" && c.Key != "market" {
		bad("key", fmt.Sprintf("%q is not user or market", c.Key))
	}
	if c.Timeout < time.Second {
		bad("timeout", "must be at least 1s (the Kafka client's least delivery timeout)")
	}
	if c.Linger < 0 || c.Linger > time.Second {
		bad("linger", "must be within 0..1s")
	}
	if c.MaxBytes < 256 || c.MaxBytes > 1<<20 {
		bad("max_bytes", "must be within 256B..1MiB")
	}
	if c.MaxInFlightPerConnection < 1 {
		bad("max_in_flight_per_connection", "must be at least 1")
	}
	if c.MaxInFlight < c.MaxInFlightPerConnection {
		bad("max_in_flight", "must be at least max_in_flight_per_connection")
	}
	if c.RatePerUser <= 0 || c.BurstPerUser < 1 {
		bad("rate_per_user", "must be positive, with burst_per_user at least 1")
	}
	if len(c.MarketPrefixes) == 0 || slices.Contains(c.MarketPrefixes, "") {
		bad("market_prefixes", "at least one, none empty")
	}
	if c.DedupWindow < time.Second {
		bad("dedup_window", "must be at least 1s")
	}
	if c.DedupMaxEntries < c.MaxInFlight {
		bad("dedup_max_entries", "must be at least max_in_flight")
	}
	if c.DedupAcrossNodes && (c.DedupSyncTimeout < 10*time.Millisecond || c.DedupSyncTimeout > c.Timeout) {
		bad("dedup_sync_timeout", "must be within 10ms..bets.timeout")
	}
	return errors.Join(errs...)
}

// Errors a bet can get, as rpc error replies. Temporary ones may succeed
// if retried (with the same bet id).
var (
	ErrInvalid      = &protocol.Error{Code: 1000, Message: "invalid bet"}
	ErrUnauthorized = &protocol.Error{Code: 1001, Message: "bets need an authenticated user"}
	ErrSuspended    = &protocol.Error{Code: 1002, Message: "market suspended"}
	ErrRateLimited  = &protocol.Error{Code: 1003, Message: "too many bets, slow down", Temporary: true}
	ErrTooManyBets  = &protocol.Error{Code: 1004, Message: "too many bets in flight", Temporary: true}
	ErrUnavailable  = &protocol.Error{Code: 1005, Message: "bet not confirmed by Kafka, retry with the same bet_id", Temporary: true}
	ErrIDReused     = &protocol.Error{Code: 1006, Message: "bet_id already used for a different bet"}
)

// Position is where a publication sits in Kafka, as the record reports it.
type Position struct {
	Channel   string    `json:"channel"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp"`
}

// PositionOf returns p's position, or nil.
func PositionOf(p *fanout.Publication) *Position {
	if p == nil {
		return nil
	}
	return &Position{Channel: p.Channel, Topic: p.Pos.Stream, Partition: p.Pos.Partition, Offset: p.Pos.Offset, Timestamp: p.Time}
}

// Bet is a request with what the relay vouches for.
type Bet struct {
	Request
	User       string
	ReceivedAt time.Time
	// ConnectedAt is when the bet's connection was opened (zero: the bet
	// does not wait for the dedup reader; see Config.DedupSyncTimeout).
	ConnectedAt time.Time
	// Seen is the latest publication of the market this connection was
	// sent; Latest the market's cached one when the bet arrived. Either
	// may be nil.
	Seen, Latest *fanout.Publication
}

// Result is the answer to an accepted bet: where Kafka put it.
type Result struct {
	BetID      string    `json:"bet_id"`
	Topic      string    `json:"topic"`
	Partition  int32     `json:"partition"`
	Offset     int64     `json:"offset"`
	ReceivedAt time.Time `json:"received_at"`
}

// AppendJSON appends r as encoding/json encodes it (the rpc reply's data),
// without its reflection (TestRecordValueAsEncodingJSON).
func (r Result) AppendJSON(v []byte) []byte {
	v = append(v, `{"bet_id":`...)
	v = appendJSONString(v, r.BetID)
	v = append(v, `,"topic":`...)
	v = appendJSONString(v, r.Topic)
	v = append(v, `,"partition":`...)
	v = strconv.AppendInt(v, int64(r.Partition), 10)
	v = append(v, `,"offset":`...)
	v = strconv.AppendInt(v, r.Offset, 10)
	v = append(v, `,"received_at":`...)
	v = appendJSONTime(v, r.ReceivedAt)
	return append(v, '}')
}

// Done receives a bet's answer: a Result, or an error. It is called exactly
// once, from any goroutine, and must not block.
type Done func(Result, *protocol.Error)

// Hooks observe the desk; they are called from any goroutine and must not
// block. reason is "" for an accepted bet, else a short label.
type Hooks interface {
	OnBet(reason string, ackLatency time.Duration)
	OnInFlight(delta int)
	// OnReaderError reports a failure of the dedup reader (listing or
	// fetching the topic), which it retries.
	OnReaderError(err error)
}

// Desk is a node's bet producer.
type Desk struct {
	cfg    Config
	node   string
	kopts  []kgo.Opt
	client *kgo.Client
	hooks  Hooks
	rd     *reader // nil without Config.DedupAcrossNodes

	inflight atomic.Int64

	// susp memoizes the suspension rule per channel for its latest
	// publication (*suspMemo), so a storm of bets parses it once.
	susp sync.Map

	// The retry memory, by memoKey of (user, bet id). mu is never held
	// while taking rd.mu, nor the other way round.
	mu sync.Mutex
	// pending holds the bets produced here that Kafka has not answered
	// (bounded by MaxInFlight), with their waiters.
	pending map[memoKey]*entry
	// answers holds the answered bets, this node's and those read back
	// (bounded by DedupMaxEntries). It and order hold no pointers, so the
	// garbage collector never scans them: a million answers are about
	// 180 MB that cost no marking (BenchmarkRetryMemory). Expiry is on the wall
	// clock (Unix ns), as it always was for answers read back.
	answers map[memoKey]answer
	// order holds the answers oldest first (from head), for Sweep and the
	// DedupMaxEntries bound; an element whose key now maps to a later
	// answer is skipped.
	order  []remembered
	head   int
	seeds  [2]maphash.Seed
	limits *ratelimit.Limiter // per user

	// due holds the bets produced in the last Timeout, in the order
	// produced, which is the order of their deadlines: one timer, set for
	// the oldest, answers those Kafka has not acknowledged by then
	// (instead of a timer per bet). Under dueMu, never held with mu.
	dueMu    sync.Mutex
	due      []dueBet
	dueHead  int
	dueTimer *time.Timer
}

type dueBet struct {
	e        *entry
	deadline time.Time
}

type suspMemo struct {
	pub       *fanout.Publication
	suspended bool
}

// entry is a bet produced here, from Place until Kafka's answer; then
// its answer moves to Desk.answers.
type entry struct {
	key     memoKey
	sum     uint64 // of the request, to tell a retry from a reused id
	done    bool   // answered (by Kafka, or by the reader first)
	result  Result
	expires time.Time
	waiters []Done
}

// memoKey names a (user, bet id) in the retry memory: 128 bits of two
// seeded hashes (Desk.keyOf). Two bets share one with a probability of
// about n²/2¹²⁹ among n remembered (10⁻²⁷ for a million), and the seeds are
// the process's own, so no client can aim for a collision.
type memoKey [2]uint64

// answer is a remembered answer; with the bet id of the retry that finds
// it, it gives back the Result (Desk.resultFrom).
type answer struct {
	sum       uint64
	expires   int64 // Unix ns
	offset    int64
	received  int64 // Unix ms, as Kafka keeps the record's timestamp
	partition int32
	remote    bool // learnt from the topic, not produced here
}

// remembered is an element of Desk.order.
type remembered struct {
	key     memoKey
	expires int64
}

// NewDesk builds a Desk producing with the given client options (brokers,
// TLS, SASL). It does not contact Kafka.
func NewDesk(cfg Config, kopts []kgo.Opt, node string, hooks Hooks) (*Desk, error) {
	opts := append(append([]kgo.Opt(nil), kopts...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // with idempotence, the default; said for the reader
		kgo.RecordDeliveryTimeout(cfg.Timeout),
		kgo.ProducerLinger(cfg.Linger),
		kgo.MaxBufferedRecords(cfg.MaxInFlight),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("bets: %w", err)
	}
	d := &Desk{cfg: cfg, node: node, kopts: kopts, client: cl, hooks: hooks,
		pending: map[memoKey]*entry{}, answers: map[memoKey]answer{},
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, limits: ratelimit.New(cfg.RatePerUser, cfg.BurstPerUser, maxRateUsers)}
	if cfg.DedupAcrossNodes {
		d.rd = newReader()
	}
	d.dueTimer = time.AfterFunc(time.Hour, d.expireDue)
	d.dueTimer.Stop()
	return d, nil
}

// Close stops the producer, failing what it still holds.
func (d *Desk) Close() { d.client.Close() }

// Place takes a bet; done gets the answer (see Done).
func (d *Desk) Place(b *Bet, done Done) {
	key := d.keyOf(b.User, b.BetID)
	sum := sha256.Sum256(b.Raw)
	now := b.ReceivedAt
	d.mu.Lock()
	if answer := d.knownLocked(key, b.BetID, sumOf(sum), now, done); answer != nil {
		d.mu.Unlock()
		answer()
		return
	}
	if !d.limits.Allow(b.User, now) {
		d.mu.Unlock()
		d.reject(done, "rate_limited", ErrRateLimited)
		return
	}
	d.mu.Unlock()
	if d.suspended(b.Latest) {
		d.reject(done, "suspended", ErrSuspended)
		return
	}
	if d.inflight.Add(1) > int64(d.cfg.MaxInFlight) {
		d.inflight.Add(-1)
		d.reject(done, "node_in_flight", ErrTooManyBets)
		return
	}
	d.hooks.OnInFlight(1)
	if d.rd != nil && d.rd.hold(held{b, key, sum, done}) {
		return // syncLoop calls produce
	}
	d.produce(b, key, sum, done)
}

// keyOf is the retry memory's key for a user's bet id. (keyOfBytes is
// the same for a record's header values; one function taking a closure
// would move the Hash to the heap, once per bet.)
func (d *Desk) keyOf(user, betID string) memoKey {
	var k memoKey
	var h maphash.Hash
	for i, seed := range d.seeds {
		h.SetSeed(seed)
		h.WriteString(user)
		h.WriteByte(0)
		h.WriteString(betID)
		k[i] = h.Sum64()
	}
	return k
}

// keyOfBytes is keyOf of a record's header values.
func (d *Desk) keyOfBytes(user, betID []byte) memoKey {
	var k memoKey
	var h maphash.Hash
	for i, seed := range d.seeds {
		h.SetSeed(seed)
		h.Write(user)
		h.WriteByte(0)
		h.Write(betID)
		k[i] = h.Sum64()
	}
	return k
}

// resultFrom is the Result a remembered answer gives for betID.
func (d *Desk) resultFrom(a answer, betID string) Result {
	return Result{BetID: betID, Topic: d.cfg.Topic, Partition: a.partition, Offset: a.offset, ReceivedAt: time.UnixMilli(a.received).UTC()}
}

// knownLocked returns what to do, once d.mu is released, with a bet whose
// (user, bet id) is remembered, or nil if it is not. d.mu must be held.
func (d *Desk) knownLocked(key memoKey, betID string, sum uint64, now time.Time, done Done) func() {
	if e := d.pending[key]; e != nil && now.Before(e.expires) {
		if e.sum != sum {
			return func() { d.reject(done, "id_reused", ErrIDReused) }
		}
		e.waiters = append(e.waiters, done)
		return func() {}
	}
	a, ok := d.answers[key]
	switch {
	case !ok || now.UnixNano() >= a.expires:
		return nil
	case a.sum != sum:
		return func() { d.reject(done, "id_reused", ErrIDReused) }
	default:
		r, reason := d.resultFrom(a, betID), "duplicate"
		if a.remote {
			reason = "duplicate_remote"
		}
		return func() { d.hooks.OnBet(reason, 0); done(r, nil) }
	}
}

// produce writes an admitted bet (counted in inflight) unless the retry
// memory has learnt of it meanwhile (from the reader, or a concurrent Place
// of the same bet).
func (d *Desk) produce(b *Bet, key memoKey, sum [sha256.Size]byte, done Done) {
	d.mu.Lock()
	if answer := d.knownLocked(key, b.BetID, sumOf(sum), b.ReceivedAt, done); answer != nil {
		d.mu.Unlock()
		d.inflight.Add(-1)
		d.hooks.OnInFlight(-1)
		answer()
		return
	}
	e := &entry{key: key, sum: sumOf(sum), expires: b.ReceivedAt.Add(d.cfg.DedupWindow), waiters: []Done{done}}
	d.pending[key] = e
	d.mu.Unlock()

	// The client hears within Timeout even if Kafka never answers; the
	// entry stays until Kafka does, so a retry waits for the real outcome
	// instead of producing a second record.
	start := d.addDue(e)
	d.client.Produce(context.Background(), d.record(b, sum), func(r *kgo.Record, err error) {
		d.inflight.Add(-1)
		d.hooks.OnInFlight(-1)
		d.finish(e, r, err, time.Since(start))
	})
}

// addDue puts e, produced now (which it returns), on the timeout queue.
func (d *Desk) addDue(e *entry) time.Time {
	d.dueMu.Lock()
	now := time.Now() // under dueMu: deadlines enter in order
	d.due = append(d.due, dueBet{e, now.Add(d.cfg.Timeout)})
	if len(d.due)-d.dueHead == 1 {
		d.dueTimer.Reset(d.cfg.Timeout)
	}
	d.dueMu.Unlock()
	return now
}

// expireDue runs on the timeout queue's timer: it answers the bets past
// their deadline that Kafka has not acknowledged (timeout skips the
// others) and sets the timer for the next deadline.
func (d *Desk) expireDue() {
	now := time.Now()
	var expired []*entry
	d.dueMu.Lock()
	for d.dueHead < len(d.due) && !d.due[d.dueHead].deadline.After(now) {
		expired = append(expired, d.due[d.dueHead].e)
		d.due[d.dueHead] = dueBet{}
		d.dueHead++
	}
	switch {
	case d.dueHead == len(d.due):
		d.due, d.dueHead = d.due[:0], 0
	case d.dueHead > 1024 && d.dueHead > len(d.due)/2:
		n := copy(d.due, d.due[d.dueHead:])
		clear(d.due[n:])
		d.due, d.dueHead = d.due[:n], 0
	}
	if d.dueHead < len(d.due) {
		d.dueTimer.Reset(d.due[d.dueHead].deadline.Sub(now))
	}
	d.dueMu.Unlock()
	for _, e := range expired {
		d.timeout(e)
	}
}

// rememberLocked keeps a's answer under key, forgetting the oldest
// answers past DedupMaxEntries. d.mu must be held.
func (d *Desk) rememberLocked(key memoKey, a answer) {
	d.answers[key] = a
	d.order = append(d.order, remembered{key, a.expires})
	if len(d.answers) > d.cfg.DedupMaxEntries {
		d.trimLocked(func(remembered) bool { return len(d.answers) > d.cfg.DedupMaxEntries })
	}
}

// answeredLocked marks an entry answered with r and moves its answer
// from pending to answers, unless a later bet of the same id superseded
// it meanwhile (this one waited for Kafka past its window): that one's
// answer, in flight or given, is the one to keep. d.mu must be held.
func (d *Desk) answeredLocked(e *entry, r Result) {
	e.done, e.result = true, r
	switch d.pending[e.key] {
	case e:
		delete(d.pending, e.key)
	case nil:
	default:
		return // a later bet of this id, in flight
	}
	if a, ok := d.answers[e.key]; ok && a.expires > e.expires.UnixNano() {
		return // a later bet of this id, answered
	}
	d.rememberLocked(e.key, answer{sum: e.sum, expires: e.expires.UnixNano(), offset: r.Offset,
		received: r.ReceivedAt.UnixMilli(), partition: r.Partition})
}

// sumOf is the part of a request's SHA-256 the retry memory keeps.
func sumOf(sum [sha256.Size]byte) uint64 { return binary.BigEndian.Uint64(sum[:8]) }

// resultOf is the answer a record gives, the same whether this node
// produced it or read it back: Kafka keeps timestamps in milliseconds.
func resultOf(r *kgo.Record, betID string) Result {
	return Result{BetID: betID, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, ReceivedAt: time.UnixMilli(r.Timestamp.UnixMilli()).UTC()}
}

func (d *Desk) reject(done Done, reason string, err *protocol.Error) {
	d.hooks.OnBet(reason, 0)
	done(Result{}, err)
}

// timeout answers the waiters of a bet Kafka has not acknowledged in time.
func (d *Desk) timeout(e *entry) {
	d.mu.Lock()
	if e.done {
		d.mu.Unlock()
		return
	}
	waiters := e.waiters
	e.waiters = nil
	d.mu.Unlock()
	for _, w := range waiters {
		d.reject(w, "timeout", ErrUnavailable)
	}
}

func (d *Desk) finish(e *entry, r *kgo.Record, err error, took time.Duration) {
	d.mu.Lock()
	waiters := e.waiters
	e.waiters = nil
	switch {
	case err != nil && e.done:
		// The reader found the record (a delivery timeout after all):
		// the answer stands.
		d.mu.Unlock()
		return
	case err != nil:
		if d.pending[e.key] == e {
			delete(d.pending, e.key) // failed: a retry produces again
		}
		d.mu.Unlock()
		for _, w := range waiters {
			d.reject(w, "kafka_error", ErrUnavailable.WithMessage(err.Error()))
		}
		return
	case !e.done: // else the reader answered from the record already
		d.answeredLocked(e, resultOf(r, string(r.Headers[0].Value)))
	}
	res := e.result
	d.mu.Unlock()
	d.hooks.OnBet("", took)
	for _, w := range waiters {
		done := w
		done(res, nil)
	}
}

// maxRateUsers bounds the users whose rate buckets the desk holds at once
// (a bucket is a few dozen bytes; users come from verified tokens).
const maxRateUsers = 1 << 20

// suspended applies the suspension rule to the market's cached value. A
// market with no cached value cannot be priced: it counts as suspended.
func (d *Desk) suspended(latest *fanout.Publication) bool {
	if latest == nil {
		return true
	}
	if m, ok := d.susp.Load(latest.Channel); ok && m.(*suspMemo).pub == latest {
		return m.(*suspMemo).suspended
	}
	r := d.suspendedRule(latest)
	d.susp.Store(latest.Channel, &suspMemo{latest, r})
	return r
}

func (d *Desk) suspendedRule(latest *fanout.Publication) bool {
	var v map[string]json.RawMessage
	if json.Unmarshal(latest.Data, &v) != nil {
		return false
	}
	raw, ok := v[d.cfg.SuspendedField]
	if !ok {
		return false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return false
	}
	for _, x := range d.cfg.SuspendedValues {
		if s == x {
			return true
		}
	}
	return false
}

// Sweep forgets answers past the dedup window, idle rate buckets and the
// suspension memo. Call it periodically; it costs the expired entries,
// not all of them.
func (d *Desk) Sweep(now time.Time) {
	d.susp.Clear()
	d.mu.Lock()
	defer d.mu.Unlock()
	ns := now.UnixNano()
	d.trimLocked(func(r remembered) bool { return ns > r.expires })
	d.limits.Sweep(now)
}

// trimLocked forgets answers oldest first while more(oldest) holds. The
// bets still waiting for Kafka are not in order (they are bounded by
// MaxInFlight and must stay to answer retries). Answers enter order when
// they come: this node's within Timeout of their bets' arrival, the
// reader's as it reads, which at start-up is up to DedupWindow of backlog
// partition by partition. So order is only roughly by expiry, and Sweep,
// which stops at the first answer still within its window, may keep an
// expired one behind it until then: a lookup checks expiry itself, and
// DedupMaxEntries bounds them all. order holds up to twice the answers
// between compactions.
func (d *Desk) trimLocked(more func(remembered) bool) {
	for d.head < len(d.order) {
		r := d.order[d.head]
		if a, ok := d.answers[r.key]; ok && a.expires == r.expires {
			if !more(r) {
				break
			}
			delete(d.answers, r.key)
		}
		d.head++
	}
	if d.head > 1024 && d.head > len(d.order)/2 {
		d.order = append(d.order[:0], d.order[d.head:]...)
		d.head = 0
	}
}

// Remembered is how many bets the retry memory holds: answers, and bets
// waiting for Kafka.
func (d *Desk) Remembered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.answers) + len(d.pending)
}

// record is the Kafka record of a bet; docs/bets.md documents it.
func (d *Desk) record(b *Bet, sum [sha256.Size]byte) *kgo.Record {
	key := b.User
	if d.cfg.Key == "market" {
		key = b.Channel
	}
	// One buffer holds the value, the key and the header values, each a
	// capped piece of it (a piece made before the buffer grew stays in
	// the old array, intact).
	buf := make([]byte, 0, 640+2*len(b.Raw))
	piece := func(start int) []byte { return buf[start:len(buf):len(buf)] }
	buf = appendRecordValue(buf, b, d.node)
	value := piece(0)
	at := len(buf)
	buf = append(buf, key...)
	rkey := piece(at)
	at = len(buf)
	buf = append(buf, b.BetID...)
	betID := piece(at)
	at = len(buf)
	buf = append(buf, b.User...)
	user := piece(at)
	at = len(buf)
	buf = append(buf, d.node...)
	node := piece(at)
	at = len(buf)
	buf = b.ReceivedAt.UTC().AppendFormat(buf, time.RFC3339Nano)
	recv := piece(at)
	at = len(buf)
	buf = append(append(append(buf, b.User...), '/'), b.BetID...)
	idem := piece(at)
	at = len(buf)
	buf = hex.AppendEncode(buf, sum[:])
	hexSum := piece(at)
	var seen, latest []byte // nil: Kafka's null header value
	if b.Seen != nil {
		at = len(buf)
		buf = appendPositionHeader(buf, b.Seen)
		seen = piece(at)
	}
	if b.Latest != nil {
		at = len(buf)
		buf = appendPositionHeader(buf, b.Latest)
		latest = piece(at)
	}
	return &kgo.Record{
		Key:       rkey,
		Value:     value,
		Timestamp: b.ReceivedAt,
		Headers: []kgo.RecordHeader{
			{Key: "bet-id", Value: betID}, // first: finish reads it
			{Key: "user", Value: user},
			{Key: "node", Value: node},
			{Key: "received-at", Value: recv},
			{Key: "idempotency-key", Value: idem},
			{Key: "bet-sha256", Value: hexSum}, // the reader tells a retry from a reused id by it
			{Key: "odds-seen", Value: seen},
			{Key: "odds-latest", Value: latest},
			{Key: "content-type", Value: contentTypeJSON},
		},
	}
}

// contentTypeJSON is every record's content-type header value (read by
// franz-go, never written).
var contentTypeJSON = []byte("application/json")

// appendRecordValue appends the JSON value of b's record, byte for byte
// what encoding/json makes of
//
//	struct {
//		BetID      string          `json:"bet_id"`
//		User       string          `json:"user"`
//		Node       string          `json:"node"`
//		ReceivedAt time.Time       `json:"received_at"`
//		Bet        json.RawMessage `json:"bet"`
//		OddsSeen   *Position       `json:"odds_seen"`
//		OddsLatest *Position       `json:"odds_latest"`
//	}
//
// (TestRecordValueAsEncodingJSON), without its reflection: a bet's record
// is built on the poller, for every bet.
func appendRecordValue(v []byte, b *Bet, node string) []byte {
	v = append(v, `{"bet_id":`...)
	v = appendJSONString(v, b.BetID)
	v = append(v, `,"user":`...)
	v = appendJSONString(v, b.User)
	v = append(v, `,"node":`...)
	v = appendJSONString(v, node)
	v = append(v, `,"received_at":`...)
	v = appendJSONTime(v, b.ReceivedAt)
	v = append(v, `,"bet":`...)
	// Raw is compact JSON (Parse); encoding/json escapes <, >, & and
	// U+2028/9 in a RawMessage, and so does HTMLEscape.
	buf := bytes.NewBuffer(v)
	json.HTMLEscape(buf, b.Raw)
	v = buf.Bytes()
	v = append(v, `,"odds_seen":`...)
	v = appendPosition(v, b.Seen)
	v = append(v, `,"odds_latest":`...)
	v = appendPosition(v, b.Latest)
	return append(v, '}')
}

// appendPosition appends p's Position as encoding/json would, or null.
func appendPosition(v []byte, p *fanout.Publication) []byte {
	if p == nil {
		return append(v, "null"...)
	}
	v = append(v, `{"channel":`...)
	v = appendJSONString(v, p.Channel)
	v = append(v, `,"topic":`...)
	v = appendJSONString(v, p.Pos.Stream)
	v = append(v, `,"partition":`...)
	v = strconv.AppendInt(v, int64(p.Pos.Partition), 10)
	v = append(v, `,"offset":`...)
	v = strconv.AppendInt(v, p.Pos.Offset, 10)
	v = append(v, `,"timestamp":`...)
	v = appendJSONTime(v, p.Time)
	return append(v, '}')
}

// appendJSONString appends s as encoding/json quotes it: plain ASCII as
// is, anything else through encoding/json.
func appendJSONString(v []byte, s string) []byte {
	if !protocol.PlainJSON(s) {
		q, _ := json.Marshal(s)
		return append(v, q...)
	}
	v = append(v, '"')
	v = append(v, s...)
	return append(v, '"')
}

// appendJSONTime appends t as time.Time's MarshalJSON does for the years
// 0 to 9999 (where MarshalJSON fails, and the record had no value).
func appendJSONTime(v []byte, t time.Time) []byte {
	v = append(v, '"')
	v = t.AppendFormat(v, time.RFC3339Nano)
	return append(v, '"')
}

// appendPositionHeader appends p's position as "topic/partition/offset".
func appendPositionHeader(v []byte, p *fanout.Publication) []byte {
	v = append(append(v, p.Pos.Stream...), '/')
	v = append(strconv.AppendInt(v, int64(p.Pos.Partition), 10), '/')
	return strconv.AppendInt(v, p.Pos.Offset, 10)
}
