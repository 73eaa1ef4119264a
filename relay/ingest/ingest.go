// Package ingest reads edgerelay's source topics from Kafka and publishes
// every record to the channel hub.
//
// # Model
//
// Every relay node reads every partition of the configured topics directly,
// without a consumer group, so all nodes hold the same stream and a record's
// position (topic, partition, offset) means the same on every node. On
// start, each partition is read from Config.Start: the last N records, or
// the records of a recent time window, enough to fill the last-value cache.
//
// A record's channel is, in order: the value of Config.ChannelHeader if the
// record has that header; else the topic's ChannelTemplate with {key},
// {topic} and {partition} filled in, if the topic has one; else the record
// key. A record with no usable channel, an invalid channel name, or a value
// that is not JSON (the client protocol carries JSON) is counted and
// skipped. A record with a null value (a tombstone) of a channel that is a
// map's entry removes the entry (fanout.Hub.PublishRemoval); of another
// channel it counts as not JSON. Only committed records are read (read_committed isolation).
//
// When the hub falls behind (a fetched batch spans more than
// Config.ConflateAfter of record timestamps), only each channel's last record of the batch is
// published, plus priority records and channels Config.Conflate refuses:
// the latest value goes out instead of a backlog.
//
// A node is ready once brokers are reachable and it has read every
// partition up to the end offset it saw on start, so that its cache holds
// the current values before clients are sent to it. franz-go resolves "the
// last N records" when it first loads a partition, which after a broker
// outage at start can be seconds after that listing; if more than N
// records arrived meanwhile, the partition is read from where the listing
// put its start window instead, so no record since start is skipped.
//
// A watch (watch.go) lists the partitions' committed end offsets and the
// topics' IDs every Config.LagInterval, apart from fetching: it reports lag and
// the last record's age while ingest is stuck, and it restarts a topic
// that was deleted and created again, under a new epoch.
//
// # Concurrency
//
// Run polls and publishes from one goroutine, so records of one partition are
// published in offset order; it runs the probe and the watch in two more.
// Ready may be called from any goroutine. Hooks are called from Run's
// goroutine (OnRecord, OnSkip, OnLag, OnConflated) and must not block;
// HealthHooks and ProbeHooks say where they are called from. Lock order:
// posMu is never held while taking catchMu, nor catchMu while taking posMu.
package ingest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/units"
)

// Config configures ingest. YAML keys are in the tags.
type Config struct {
	Topics []Topic `yaml:"topics"`
	// ChannelHeader names the record header that carries the channel
	// (default "channel"; empty disables header lookup).
	ChannelHeader string `yaml:"channel_header"`
	// PriorityHeader names a header whose value "1" or "true" marks a
	// priority publication (never conflated away).
	PriorityHeader string `yaml:"priority_header"`
	// TagHeaders name the record headers that become the publication's
	// tags (header name = tag key), for clients' tag filters; a topic's
	// own list replaces it. At most MaxTagHeaders; a header whose value
	// is longer than MaxTagValueBytes or not UTF-8 is no tag.
	TagHeaders []string    `yaml:"tag_headers"`
	Start      StartConfig `yaml:"start"`
	// MaxValueBytes skips larger record values (counted as too_large): one
	// huge update would otherwise overflow every subscriber's queue.
	MaxValueBytes units.ByteSize `yaml:"max_value_bytes"`
	// CatchUpTimeout bounds how long a starting node waits to read its
	// start window before it reports ready anyway (see Ready).
	CatchUpTimeout time.Duration `yaml:"catch_up_timeout"`
	// ProbeInterval is how often broker reachability is checked for
	// readiness.
	ProbeInterval time.Duration `yaml:"probe_interval"`
	// LagInterval is how often the partitions' end offsets and the
	// topics' IDs are listed: lag and record age are reported from them
	// also while no fetch returns records, and a topic deleted and
	// created again is noticed (see watch.go).
	LagInterval time.Duration `yaml:"lag_interval"`

	// Conflation when the hub falls behind (set by the relay from its
	// overload settings, not from YAML): when a fetched batch's records
	// span more than ConflateAfter (timestamps), only the last record of each
	// channel in the batch is published, plus every priority record and
	// every record of a channel Conflate refuses. Nil Conflate: never.
	Conflate      func(channel string) bool `yaml:"-"`
	ConflateAfter time.Duration             `yaml:"-"`
}

// Topic is one source topic.
type Topic struct {
	Name string `yaml:"name"`
	// ChannelTemplate builds a channel name from {key}, {topic} and
	// {partition}, e.g. "odds:{key}".
	ChannelTemplate string `yaml:"channel_template"`
	// Payload is "json" (the default: records that are not JSON are
	// skipped) or "binary": values go out as they are, to Protobuf
	// clients byte for byte; a JSON client gets a record only if it is
	// JSON (checked when a JSON client needs it).
	Payload string `yaml:"payload"`
	// TagHeaders, when set (also to []), replace Config.TagHeaders for
	// the topic.
	TagHeaders []string `yaml:"tag_headers"`
}

// Bounds of tags (Config.TagHeaders).
const (
	MaxTagHeaders    = 16
	MaxTagValueBytes = 256
)

// StartConfig says where to start reading each partition. Since, when set,
// wins over LastRecords.
type StartConfig struct {
	LastRecords int64         `yaml:"last_records"`
	Since       time.Duration `yaml:"since"`
}

// DefaultConfig reads the topics "odds" and "scores", the channel from the
// "channel" header, starting 10,000 records back in every partition.
func DefaultConfig() Config {
	return Config{
		Topics:         []Topic{{Name: "odds"}, {Name: "scores"}},
		ChannelHeader:  "channel",
		PriorityHeader: "priority",
		Start:          StartConfig{LastRecords: 10_000},
		CatchUpTimeout: time.Minute,
		MaxValueBytes:  128 << 10,
		ProbeInterval:  2 * time.Second,
		LagInterval:    5 * time.Second,
	}
}

// Validate checks c. Each error reads "<prefix>.<key>: <message>", key a
// YAML path under prefix (topics[1].name), so that the relay can name the
// line or variable that set it.
func (c Config) Validate(prefix string) error {
	var errs []error
	if len(c.Topics) == 0 {
		errs = append(errs, fmt.Errorf("%s.topics: at least one topic is required", prefix))
	}
	seen := map[string]bool{}
	for i, t := range c.Topics {
		switch {
		case t.Name == "":
			errs = append(errs, fmt.Errorf("%s.topics[%d].name: required", prefix, i))
		case seen[t.Name]:
			errs = append(errs, fmt.Errorf("%s.topics[%d].name: %q listed twice", prefix, i, t.Name))
		}
		seen[t.Name] = true
		if t.Payload != "" && t.Payload != "json" && t.Payload != "binary" {
			errs = append(errs, fmt.Errorf("%s.topics[%d].payload: %q is not json or binary", prefix, i, t.Payload))
		}
		if t.TagHeaders != nil {
			errs = append(errs, checkTagHeaders(fmt.Sprintf("%s.topics[%d].tag_headers", prefix, i), t.TagHeaders)...)
		}
		if t.ChannelTemplate != "" {
			probe := expand(t.ChannelTemplate, "k", t.Name, 0)
			if strings.Contains(probe, "{") || strings.Contains(probe, "}") {
				errs = append(errs, fmt.Errorf("%s.topics[%d].channel_template: only {key}, {topic} and {partition} may be used", prefix, i))
			}
		}
	}
	errs = append(errs, checkTagHeaders(prefix+".tag_headers", c.TagHeaders)...)
	if c.Start.LastRecords < 0 {
		errs = append(errs, fmt.Errorf("%s.start.last_records: must not be negative", prefix))
	}
	if c.Start.Since < 0 {
		errs = append(errs, fmt.Errorf("%s.start.since: must not be negative", prefix))
	}
	if c.MaxValueBytes < 1 {
		errs = append(errs, fmt.Errorf("%s.max_value_bytes: must be positive", prefix))
	}
	if c.CatchUpTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%s.catch_up_timeout: must be positive", prefix))
	}
	if c.ProbeInterval <= 0 {
		errs = append(errs, fmt.Errorf("%s.probe_interval: must be positive", prefix))
	}
	if c.LagInterval <= 0 {
		errs = append(errs, fmt.Errorf("%s.lag_interval: must be positive", prefix))
	}
	return errors.Join(errs...)
}

func checkTagHeaders(key string, names []string) []error {
	var errs []error
	if len(names) > MaxTagHeaders {
		errs = append(errs, fmt.Errorf("%s: at most %d headers", key, MaxTagHeaders))
	}
	seen := map[string]bool{}
	for _, n := range names {
		switch {
		case n == "" || len(n) > MaxTagValueBytes || !utf8.ValidString(n):
			errs = append(errs, fmt.Errorf("%s: %q is no header name (1..%d bytes of UTF-8)", key, n, MaxTagValueBytes))
		case seen[n]:
			errs = append(errs, fmt.Errorf("%s: %q listed twice", key, n))
		}
		seen[n] = true
	}
	return errs
}

// tagsOf returns the tags of r: the values of the topic's tag headers
// (nil if it has none of them).
func (in *Ingester) tagsOf(r *kgo.Record) map[string]string {
	names := in.tagHeaders[r.Topic]
	if len(names) == 0 {
		return nil
	}
	var tags map[string]string
	for _, hd := range r.Headers {
		if len(hd.Value) > MaxTagValueBytes || !slices.Contains(names, hd.Key) || !utf8.Valid(hd.Value) {
			continue
		}
		if tags == nil {
			tags = make(map[string]string, len(names))
		}
		tags[hd.Key] = string(hd.Value)
	}
	return tags
}

func expand(tmpl, key, topic string, partition int32) string {
	return strings.NewReplacer("{key}", key, "{topic}", topic, "{partition}", strconv.Itoa(int(partition))).Replace(tmpl)
}

// SkipReason says why a record was not published.
type SkipReason string

// Skip reasons, used as metric label values.
const (
	SkipNoChannel      SkipReason = "no_channel"
	SkipInvalidChannel SkipReason = "invalid_channel"
	SkipInvalidJSON    SkipReason = "invalid_json"
	SkipTooLarge       SkipReason = "too_large"
)

// Hooks observe ingest. Methods are called from Run's goroutine and must
// not block.
type Hooks interface {
	OnRecord(topic string, partition int32)
	OnSkip(topic string, reason SkipReason)
	// OnLag reports, per fetched batch, the records behind the last
	// stable offset and the age of the batch's newest record (now minus its
	// timestamp) as ingest starts publishing it: how late Kafka and
	// ingest hand values to the hub.
	OnLag(topic string, partition int32, lag int64, age time.Duration)
	// OnConflated reports a record skipped because a later record of its
	// channel came in the same batch while ingest was behind.
	OnConflated(channel string)
}

// HealthHooks, when Hooks also implement it, observe the partition watch
// (every Config.LagInterval) and Kafka errors. Called from the watch's
// goroutine, Run's, or the Kafka client's (OnKafkaError); must be safe
// for concurrent use and must not block.
type HealthHooks interface {
	// OnPosition reports a partition's lag (its committed end offset,
	// the last stable offset, minus the next offset to consume) and the
	// timestamp of the last record consumed from it (zero if none yet),
	// also while ingest is stuck.
	OnPosition(topic string, partition int32, lag int64, last time.Time)
	// OnTopicRecreated reports a topic deleted and created again (or, on
	// a broker without topic IDs, whose offsets went backwards): its
	// consumption restarted from Config.Start, under a new epoch.
	OnTopicRecreated(topic string)
	// OnKafkaError reports a failed broker connection, fetch or listing.
	OnKafkaError(op ErrorOp)
}

// ErrorOp names what failed in OnKafkaError; used as a metric label.
type ErrorOp string

// Kafka operations whose failures are counted.
const (
	OpConnect ErrorOp = "connect"      // dialing a broker, TLS or SASL
	OpFetch   ErrorOp = "fetch"        // an error PollFetches returned
	OpList    ErrorOp = "list_offsets" // the watch's metadata or end offsets
)

// ErrorOps lists every ErrorOp, for metrics that show each at 0.
var ErrorOps = []ErrorOp{OpConnect, OpFetch, OpList}

// ProbeHooks, when Hooks also implement it, observe every reachability
// probe (every ProbeInterval): err is nil when a broker answered. Called
// from the probe's goroutine; must not block.
type ProbeHooks interface {
	OnProbe(err error)
}

// unreachableLogEvery is how often a Kafka that stays unreachable is
// logged again (the first failed probe always is).
const unreachableLogEvery = 30 * time.Second

// Publisher receives publications; *fanout.Hub implements it.
type Publisher interface {
	Publish(p *fanout.Publication) error
	// Append records p in its channel's history without delivering it:
	// a record conflated away (a later one of its channel came in the same
	// batch) that a client catching up from the history must still see.
	Append(p *fanout.Publication) error
	// KeepsHistory says whether Append keeps anything: if not, ingest
	// does not build publications for conflated records.
	KeepsHistory() bool
}

// Remover is what a Publisher also implements to take tombstones (records
// with a null value) of map entries' channels: PublishRemoval fails for a
// channel in no map. *fanout.Hub implements it. Without it, a tombstone
// counts as not JSON.
type Remover interface {
	PublishRemoval(p *fanout.Publication) error
}

// Ingester consumes the source topics.
type Ingester struct {
	cfg       Config
	client    *kgo.Client
	pub       Publisher
	hooks     Hooks
	log       *slog.Logger
	templates map[string]string
	binary    map[string]bool // topics with payload: binary
	// tagHeaders: topic → the headers that become tags
	tagHeaders map[string][]string
	maxName    int

	reachable atomic.Bool
	lastErr   atomic.Pointer[string]

	// Catch-up on start: the committed end offset of every partition that
	// has records, and how far Run has read. caughtUp is set once all are
	// reached (or CatchUpTimeout passed) and never cleared.
	catchMu  sync.Mutex
	targets  map[topicPartition]int64 // nil until listed
	consumed map[topicPartition]int64 // next offset to read
	// startAt is where reading each partition listed on start must begin
	// at the latest (the last N records then; see rewound). Set with
	// targets, never changed.
	startAt  map[topicPartition]int64
	caughtUp atomic.Bool
	started  time.Time

	// Run's goroutine: per batch, each record's channel and each channel's
	// last index (conflation); partitions whose first batch was checked
	// against startAt.
	chans   []string
	lastOf  map[string]int
	checked map[topicPartition]bool

	// Streams (posMu; see watch.go): Run records each partition's
	// position per batch, the watch reads them. ids holds the ID of the
	// topic being consumed, from its first batch or listing; gen counts a
	// partition's restarts of offsets under one ID; suspect holds topics
	// whose fetches failed with UNKNOWN_TOPIC_ID since the last listing,
	// suspectSince since when listings keep finding them so.
	posMu        sync.Mutex
	pos          map[topicPartition]position
	ids          map[string][16]byte
	gen          map[topicPartition]int
	suspect      map[string]bool
	suspectSince map[string]time.Time
	names        []string    // the topics, for listings
	health       HealthHooks // nil if hooks do not implement it

	fetchLog, connectLog, listLog logEvery
}

// position is where Run is in a partition: the next offset to read and
// the timestamp of the last record read.
type position struct {
	next int64
	last time.Time
}

type topicPartition struct {
	topic     string
	partition int32
}

// New creates an Ingester; kopts are the broker connection options (see
// package kafkaclient). maxNameLength bounds channel names as the hub does.
// New does not contact the brokers: a broker that is down at start is
// retried by Run.
func New(cfg Config, kopts []kgo.Opt, pub Publisher, hooks Hooks, maxNameLength int, log *slog.Logger) (*Ingester, error) {
	if err := cfg.Validate("ingest"); err != nil {
		return nil, err
	}
	start := kgo.NewOffset().AtEnd().Relative(-cfg.Start.LastRecords)
	if cfg.Start.Since > 0 {
		start = kgo.NewOffset().AfterMilli(time.Now().Add(-cfg.Start.Since).UnixMilli())
	}
	names := make([]string, len(cfg.Topics))
	templates, binary, tagHeaders := map[string]string{}, map[string]bool{}, map[string][]string{}
	for i, t := range cfg.Topics {
		names[i] = t.Name
		if t.ChannelTemplate != "" {
			templates[t.Name] = t.ChannelTemplate
		}
		if t.Payload == "binary" {
			binary[t.Name] = true
		}
		tagHeaders[t.Name] = cfg.TagHeaders
		if t.TagHeaders != nil {
			tagHeaders[t.Name] = t.TagHeaders
		}
	}
	opts := append([]kgo.Opt{}, kopts...)
	opts = append(opts,
		kgo.ConsumeTopics(names...),
		kgo.ConsumeStartOffset(start),
		// Past the end after a broker lost data: read what the log has now.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMaxAge(30*time.Second),
		kgo.FetchMaxWait(time.Second),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // positions past transaction markers (handlePartition)
	)
	in := &Ingester{cfg: cfg, pub: pub, hooks: hooks, log: log, templates: templates, binary: binary, tagHeaders: tagHeaders, maxName: maxNameLength,
		consumed: map[topicPartition]int64{}, started: time.Now(), names: names}
	in.initStreams()
	opts = append(opts, kgo.WithHooks(connectHook{in}))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	in.client = cl
	return in, nil
}

// Ready reports whether a broker answered the last reachability probe and
// the start window has been read.
func (in *Ingester) Ready() bool { return in.reachable.Load() && in.caughtUp.Load() }

// Reachable reports whether a broker answered the last probe.
func (in *Ingester) Reachable() bool { return in.reachable.Load() }

// CaughtUp reports whether the start window has been read.
func (in *Ingester) CaughtUp() bool { return in.caughtUp.Load() }

// listTargets records each partition's committed end offset, once.
func (in *Ingester) listTargets(ctx context.Context) error {
	names := make([]string, len(in.cfg.Topics))
	for i, t := range in.cfg.Topics {
		names[i] = t.Name
	}
	adm := kadm.NewClient(in.client)
	starts, err := adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return err
	}
	ends, err := adm.ListCommittedOffsets(ctx, names...)
	if err != nil {
		return err
	}
	targets, startAt := map[topicPartition]int64{}, map[topicPartition]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return // unknown topic or partition: nothing to wait for
		}
		tp := topicPartition{o.Topic, o.Partition}
		s, ok := starts.Lookup(o.Topic, o.Partition)
		if ok = ok && s.Err == nil; ok && in.cfg.Start.Since == 0 {
			startAt[tp] = max(s.Offset, o.Offset-in.cfg.Start.LastRecords)
		}
		if ok && s.Offset >= o.Offset {
			return // empty
		}
		targets[tp] = o.Offset
	})
	in.catchMu.Lock()
	in.targets, in.startAt = targets, startAt
	in.catchMu.Unlock()
	in.checkCaughtUp()
	return nil
}

// checkCaughtUp sets caughtUp when every target is reached or the timeout
// has passed.
func (in *Ingester) checkCaughtUp() {
	if in.caughtUp.Load() {
		return
	}
	in.catchMu.Lock()
	defer in.catchMu.Unlock()
	if in.targets == nil {
		return
	}
	behind := 0
	for tp, end := range in.targets {
		if in.consumed[tp] < end {
			behind++
		}
	}
	switch {
	case behind == 0:
		in.log.Info("start window read; cache is current", "partitions", len(in.targets), "took", time.Since(in.started).Round(time.Millisecond))
	case time.Since(in.started) > in.cfg.CatchUpTimeout:
		// A partition can look behind for good if its end moved
		// back (records deleted, a truncated log).
		in.log.Warn("start window not fully read within ingest.catch_up_timeout; reporting ready", "partitions_behind", behind)
	default:
		return
	}
	in.caughtUp.Store(true)
	in.consumed = nil
}

// LastError returns the last fetch or probe error, or "".
func (in *Ingester) LastError() string {
	if p := in.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Run consumes until ctx is done, then closes the client. Broker outages are
// retried forever; Run returns only when ctx is done.
func (in *Ingester) Run(ctx context.Context) error {
	var bg sync.WaitGroup
	defer func() { bg.Wait(); in.client.Close() }()
	bg.Go(func() { in.probe(ctx) })
	bg.Go(func() { in.watch(ctx) })
	for {
		fetches := in.client.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			msg := fmt.Sprintf("%s[%d]: %v", topic, partition, err)
			in.lastErr.Store(&msg)
			in.kafkaError(OpFetch)
			if errors.Is(err, kerr.UnknownTopicID) {
				in.suspectRecreated(topic)
			}
			if n, ok := in.fetchLog.allow(); ok {
				in.log.Warn("kafka fetch error; retrying", "topic", topic, "partition", partition, "err", err, "suppressed", n)
			}
		})
		fetches.EachTopic(func(t kgo.FetchTopic) {
			for i := range t.Partitions {
				in.handlePartition(t.Topic, t.TopicID, &t.Partitions[i])
			}
		})
	}
}

func (in *Ingester) handlePartition(topic string, id [16]byte, p *kgo.FetchPartition) {
	if len(p.Records) == 0 {
		return
	}
	epoch, current := in.streamOf(topic, id, p)
	if !current {
		return
	}
	// Transaction markers come as control records (kgo.KeepControlRecords)
	// so that a partition ending in one is read to its end, with no lag
	// left: they move the position, nothing else.
	next := p.Records[len(p.Records)-1].Offset + 1
	p.Records = slices.DeleteFunc(p.Records, func(r *kgo.Record) bool { return r.Attrs.IsControl() })
	var lastTime time.Time // of the last record read; zero: as before
	if n := len(p.Records); n > 0 {
		if in.rewound(topic, p) {
			return
		}
		age := in.publishBatch(p, epoch)
		lastTime = p.Records[n-1].Timestamp
		in.hooks.OnLag(topic, p.Partition, max(p.LastStableOffset-next, 0), age)
	}
	in.advance(topic, id, p.Partition, position{next: next, last: lastTime})
	if !in.caughtUp.Load() {
		in.catchMu.Lock()
		if in.consumed != nil {
			in.consumed[topicPartition{topic, p.Partition}] = next
		}
		in.catchMu.Unlock()
		in.checkCaughtUp()
	}
}

// publishBatch publishes the records of one fetched partition (none of
// them control records) and returns the age of the newest as publishing
// began.
func (in *Ingester) publishBatch(p *kgo.FetchPartition, epoch string) time.Duration {
	in.chans = in.chans[:0]
	for _, r := range p.Records {
		in.chans = append(in.chans, in.channelOf(r))
	}
	// Behind: the batch holds more than ConflateAfter of the feed. When
	// ingest keeps up a batch spans one fetch round trip; the span is
	// immune to producer linger and to clock offsets of one producer.
	n := len(p.Records)
	age := time.Since(p.Records[n-1].Timestamp)
	behind := in.cfg.Conflate != nil && n > 1 && p.Records[n-1].Timestamp.Sub(p.Records[0].Timestamp) > in.cfg.ConflateAfter
	if behind {
		if in.lastOf == nil {
			in.lastOf = map[string]int{}
		}
		for i, ch := range in.chans {
			in.lastOf[ch] = i
		}
	}
	for i, r := range p.Records {
		ch := in.chans[i]
		if behind && in.lastOf[ch] != i && ch != "" && !in.isPriority(r) && in.cfg.Conflate(ch) {
			in.hooks.OnRecord(r.Topic, r.Partition)
			if in.caughtUp.Load() { // reading the start window is not overload
				in.hooks.OnConflated(ch)
			}
			if in.pub.KeepsHistory() && r.Value != nil {
				if p := in.publication(r, ch, epoch, false); p != nil {
					in.pub.Append(p)
				}
			}
			continue
		}
		in.handle(r, ch, epoch)
	}
	clear(in.chans)
	if behind {
		clear(in.lastOf)
	}
	return age
}

// rewound checks a partition's first batch against where reading it had to
// begin, and if reading began later, drops the batch and moves the
// partition back there. franz-go resolves "the last N records" when it
// first loads a partition; after a broker that was down at start, that
// can be seconds after this node listed the offsets and reported ready,
// and records that arrived meanwhile beyond the last N would be skipped,
// priority ones included. Records published are then still each
// partition's, in offset order, once. Run's goroutine only.
func (in *Ingester) rewound(topic string, p *kgo.FetchPartition) bool {
	tp := topicPartition{topic, p.Partition}
	if in.checked[tp] {
		return false
	}
	if in.checked == nil {
		in.checked = map[topicPartition]bool{}
	}
	in.checked[tp] = true // a batch read before the listing is not checked
	in.catchMu.Lock()
	want, listed := in.startAt[tp]
	in.catchMu.Unlock()
	first := p.Records[0].Offset
	if !listed || first <= want {
		return false
	}
	in.log.Warn("kafka start position resolved late; reading the partition from its start window", "topic", topic,
		"partition", p.Partition, "offset", first, "from", want)
	in.client.SetOffsets(map[string]map[int32]kgo.EpochOffset{topic: {p.Partition: {Epoch: -1, Offset: want}}})
	return true
}

// Epoch names the stream of one partition: the topic's ID when the broker
// reports one (it changes if the topic is deleted and created again, which
// makes old offsets meaningless), else the topic name, then the partition.
func Epoch(topic string, id [16]byte, partition int32) string {
	if id != ([16]byte{}) {
		return hex.EncodeToString(id[:4]) + "-" + strconv.Itoa(int(partition))
	}
	return topic + "-" + strconv.Itoa(int(partition))
}

func (in *Ingester) handle(r *kgo.Record, channel, epoch string) {
	in.hooks.OnRecord(r.Topic, r.Partition)
	if r.Value == nil && channel != "" {
		// A tombstone: it removes a map entry (a channel in no map has
		// nothing to remove, and counts as not JSON).
		p := &fanout.Publication{Channel: channel, Pos: fanout.Position{Stream: r.Topic, Partition: r.Partition, Offset: r.Offset},
			Epoch: epoch, Time: r.Timestamp, Priority: in.isPriority(r), Removed: true, Tags: in.tagsOf(r)}
		if rm, ok := in.pub.(Remover); !ok || rm.PublishRemoval(p) != nil {
			in.hooks.OnSkip(r.Topic, SkipInvalidJSON)
		}
		return
	}
	if p := in.publication(r, channel, epoch, true); p != nil {
		if err := in.pub.Publish(p); err != nil {
			in.hooks.OnSkip(r.Topic, SkipInvalidChannel)
		}
	}
}

// publication checks r and makes it channel's publication, or returns nil
// (counting why if count) when it cannot be one.
func (in *Ingester) publication(r *kgo.Record, channel, epoch string, count bool) *fanout.Publication {
	skip := func(reason SkipReason) *fanout.Publication {
		if count {
			in.hooks.OnSkip(r.Topic, reason)
		}
		return nil
	}
	if channel == "" {
		return skip(SkipNoChannel)
	}
	if err := fanout.ValidateName(channel, in.maxName); err != nil {
		return skip(SkipInvalidChannel)
	}
	data := r.Value
	if int64(len(data)) > int64(in.cfg.MaxValueBytes) {
		return skip(SkipTooLarge)
	}
	binary := in.binary[r.Topic]
	if !binary && !json.Valid(data) { // binary: the JSON encoder checks, if a JSON client needs it
		return skip(SkipInvalidJSON)
	}
	// The JSON protocol separates messages by '\n', so payloads must not
	// contain one; in valid JSON it can only be whitespace.
	if !binary && bytes.IndexByte(data, '\n') >= 0 {
		var b bytes.Buffer
		json.Compact(&b, data)
		data = b.Bytes()
	}
	return &fanout.Publication{
		Channel:  channel,
		Data:     data,
		Pos:      fanout.Position{Stream: r.Topic, Partition: r.Partition, Offset: r.Offset},
		Epoch:    epoch,
		Time:     r.Timestamp,
		Priority: in.isPriority(r),
		Binary:   binary,
		Tags:     in.tagsOf(r),
	}
}

func (in *Ingester) channelOf(r *kgo.Record) string {
	if h := in.cfg.ChannelHeader; h != "" {
		for _, hd := range r.Headers {
			if hd.Key == h && len(hd.Value) > 0 {
				return string(hd.Value)
			}
		}
	}
	if tmpl, ok := in.templates[r.Topic]; ok {
		if len(r.Key) == 0 && strings.Contains(tmpl, "{key}") {
			return ""
		}
		return expand(tmpl, string(r.Key), r.Topic, r.Partition)
	}
	return string(r.Key)
}

func (in *Ingester) isPriority(r *kgo.Record) bool {
	h := in.cfg.PriorityHeader
	if h == "" {
		return false
	}
	for _, hd := range r.Headers {
		if hd.Key == h {
			v := string(hd.Value)
			return v == "1" || strings.EqualFold(v, "true")
		}
	}
	return false
}

// probe checks broker reachability every ProbeInterval for Ready.
func (in *Ingester) probe(ctx context.Context) {
	t := time.NewTicker(in.cfg.ProbeInterval)
	defer t.Stop()
	var lastWarn, unreachableSince time.Time
	for {
		pctx, cancel := context.WithTimeout(ctx, in.cfg.ProbeInterval)
		err := in.client.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && !in.caughtUp.Load() {
			in.catchMu.Lock()
			listed := in.targets != nil
			in.catchMu.Unlock()
			if !listed {
				lctx, cancel := context.WithTimeout(ctx, 2*in.cfg.ProbeInterval)
				if lerr := in.listTargets(lctx); lerr != nil {
					in.log.Debug("listing offsets for catch-up", "err", lerr)
				}
				cancel()
			}
			in.checkCaughtUp() // the timeout may have passed
		}
		was := in.reachable.Swap(err == nil)
		if ph, ok := in.hooks.(ProbeHooks); ok {
			ph.OnProbe(err)
		}
		switch {
		case err != nil:
			msg := "broker unreachable: " + err.Error()
			in.lastErr.Store(&msg)
			// Unreachable from the start (was is false then too) or
			// after having been reachable: log at once, then again
			// every unreachableLogEvery while it lasts.
			if was || lastWarn.IsZero() || time.Since(lastWarn) >= unreachableLogEvery {
				in.log.Warn("kafka brokers unreachable; serving cached state, retrying", "brokers", in.client.OptValue(kgo.SeedBrokers),
					"since", downSince(&unreachableSince, was), "err", err)
				lastWarn = time.Now()
			}
		case !was:
			in.log.Info("kafka brokers reachable")
			lastWarn, unreachableSince = time.Time{}, time.Time{}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// downSince returns how long Kafka has been unreachable, starting the clock
// at the first failed probe (or again after it was reachable).
func downSince(since *time.Time, wasReachable bool) string {
	if since.IsZero() || wasReachable {
		*since = time.Now()
	}
	return time.Since(*since).Round(time.Second).String()
}
