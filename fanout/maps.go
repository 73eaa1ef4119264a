package fanout

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Maps: a map channel is a keyed collection whose entries are channels
// below it (MapRule). Publishing to a channel that a rule places in a map
// also sets the map's entry: its key is the channel's last Depth segments,
// its value the publication. A map subscriber gets every entry's change as
// one Update whose Publication carries the map's name as Channel and the
// entry's key as Key (Removed for a removal, see PublishRemoval), and
// as Prev the key's previous value (nil for a key added, re-added or
// removed): what a per-entry delta applies to.
//
// # Positions
//
// A map's entries keep the position of the publication that set them. While
// every entry comes from one stream (one Kafka partition: the producer keys
// a map's channels alike), the map's epoch is that stream's epoch and its
// offsets are the stream's, so a position means the same on every node. An
// entry from another stream switches the map, for as long as it lives on
// this node, to a node-local epoch and offsets counted here: positions
// then only mean something on this node, and a client elsewhere starts
// from a fresh snapshot. A client catching up from a position gets each
// entry changed since, once, with its latest value (MapView.Since): the
// map is its own compacted log, so catching up never needs a history
// ring, only the removals' tombstones, which are kept up to MaxMapEntries
// and then forgotten (a position older than that is unrecoverable).
//
// # Bounds
//
// Config.MaxMaps maps per node, Config.MaxMapEntries entries and
// Config.MaxMapBytes bytes per map (entries' keys, values and overhead;
// the values are shared with the channels' cached publications). A new
// key that would pass a map's bound is refused and the map is marked
// full: from then on it refuses subscribers (ErrMapFull), and its current
// subscribers are dropped and named to Config.OnMapFull, which tells the
// clients. Nothing is truncated silently. Only maps that have held an
// entry count toward MaxMaps; a map only subscribed to (empty) is bounded
// by the subscriptions and removed with its last subscriber. At MaxMaps,
// a new map's first entry is refused (NoRoom), and so is a view of a map
// holding no entries (ErrTooManyMaps): Kafka may have entries for it.
//
// # Lifetime
//
// A map with live entries lives as long as the Hub: its entries are what
// the records read since the start of the partition's reading made them,
// and a map dropped could not be rebuilt without reading the partition
// again; a later subscriber would get a partial snapshot, a wrong state
// rather than a stale one. A map whose live entries have all been
// removed (tombstones: a finished match) holds the state an absent map
// stands for, empty: it is dropped, tombstones and all, once it has no
// subscribers. If its channels get entries again it starts afresh, and a
// map is unrecoverable from positions before its first entry (a client
// there may hold keys whose removal this map never saw): such a client
// starts again from a snapshot.
//
// # Concurrency
//
// Each map has its own lock, taken after the publishing channel's lock is
// released: lock order is shard.mu, then channel.mu; maps.mu, then
// mapState.mu. Deliver to map subscribers and the MapSubscribe callback
// run with the map's lock held.

// MapRule makes every channel starting with Prefix that has channels Depth
// segments below it a map of those channels.
type MapRule struct {
	Prefix string
	Depth  int
}

// Map errors.
var (
	ErrNotMap      = errors.New("fanout: not a map channel")
	ErrMapFull     = errors.New("fanout: map over its limit")
	ErrTooManyMaps = errors.New("fanout: too many maps")
)

// MapStats are the map counters of Stats.
type MapStats struct {
	Maps     int64  // maps holding entries (bounded by MaxMaps)
	Entries  int64  // live entries over all maps
	Bytes    int64  // bytes charged to maps
	Refused  uint64 // entries refused because their map was full
	NoRoom   uint64 // maps not created because MaxMaps was reached
	FullMaps int64  // maps marked full
}

type mapRegistry struct {
	mu sync.RWMutex
	m  map[string]*mapState

	filled   atomic.Int64 // maps holding entries (bounded by MaxMaps)
	entries  atomic.Int64
	bytes    atomic.Int64
	refused  atomic.Uint64
	noRoom   atomic.Uint64
	fullMaps atomic.Int64
	locals   atomic.Uint64 // local epochs handed out
}

type mapState struct {
	name string

	mu      sync.Mutex
	entries map[string]*Publication // live entries and tombstones (Removed)
	// log holds the entries' publications in offset order, and superseded
	// ones until compacted (at twice the entries): what changed since a
	// position costs a search and the changes, not a scan of the map.
	log   []*Publication
	keys  []string // live keys, sorted
	tombs int
	// pruned: positions before this protocol offset are unrecoverable
	// (tombstones forgotten), 0: none.
	pruned  uint64
	epoch   string
	local   bool   // epoch and offsets are this node's (see Positions)
	seq     uint64 // local offsets handed out; updates delivered
	top     uint64 // protocol offset of the newest change
	bytes   int64
	full    bool
	filled  bool // counted in maps.filled
	removed bool // set, under maps.mu and mu, when removed from the registry
	subs    map[Subscriber]struct{}
}

// MapOf returns the map and key channel belongs to under the first rule
// that places it in one.
func (h *Hub) MapOf(channel string) (mapName, key string, ok bool) {
	for _, r := range h.cfg.Maps {
		i := len(channel)
		for d := 0; d < r.Depth && i > 0; d++ {
			i = strings.LastIndexByte(channel[:i], ':')
		}
		if i > len(r.Prefix) && strings.HasPrefix(channel[:i], r.Prefix) {
			return channel[:i], channel[i+1:], true
		}
	}
	return "", "", false
}

// IsMap reports whether name is a map channel under the rules.
func (h *Hub) IsMap(name string) bool {
	for _, r := range h.cfg.Maps {
		if len(name) > len(r.Prefix) && strings.HasPrefix(name, r.Prefix) && name[len(name)-1] != ':' {
			return true
		}
	}
	return false
}

func entrySize(key string, p *Publication) int64 {
	const overhead = 200 // publication struct, map slot, key in keys
	return int64(2*len(key)+len(p.Data)) + overhead
}

// lockMap returns the map called name, locked, creating it if create
// (nil if there is none and create is false).
func (h *Hub) lockMap(name string, create bool) *mapState {
	r := &h.maps
	for {
		r.mu.RLock()
		m := r.m[name]
		r.mu.RUnlock()
		if m == nil {
			if !create {
				return nil
			}
			r.mu.Lock()
			if m = r.m[name]; m == nil {
				m = &mapState{name: name, entries: map[string]*Publication{}, subs: map[Subscriber]struct{}{}}
				r.m[name] = m
			}
			r.mu.Unlock()
		}
		m.mu.Lock()
		if !m.removed {
			return m
		}
		m.mu.Unlock() // removed between lookup and lock: look again
	}
}

// removeMapIfEmpty removes m if it has neither live entries nor
// subscribers, with its tombstones (see "Lifetime").
func (h *Hub) removeMapIfEmpty(m *mapState) {
	r := &h.maps
	r.mu.Lock()
	defer r.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.removed || len(m.keys) > 0 || len(m.subs) > 0 {
		return
	}
	m.removed = true
	delete(r.m, m.name)
	if m.filled {
		r.filled.Add(-1)
	}
	if m.full {
		r.fullMaps.Add(-1)
	}
	r.bytes.Add(-m.bytes)
}

// publishMap sets the entry channel p places in a map, if any; removed
// makes it a removal. Called from Publish with no lock held.
func (h *Hub) publishMap(p *Publication, removed bool) {
	name, key, ok := h.MapOf(p.Channel)
	if !ok {
		return
	}
	m := h.lockMap(name, true)
	dropped := h.setEntry(m, key, p, removed)
	h.unlockMap(m) // removed if refused for want of room
	if len(dropped) > 0 && h.cfg.OnMapFull != nil {
		h.cfg.OnMapFull(name, dropped)
	}
}

// setEntry applies one change to m and delivers it. It returns the
// subscribers dropped because the change made m full. m.mu held.
func (h *Hub) setEntry(m *mapState, key string, p *Publication, removed bool) []Subscriber {
	old := m.entries[key]
	if old == nil && removed {
		return nil // nothing to remove
	}
	if !m.filled {
		// Only maps that have held entries count toward MaxMaps: the
		// empty maps subscribers wait on are bounded by their
		// subscriptions.
		if h.maps.filled.Add(1) > int64(h.cfg.MaxMaps) {
			h.maps.filled.Add(-1)
			h.maps.noRoom.Add(1)
			return nil
		}
		m.filled = true
		if !m.local {
			// Unrecoverable before its first entry: what came before
			// (a removal of a key a client holds, say) is unknown to
			// this map (see "Lifetime").
			m.pruned = uint64(p.Pos.Offset)
		}
	}
	if m.epoch == "" && !m.local {
		m.epoch = p.Epoch
	}
	if !m.local && p.Epoch != m.epoch {
		h.goLocal(m)
	}
	pos := p.Pos
	if m.local {
		m.seq++
		pos = Position{Offset: int64(m.seq) - 1}
	} else if old != nil && old.Pos.Offset >= pos.Offset {
		return nil // read again (a rewound partition): the entry has it
	}
	if m.full && (old == nil || old.Removed) && !removed {
		h.maps.refused.Add(1)
		return nil
	}
	mp := &Publication{Channel: m.name, Key: key, Data: p.Data, Pos: pos, Epoch: m.epoch, Time: p.Time,
		Priority: p.Priority || removed, Binary: p.Binary, Removed: removed, Tags: p.Tags} // a removal is never conflated away
	if removed {
		mp.Data = nil
	}
	live := old != nil && !old.Removed
	grown := entrySize(key, mp)
	if old != nil {
		grown -= entrySize(key, old)
	}
	if !live && !removed && (len(m.keys) >= h.cfg.MaxMapEntries || m.bytes+grown > h.cfg.MaxMapBytes) {
		h.maps.refused.Add(1)
		return h.markFull(m)
	}
	m.bytes += grown
	h.maps.bytes.Add(grown)
	m.entries[key] = mp
	m.logChange(mp)
	switch {
	case !live && !removed:
		i, _ := slices.BinarySearch(m.keys, key)
		m.keys = slices.Insert(m.keys, i, key)
		h.maps.entries.Add(1)
		if old != nil {
			m.tombs--
		}
	case live && removed:
		i, _ := slices.BinarySearch(m.keys, key)
		m.keys = slices.Delete(m.keys, i, i+1)
		h.maps.entries.Add(-1)
		m.tombs++
		if m.tombs > h.cfg.MaxMapEntries {
			h.pruneTombstones(m)
		}
	}
	if !m.local {
		m.seq++
	}
	m.top = max(m.top, uint64(pos.Offset)+1)
	if n := len(m.subs); n > 0 {
		u := &Update{Pub: mp, Seq: m.seq, enc: h.cfg.Encoder}
		if live && !removed {
			u.Prev = old // the key's value a patch applies to
		}
		for s := range m.subs {
			s.Deliver(u)
		}
		h.deliveries.Add(uint64(n))
	}
	return nil
}

// logChange adds mp to m's log, in offset order. m.mu held.
func (m *mapState) logChange(mp *Publication) {
	if n := len(m.log); n > 0 && m.log[n-1].Pos.Offset > mp.Pos.Offset {
		i := sort.Search(n, func(i int) bool { return m.log[i].Pos.Offset > mp.Pos.Offset })
		m.log = slices.Insert(m.log, i, mp) // a partition read again
	} else {
		m.log = append(m.log, mp)
	}
	if len(m.log) > 2*len(m.entries)+16 {
		m.compactLog()
	}
}

// compactLog drops superseded publications from m's log. m.mu held.
func (m *mapState) compactLog() {
	m.log = slices.DeleteFunc(m.log, func(p *Publication) bool { return m.entries[p.Key] != p })
}

// goLocal switches m to a node-local epoch, renumbering its entries.
func (h *Hub) goLocal(m *mapState) {
	m.local = true
	m.epoch = "local-" + strconv.FormatUint(h.localBase, 36) + "-" + strconv.FormatUint(h.maps.locals.Add(1), 36)
	m.seq, m.pruned = 0, 0
	keys := make([]string, 0, len(m.entries))
	for k := range m.entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q := *m.entries[k]
		m.seq++
		q.Pos, q.Epoch = Position{Offset: int64(m.seq) - 1}, m.epoch
		m.entries[k] = &q
	}
	m.log = m.log[:0]
	for _, k := range keys {
		m.log = append(m.log, m.entries[k])
	}
	m.top = m.seq
}

// pruneTombstones forgets m's removals: a client whose position is older
// than the newest of them cannot catch up any more. m.mu held.
func (h *Hub) pruneTombstones(m *mapState) {
	for k, e := range m.entries {
		if e.Removed {
			m.pruned = max(m.pruned, uint64(e.Pos.Offset)+1)
			delete(m.entries, k)
			m.bytes -= entrySize(k, e)
			h.maps.bytes.Add(-entrySize(k, e))
		}
	}
	m.tombs = 0
	m.compactLog()
}

// markFull marks m full and drops its subscribers, returning them.
func (h *Hub) markFull(m *mapState) []Subscriber {
	if !m.full {
		m.full = true
		h.maps.fullMaps.Add(1)
	}
	if len(m.subs) == 0 {
		return nil
	}
	out := make([]Subscriber, 0, len(m.subs))
	for s := range m.subs {
		out = append(out, s)
	}
	h.subscriptions.Add(-int64(len(m.subs)))
	clear(m.subs)
	return out
}

// MapEntry is one entry of a map page.
type MapEntry = *Publication

// MapView is a map as a subscriber sees it at one moment. Valid only in
// the callback it is passed to.
type MapView struct {
	m   *mapState
	cfg *Config
}

// Epoch and Top are the map's position: its stream's epoch and the
// newest entry's protocol offset (Kafka offset + 1; 0: empty).
func (v *MapView) Epoch() string { return v.m.epoch }

// Top is the protocol offset of the map's newest change (0: none).
func (v *MapView) Top() uint64 { return v.m.top }

// Local reports whether the map's positions are this node's only.
func (v *MapView) Local() bool { return v.m.local }

// Len is the number of live entries.
func (v *MapView) Len() int { return len(v.m.keys) }

// Page returns up to limit live entries with keys after cursor (all from
// the first if cursor is ""), in key order, stopping early once their data
// passes maxBytes (at least one entry is returned), and the cursor of the
// next page ("" after the last).
func (v *MapView) Page(cursor string, limit, maxBytes int) (entries []*Publication, next string) {
	keys := v.m.keys
	i := 0
	if cursor != "" {
		i, _ = slices.BinarySearch(keys, cursor)
		if i < len(keys) && keys[i] == cursor {
			i++
		}
	}
	size := 0
	for ; i < len(keys) && len(entries) < limit; i++ {
		e := v.m.entries[keys[i]]
		if len(entries) > 0 && size+len(e.Data) > maxBytes {
			break
		}
		size += len(e.Data)
		entries = append(entries, e)
	}
	if i < len(keys) {
		next = keys[i-1]
	}
	return entries, next
}

// Since returns the entries (and removals) changed after protocol offset
// offset of epoch, oldest change first, each once with its latest value,
// and whether that is all that changed: false when epoch is another
// stream's or the removals since were forgotten. An empty epoch at offset
// 0 asks for every entry (a client whose snapshot found the map empty).
//
// At most max are returned (a page and one more tells whether another
// page follows): the cost is that of the changes returned.
func (v *MapView) Since(epoch string, offset uint64, max int) ([]*Publication, bool) {
	m := v.m
	if epoch == "" && offset == 0 {
		epoch = m.epoch // a client holding nothing: every entry
	} else if epoch != m.epoch || (m.pruned > 0 && offset < m.pruned) {
		return nil, false
	}
	i := sort.Search(len(m.log), func(i int) bool { return uint64(m.log[i].Pos.Offset)+1 > offset })
	var out []*Publication
	for _, p := range m.log[i:] {
		if len(out) == max {
			break
		}
		if m.entries[p.Key] == p {
			out = append(out, p)
		}
	}
	return out, true
}

// ViewMap calls fn with the map called name as it is now, creating an
// empty map if there is none (so that a subscriber can wait for its first
// entry). Errors: ErrNotMap, ErrTooManyMaps, ErrMapFull.
func (h *Hub) ViewMap(name string, fn func(v *MapView)) error {
	m, err := h.openMap(name)
	if err != nil {
		return err
	}
	defer h.unlockMap(m)
	fn(&MapView{m: m, cfg: &h.cfg})
	return nil
}

// unlockMap unlocks m, removing it if it holds no live entry and has no
// subscriber.
func (h *Hub) unlockMap(m *mapState) {
	empty := len(m.keys) == 0 && len(m.subs) == 0
	m.mu.Unlock()
	if empty {
		h.removeMapIfEmpty(m)
	}
}

func (h *Hub) openMap(name string) (*mapState, error) {
	if err := ValidateName(name, h.cfg.MaxNameLength); err != nil {
		return nil, err
	}
	if !h.IsMap(name) {
		return nil, fmt.Errorf("%w: %s", ErrNotMap, name)
	}
	m := h.lockMap(name, true)
	switch {
	case m.full:
		h.unlockMap(m)
		return nil, fmt.Errorf("%w: %s", ErrMapFull, name)
	case !m.filled && h.maps.filled.Load() >= int64(h.cfg.MaxMaps):
		// Kafka may hold entries this node had no room for. (The empty
		// map just made goes again: refused subscribes leave nothing.)
		h.unlockMap(m)
		return nil, fmt.Errorf("%w: %d maps on this node", ErrTooManyMaps, h.cfg.MaxMaps)
	}
	return m, nil
}

// SubscribeMap is ViewMap that, when fn returns true, also adds s to the
// map's subscribers in the same step: s gets every change after the view.
// Subscribing s twice returns ErrAlreadySubscribed.
func (h *Hub) SubscribeMap(name string, s Subscriber, fn func(v *MapView) bool) error {
	m, err := h.openMap(name)
	if err != nil {
		return err
	}
	defer h.unlockMap(m)
	if _, dup := m.subs[s]; dup {
		return fmt.Errorf("%w: %s", ErrAlreadySubscribed, name)
	}
	if fn(&MapView{m: m, cfg: &h.cfg}) {
		m.subs[s] = struct{}{}
		h.subscriptions.Add(1)
	}
	return nil
}

// UnsubscribeMap removes s from the map called name and reports whether
// it was subscribed.
func (h *Hub) UnsubscribeMap(name string, s Subscriber) bool {
	m := h.lockMap(name, false)
	if m == nil {
		return false
	}
	defer h.unlockMap(m)
	_, ok := m.subs[s]
	if ok {
		delete(m.subs, s)
		h.subscriptions.Add(-1)
	}
	return ok
}

// MapStats returns the map counters.
func (h *Hub) MapStats() MapStats {
	r := &h.maps
	return MapStats{Maps: r.filled.Load(), Entries: r.entries.Load(), Bytes: r.bytes.Load(), Refused: r.refused.Load(),
		NoRoom: r.noRoom.Load(), FullMaps: r.fullMaps.Load()}
}

// Subscribed reports whether s is subscribed to the channel or map called
// name.
func (h *Hub) Subscribed(name string, s Subscriber) bool {
	if ch := h.lockChannel(name, false); ch != nil {
		_, ok := ch.subs[s]
		ch.mu.Unlock()
		if ok {
			return true
		}
	}
	m := h.lockMap(name, false)
	if m == nil {
		return false
	}
	defer m.mu.Unlock()
	_, ok := m.subs[s]
	return ok
}
