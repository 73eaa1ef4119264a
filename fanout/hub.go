package fanout

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Hub. The zero value of every field but Encoder means
// "use the default" given in the field's comment.
type Config struct {
	// Encoder encodes the forms of an update, each once for all
	// subscribers. Required.
	Encoder Encoder
	// Shards is the number of channel-map shards (default 64).
	Shards int
	// MaxChannels caps the number of channels holding a cached value
	// (default 100,000). Channels that only have subscribers hold nothing
	// and are bounded by the callers' subscription limits.
	MaxChannels int
	// MaxCachedBytes caps the bytes held by cached publications
	// (default 256 MiB).
	MaxCachedBytes int64
	// IdleTTL evicts a channel that has had no subscriber and no update for
	// this long (default 1h; negative disables idle eviction).
	IdleTTL time.Duration
	// MaxNameLength is the longest accepted channel name
	// (default DefaultMaxNameLength).
	MaxNameLength int
	// HistorySize is how many of a channel's latest publications it keeps
	// for clients to catch up from (0, the default: none, only the cached
	// value). History counts toward MaxCachedBytes.
	HistorySize int
	// Maps are the rules that make channels maps of the channels below
	// them (see MapRule; none by default).
	Maps []MapRule
	// MaxMaps caps the maps on this node (default 10,000), MaxMapEntries
	// the live entries of one map (default 10,000) and MaxMapBytes the
	// bytes charged to one map (default 16 MiB); see maps.go, "Bounds".
	MaxMaps       int
	MaxMapEntries int
	MaxMapBytes   int64
	// OnMapFull is told the subscribers a map dropped when it became full
	// (nil: nobody is told). It runs on the publishing goroutine with no
	// lock held and must not block.
	OnMapFull func(mapName string, dropped []Subscriber)
	// Now returns the current time (default time.Now); tests replace it.
	Now func() time.Time
}

// DefaultConfig returns a Config with every default filled in except Encoder.
func DefaultConfig() Config {
	return Config{
		Shards:         64,
		MaxChannels:    100_000,
		MaxCachedBytes: 256 << 20,
		IdleTTL:        time.Hour,
		MaxNameLength:  DefaultMaxNameLength,
		MaxMaps:        10_000,
		MaxMapEntries:  10_000,
		MaxMapBytes:    16 << 20,
		Now:            time.Now,
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.Shards <= 0 {
		c.Shards = d.Shards
	}
	if c.MaxChannels <= 0 {
		c.MaxChannels = d.MaxChannels
	}
	if c.MaxCachedBytes <= 0 {
		c.MaxCachedBytes = d.MaxCachedBytes
	}
	if c.IdleTTL == 0 {
		c.IdleTTL = d.IdleTTL
	}
	if c.MaxNameLength <= 0 {
		c.MaxNameLength = d.MaxNameLength
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.MaxMaps <= 0 {
		c.MaxMaps = d.MaxMaps
	}
	if c.MaxMapEntries <= 0 {
		c.MaxMapEntries = d.MaxMapEntries
	}
	if c.MaxMapBytes <= 0 {
		c.MaxMapBytes = d.MaxMapBytes
	}
}

// Errors returned by Subscribe.
var (
	ErrAlreadySubscribed = errors.New("fanout: already subscribed")
)

// Stats are the Hub's counters and gauges, read without stopping the Hub.
type Stats struct {
	Channels       int64 // in the registry, with a value or subscribers
	CachedChannels int64 // holding a cached value
	CachedBytes    int64
	Subscriptions  int64
	Publications   uint64
	Deliveries     uint64
	EvictedIdle    uint64 // evicted after IdleTTL
	EvictedCap     uint64 // evicted to get under MaxChannels or MaxCachedBytes
}

// Hub is the channel registry, last-value cache and fan-out point.
type Hub struct {
	cfg    Config
	seed   maphash.Seed
	shards []shard

	channels      atomic.Int64
	cached        atomic.Int64 // channels with a cached value
	cachedBytes   atomic.Int64
	subscriptions atomic.Int64
	publications  atomic.Uint64
	deliveries    atomic.Uint64
	evictedIdle   atomic.Uint64
	evictedCap    atomic.Uint64

	overCap chan struct{} // wakes the evictor; capacity 1
	lastID  atomic.Uint32 // the last channel id handed out

	maps      mapRegistry
	localBase uint64 // makes local map epochs unique to this Hub
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*channel
}

type channel struct {
	name string
	id   uint32

	mu      sync.Mutex
	seq     uint64 // publications so far (Update.Seq)
	last    *Publication
	subs    map[Subscriber]struct{}
	hist    []*Publication // the latest publications, oldest first; nil without history
	dropped int64          // offset of the newest publication dropped from hist; -1: none
	removed bool           // set, under shard.mu and mu, when evicted

	active atomic.Int64 // unix nanos of the last publish or unsubscribe
}

// New returns a Hub. It panics if cfg.Encoder is nil: that is a programming
// error, not a configuration one.
func New(cfg Config) *Hub {
	if cfg.Encoder == nil {
		panic("fanout: Config.Encoder is nil")
	}
	cfg.setDefaults()
	h := &Hub{cfg: cfg, seed: maphash.MakeSeed(), shards: make([]shard, cfg.Shards), overCap: make(chan struct{}, 1)}
	for i := range h.shards {
		h.shards[i].m = make(map[string]*channel)
	}
	h.maps.m = map[string]*mapState{}
	h.localBase = uint64(time.Now().UnixNano())
	return h
}

// Config returns the configuration in use, defaults filled in.
func (h *Hub) Config() Config { return h.cfg }

func (h *Hub) shardFor(name string) *shard {
	return &h.shards[maphash.String(h.seed, name)%uint64(len(h.shards))]
}

// lockChannel returns the live channel called name, locked, creating it if
// create is set. It returns nil if the channel does not exist and create is
// false.
func (h *Hub) lockChannel(name string, create bool) *channel {
	s := h.shardFor(name)
	for {
		s.mu.RLock()
		ch := s.m[name]
		s.mu.RUnlock()
		if ch == nil {
			if !create {
				return nil
			}
			s.mu.Lock()
			ch = s.m[name]
			if ch == nil {
				ch = &channel{name: name, id: h.newID(), subs: make(map[Subscriber]struct{}), dropped: -1}
				ch.active.Store(h.cfg.Now().UnixNano())
				s.m[name] = ch
				h.channels.Add(1)
			}
			s.mu.Unlock()
		}
		ch.mu.Lock()
		if !ch.removed {
			return ch
		}
		ch.mu.Unlock() // evicted between lookup and lock: look again
	}
}

// newID returns a channel id: unique among live channels, never 0 (the
// protocol's "no id"). Ids are not reused until the uint32 space wraps.
func (h *Hub) newID() uint32 {
	for {
		if id := h.lastID.Add(1); id != 0 {
			return id
		}
	}
}

// Publish makes p the channel's cached value and delivers it to the
// channel's subscribers. p.Channel must be a valid name (see ValidateName);
// Publish returns an error wrapping ErrInvalidChannel otherwise. p must not
// be modified afterwards.
func (h *Hub) Publish(p *Publication) error {
	if err := ValidateName(p.Channel, h.cfg.MaxNameLength); err != nil {
		return err
	}
	ch := h.lockChannel(p.Channel, true)
	old := ch.last
	ch.last = p
	if old == nil && h.cached.Add(1) > int64(h.cfg.MaxChannels) {
		h.signalOverCap()
	}
	ch.active.Store(h.cfg.Now().UnixNano())
	grown := h.cachedBytes.Add(p.size() - old.size() + h.remember(ch, p))
	ch.seq++
	if n := len(ch.subs); n > 0 {
		u := &Update{Pub: p, Prev: old, ChannelID: ch.id, Seq: ch.seq, enc: h.cfg.Encoder}
		for s := range ch.subs {
			s.Deliver(u)
		}
		h.deliveries.Add(uint64(n))
	}
	ch.mu.Unlock()
	h.publications.Add(1)
	if grown > h.cfg.MaxCachedBytes {
		h.signalOverCap()
	}
	if len(h.cfg.Maps) > 0 {
		h.publishMap(p, false)
	}
	return nil
}

// PublishRemoval removes the map entry channel p.Channel stands for (see
// MapRule), delivering the removal to the map's subscribers, and forgets
// the channel's cached value: a Kafka tombstone. p.Data is ignored. A
// channel in no map is left alone: ErrNotMap.
func (h *Hub) PublishRemoval(p *Publication) error {
	if err := ValidateName(p.Channel, h.cfg.MaxNameLength); err != nil {
		return err
	}
	if _, _, ok := h.MapOf(p.Channel); !ok {
		return fmt.Errorf("%w: %s is in none", ErrNotMap, p.Channel)
	}
	if ch := h.lockChannel(p.Channel, false); ch != nil {
		if ch.last != nil {
			h.cachedBytes.Add(-ch.last.size())
			h.cached.Add(-1)
			ch.last = nil
		}
		empty := len(ch.subs) == 0 && len(ch.hist) == 0
		ch.mu.Unlock()
		if empty {
			h.removeIfEmpty(ch)
		}
	}
	h.publications.Add(1)
	h.publishMap(p, true)
	return nil
}

// Append adds p to its channel's history without delivering it or making
// it the cached value: a publication a later one of the same channel
// supersedes before it is published (conflation), which a client catching
// up must still see. A no-op without history (HistorySize 0); otherwise as
// Publish for validity.
func (h *Hub) Append(p *Publication) error {
	if h.cfg.HistorySize <= 0 {
		return nil
	}
	if err := ValidateName(p.Channel, h.cfg.MaxNameLength); err != nil {
		return err
	}
	ch := h.lockChannel(p.Channel, true)
	grown := h.cachedBytes.Add(h.remember(ch, p))
	ch.mu.Unlock()
	if grown > h.cfg.MaxCachedBytes {
		h.signalOverCap()
	}
	return nil
}

// KeepsHistory reports whether channels keep a history (HistorySize > 0).
func (h *Hub) KeepsHistory() bool { return h.cfg.HistorySize > 0 }

// remember appends p to ch's history, dropping the oldest entry past
// HistorySize, and returns the change in bytes held. A publication of
// another epoch (stream) starts the history afresh: offsets of different
// streams cannot be compared. Called with ch.mu held.
func (h *Hub) remember(ch *channel, p *Publication) int64 {
	if h.cfg.HistorySize <= 0 {
		return 0
	}
	var grown int64
	if len(ch.hist) > 0 && ch.hist[0].Epoch != p.Epoch {
		for _, q := range ch.hist {
			grown -= q.size()
		}
		clear(ch.hist)
		ch.hist, ch.dropped = ch.hist[:0], -1
	}
	if ch.hist == nil {
		ch.hist = make([]*Publication, 0, h.cfg.HistorySize)
	}
	if len(ch.hist) == h.cfg.HistorySize {
		grown -= ch.hist[0].size()
		ch.dropped = ch.hist[0].Pos.Offset
		copy(ch.hist, ch.hist[1:])
		ch.hist = ch.hist[:len(ch.hist)-1]
	}
	ch.hist = append(ch.hist, p)
	return grown + p.size()
}

// State is where a subscriber starts from.
type State struct {
	// ID is the channel's number on this node (see Subscribe).
	ID uint32
	// Last is the cached publication, nil if none.
	Last *Publication
	// History holds the channel's latest publications, oldest first (empty
	// without history). Dropped is the offset of the newest publication
	// no longer in it, -1 if none was dropped: then what came before
	// History[0] is unknown to this node.
	History []*Publication
	Dropped int64
}

// Since returns the publications after Kafka offset offset of stream
// epoch, oldest first, and whether those are all of them: false when the
// history does not reach back that far or is of another epoch.
func (st *State) Since(epoch string, offset int64) ([]*Publication, bool) {
	if len(st.History) == 0 || st.History[0].Epoch != epoch {
		return nil, false
	}
	if offset < st.History[0].Pos.Offset && (st.Dropped < 0 || offset < st.Dropped) {
		return nil, false
	}
	i := sort.Search(len(st.History), func(i int) bool { return st.History[i].Pos.Offset > offset })
	return st.History[i:], true
}

// History returns the channel's state (a copy of its history), or the
// zero State with Dropped -1 if the channel holds nothing.
func (h *Hub) History(name string) State {
	ch := h.lockChannel(name, false)
	if ch == nil {
		return State{Dropped: -1}
	}
	defer ch.mu.Unlock()
	st := ch.state()
	st.History = slices.Clone(st.History)
	return st
}

func (ch *channel) state() State {
	return State{ID: ch.id, Last: ch.last, History: ch.hist, Dropped: ch.dropped}
}

// Subscribe adds s to the channel called name and calls fn with the
// channel's state (id, cached publication, history) before any later
// publication is delivered to s. fn runs with the channel's lock held; it
// must not block, and st.History is valid only until it returns.
// Subscribing twice with the same s returns ErrAlreadySubscribed.
//
// The id is the channel's number on this node, the same for every
// subscriber, and stays the channel's while it has subscribers (a channel
// is only removed once it has none), so it can stand for the name in
// frames shared by all of them. It means nothing on other nodes.
func (h *Hub) Subscribe(name string, s Subscriber, fn func(st *State)) error {
	if err := ValidateName(name, h.cfg.MaxNameLength); err != nil {
		return err
	}
	ch := h.lockChannel(name, true)
	defer ch.mu.Unlock()
	if _, dup := ch.subs[s]; dup {
		return fmt.Errorf("%w: %s", ErrAlreadySubscribed, name)
	}
	ch.subs[s] = struct{}{}
	h.subscriptions.Add(1)
	if fn != nil {
		st := ch.state()
		fn(&st)
	}
	return nil
}

// Subscribers calls fn for each subscriber of the channel called name
// and returns how many there were. fn runs with the channel's lock held
// (publishing to the channel waits meanwhile): it must not block and must
// not call the Hub.
func (h *Hub) Subscribers(name string, fn func(Subscriber)) int {
	ch := h.lockChannel(name, false)
	if ch == nil {
		return 0
	}
	defer ch.mu.Unlock()
	for s := range ch.subs {
		fn(s)
	}
	return len(ch.subs)
}

// Unsubscribe removes s from the channel called name. It reports whether s
// was subscribed.
func (h *Hub) Unsubscribe(name string, s Subscriber) bool {
	ch := h.lockChannel(name, false)
	if ch == nil {
		return h.UnsubscribeMap(name, s)
	}
	_, ok := ch.subs[s]
	if !ok {
		ch.mu.Unlock()
		return h.UnsubscribeMap(name, s)
	}
	delete(ch.subs, s)
	h.subscriptions.Add(-1)
	ch.active.Store(h.cfg.Now().UnixNano())
	empty := len(ch.subs) == 0 && ch.last == nil
	ch.mu.Unlock()
	if empty {
		h.removeIfEmpty(ch) // holds nothing: do not wait for a sweep
	}
	return true
}

// removeIfEmpty removes ch if it has neither subscribers nor a value.
func (h *Hub) removeIfEmpty(ch *channel) {
	s := h.shardFor(ch.name)
	s.mu.Lock()
	defer s.mu.Unlock()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.removed || len(ch.subs) > 0 || ch.last != nil || len(ch.hist) > 0 {
		return
	}
	ch.removed = true
	delete(s.m, ch.name)
	h.channels.Add(-1)
}

// Last returns the cached publication of the channel called name, or nil.
func (h *Hub) Last(name string) *Publication {
	ch := h.lockChannel(name, false)
	if ch == nil {
		return nil
	}
	defer ch.mu.Unlock()
	return ch.last
}

// ChannelInfo describes one cached channel, for listings.
type ChannelInfo struct {
	Name        string
	Last        *Publication
	Subscribers int
}

// Channels returns up to limit channels whose names start with prefix and
// that hold a cached publication, sorted by name.
func (h *Hub) Channels(prefix string, limit int) []ChannelInfo {
	var out []ChannelInfo
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for name, ch := range s.m {
			if len(name) < len(prefix) || name[:len(prefix)] != prefix {
				continue
			}
			ch.mu.Lock()
			if ch.last != nil {
				out = append(out, ChannelInfo{Name: name, Last: ch.last, Subscribers: len(ch.subs)})
			}
			ch.mu.Unlock()
		}
		s.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// Busiest returns the n channels with the most subscribers among those
// holding a cached publication (names from the feed, not from clients),
// most subscribed first, ties by name. It walks every channel: O(channels
// × n).
func (h *Hub) Busiest(n int) []ChannelInfo {
	if n <= 0 {
		return nil
	}
	top := make([]ChannelInfo, 0, n+1)
	less := func(a, b ChannelInfo) bool {
		return a.Subscribers > b.Subscribers || a.Subscribers == b.Subscribers && a.Name < b.Name
	}
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for name, ch := range s.m {
			ch.mu.Lock()
			c := ChannelInfo{Name: name, Last: ch.last, Subscribers: len(ch.subs)}
			ch.mu.Unlock()
			if c.Last == nil || c.Subscribers == 0 || len(top) == n && !less(c, top[n-1]) {
				continue
			}
			j := sort.Search(len(top), func(j int) bool { return less(c, top[j]) })
			top = append(top, ChannelInfo{})
			copy(top[j+1:], top[j:])
			top[j] = c
			if len(top) > n {
				top = top[:n]
			}
		}
		s.mu.RUnlock()
	}
	return top
}

// Stats returns the Hub's current counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Channels:       h.channels.Load(),
		CachedChannels: h.cached.Load(),
		CachedBytes:    h.cachedBytes.Load(),
		Subscriptions:  h.subscriptions.Load(),
		Publications:   h.publications.Load(),
		Deliveries:     h.deliveries.Load(),
		EvictedIdle:    h.evictedIdle.Load(),
		EvictedCap:     h.evictedCap.Load(),
	}
}

func (h *Hub) signalOverCap() {
	select {
	case h.overCap <- struct{}{}:
	default:
	}
}

// Run evicts idle channels until ctx is done: on every sweep interval
// (a quarter of IdleTTL, at most a minute, at least a second) and at once
// when a cap is exceeded.
func (h *Hub) Run(ctx context.Context) {
	every := min(max(h.cfg.IdleTTL/4, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.overCap:
		}
		h.Sweep()
	}
}

// Sweep evicts channels without subscribers that have been idle longer than
// IdleTTL, then, while a cap is exceeded, the least recently active channels
// without subscribers. It returns the number of channels evicted. Run calls
// it; tests may call it directly.
func (h *Hub) Sweep() int {
	now := h.cfg.Now().UnixNano()
	type candidate struct {
		ch     *channel
		active int64
	}
	var idle []candidate
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, ch := range s.m {
			ch.mu.Lock()
			if len(ch.subs) == 0 {
				idle = append(idle, candidate{ch, ch.active.Load()})
			}
			ch.mu.Unlock()
		}
		s.mu.RUnlock()
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].active < idle[j].active })
	evicted := 0
	for _, c := range idle {
		if !h.expired(c.active, now) && !h.overCapacity() {
			break // sorted oldest first: nothing later is expired either
		}
		if h.evict(c.ch, now) {
			evicted++
		}
	}
	return evicted
}

func (h *Hub) expired(active, now int64) bool {
	return h.cfg.IdleTTL > 0 && now-active > int64(h.cfg.IdleTTL)
}

func (h *Hub) overCapacity() bool {
	return h.cached.Load() > int64(h.cfg.MaxChannels) || h.cachedBytes.Load() > h.cfg.MaxCachedBytes
}

// evict removes ch if it still has no subscribers and is still expired or
// the Hub still over a cap, and counts the eviction by its reason.
func (h *Hub) evict(ch *channel, now int64) bool {
	s := h.shardFor(ch.name)
	s.mu.Lock()
	defer s.mu.Unlock()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.removed || len(ch.subs) > 0 {
		return false
	}
	switch {
	case h.expired(ch.active.Load(), now):
		h.evictedIdle.Add(1)
	case h.overCapacity():
		h.evictedCap.Add(1)
	default:
		return false
	}
	ch.removed = true
	delete(s.m, ch.name)
	h.channels.Add(-1)
	if ch.last != nil {
		h.cached.Add(-1)
	}
	held := ch.last.size()
	for _, p := range ch.hist {
		held += p.size()
	}
	h.cachedBytes.Add(-held)
	return true
}
