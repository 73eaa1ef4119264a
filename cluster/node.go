package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrNoName is returned by New for a configuration without a name.
var ErrNoName = errors.New("cluster: name required")

// Node is the local member of the cluster. Its methods are safe for
// concurrent use.
type Node struct {
	cfg    Config
	key    []byte
	status StatusFunc
	hooks  Hooks
	log    *slog.Logger
	// lookup resolves a seed host to its addresses; tests replace it
	// before Start.
	lookup func(ctx context.Context, host string) ([]string, error)
	tick   time.Duration

	ml   *memberlist.Memberlist // set by Start, then read-only
	addr string                 // advertised gossip address, set by Start

	q queries // query.go

	localMeta atomic.Pointer[[]byte] // what memberlist gossips (NodeMeta)
	joining   atomic.Bool            // a join goroutine runs
	joins     atomic.Int64           // join attempts made (tests)

	mu      sync.Mutex // guards the fields below; hooks are called with it held
	members map[string]*Member
	counts  Counts
	closed  bool // Leave or Shutdown called

	// The refresh loop's own; Leave reads them once the loop is done.
	seq     uint64
	sent    Meta
	sentAt  time.Time
	retried time.Time
	stop    chan struct{}
	done    chan struct{}
}

// New validates cfg and builds a Node; it opens no socket (Start does).
// status reports the local node's state; hooks may be nil.
func New(cfg Config, status StatusFunc, hooks Hooks, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate("cluster"); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		return nil, ErrNoName
	}
	key, _ := decodeKey(cfg.SecretKey)
	if hooks == nil {
		hooks = nopHooks{}
	}
	return &Node{
		cfg: cfg, key: key, status: status, hooks: hooks, log: log.With("component", "cluster"),
		lookup:  net.DefaultResolver.LookupHost,
		tick:    min(time.Second, cfg.UpdateInterval, cfg.RetryInterval),
		members: map[string]*Member{},
		counts:  Counts{Alone: true},
		q:       queries{slots: make(chan struct{}, maxQueryHandlers), pending: map[uint64]chan []byte{}},
		stop:    make(chan struct{}), done: make(chan struct{}),
	}, nil
}

// Name returns the local node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Addr returns the advertised gossip address once started; "" with gossip
// off.
func (n *Node) Addr() string { return n.addr }

// Start opens the gossip sockets, joins the seeds in the background and
// starts gossiping metadata. With gossip off it does nothing. It returns
// an error only when the sockets cannot be opened; unreachable seeds
// leave the node alone, retrying every Config.RetryInterval.
func (n *Node) Start() error {
	if !n.cfg.Enabled() {
		return nil
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.Name
	host, port, _ := splitHostPort(n.cfg.Bind)
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = cmp.Or(host, "0.0.0.0"), port, port
	if n.cfg.Advertise != "" {
		ahost, aport, _ := splitHostPort(n.cfg.Advertise)
		mc.AdvertiseAddr = ahost
		if aport != 0 {
			mc.AdvertisePort = aport
		}
	}
	mc.SecretKey = n.key
	g := gossip{n}
	mc.Delegate, mc.Events = g, g
	mc.Logger = log.New(gossipLog{n.log}, "", 0)
	if n.cfg.Memberlist != nil {
		n.cfg.Memberlist(mc)
	}
	n.sent = n.localStatus()
	n.storeMeta(n.sent)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: gossip on %s: %w", n.cfg.Bind, err)
	}
	n.ml, n.addr = ml, ml.LocalNode().Address()
	n.sentAt = time.Now()
	n.mu.Lock()
	n.publishLocked(true)
	n.mu.Unlock()
	n.log.Info("cluster gossip listening", "name", n.cfg.Name, "bind", n.cfg.Bind, "advertise", n.addr,
		"seeds", n.cfg.Seeds, "encrypted", len(n.key) > 0)
	n.startJoin(true)
	go n.loop()
	return nil
}

// Leave announces the node is leaving, so that the others list it as left
// rather than failed, leaves the cluster and stops gossip, within about
// timeout. With gossip off, or once stopped, it does nothing.
func (n *Node) Leave(timeout time.Duration) error {
	if !n.close() {
		return nil
	}
	deadline := time.Now().Add(timeout)
	n.sent.State, n.sent.Seq = StateLeaving, n.seq+1
	n.storeMeta(n.sent)
	err := n.ml.UpdateNode(timeout / 2)
	if e := n.ml.Leave(time.Until(deadline)); e != nil {
		err = e
	}
	n.ml.Shutdown()
	n.log.Info("left the cluster", "name", n.cfg.Name)
	return err
}

// Shutdown stops gossip without leaving: the others will find this node
// failed. With gossip off, or once stopped, it does nothing.
func (n *Node) Shutdown() {
	if n.close() {
		n.ml.Shutdown()
	}
}

// close stops the loop; it reports whether the caller should stop
// memberlist (gossip was running and nobody stopped it before).
func (n *Node) close() bool {
	n.mu.Lock()
	was := n.closed
	n.closed = true
	n.mu.Unlock()
	if was || n.ml == nil {
		return false
	}
	close(n.stop)
	<-n.done
	return true
}

// Members returns every member this node knows, itself included, sorted
// by name: alive and suspect ones, and dead or left ones for
// Config.ForgetAfter. With gossip off it returns the local node alone.
func (n *Node) Members() []Member {
	if !n.cfg.Enabled() {
		now := time.Now()
		return []Member{{Name: n.cfg.Name, State: Alive, Since: now, Heard: now, Meta: n.localStatus()}}
	}
	n.mu.Lock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		out = append(out, *m)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Alone reports whether no other member is alive or suspect; true with
// gossip off.
func (n *Node) Alone() bool {
	if !n.cfg.Enabled() {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.counts.Alone
}

// localStatus is the local node's metadata now (Seq not set).
func (n *Node) localStatus() Meta {
	st := n.status()
	return Meta{Format: metaFormat, PublicURL: cmp.Or(n.cfg.PublicURL, st.PublicURL), Version: st.Version, State: st.State,
		Connections: st.Connections, Subscriptions: st.Subscriptions, Load: st.Load}
}

func (n *Node) storeMeta(m Meta) {
	b := encodeMeta(m)
	n.localMeta.Store(&b)
}

// loop refreshes the local metadata, marks stale members suspect, forgets
// old dead ones and retries joins, every tick.
func (n *Node) loop() {
	defer close(n.done)
	t := time.NewTicker(n.tick)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case now := <-t.C:
			n.refresh(now)
			n.sweep(now)
			if now.Sub(n.retried) >= n.cfg.RetryInterval {
				n.startJoin(false)
			}
		}
	}
}

// refresh gossips the local metadata when its state changed or
// UpdateInterval has passed: a bounded rate of memberlist updates
// whatever the load figures do.
func (n *Node) refresh(now time.Time) {
	m := n.localStatus()
	if m.State == n.sent.State && m.PublicURL == n.sent.PublicURL && now.Sub(n.sentAt) < n.cfg.UpdateInterval {
		return
	}
	n.seq++
	m.Seq = n.seq
	n.sent, n.sentAt = m, now
	n.storeMeta(m)
	if err := n.ml.UpdateNode(n.tick); err != nil {
		n.log.Debug("metadata update not confirmed", "err", err)
	}
}

// sweep marks members whose metadata is stale suspect and forgets dead
// and left ones after ForgetAfter.
func (n *Node) sweep(now time.Time) {
	stale := 3 * n.cfg.UpdateInterval
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, m := range n.members {
		switch {
		case name == n.cfg.Name:
		case m.State == Alive && now.Sub(m.Heard) > stale:
			m.State, m.Since = Suspect, now
			n.log.Warn("cluster member suspect: no metadata from it", "member", name, "address", m.Address, "for", now.Sub(m.Heard).Round(time.Millisecond))
			n.hooks.OnEvent(Event{EventSuspect, *m})
		case (m.State == Dead || m.State == Left) && now.Sub(m.Since) > n.cfg.ForgetAfter:
			delete(n.members, name)
		}
	}
	n.publishLocked(false)
}

// startJoin joins the seeds and the addresses of failed members in a
// goroutine of its own (a join may wait memberlist's TCP timeout per
// address), when the node is alone or some member failed; first: the
// attempt at start.
func (n *Node) startJoin(first bool) {
	n.mu.Lock()
	var failed []string
	for _, m := range n.members {
		if m.State == Dead {
			failed = append(failed, m.Address)
		}
	}
	alone := n.counts.Alone
	n.mu.Unlock()
	if (!alone && len(failed) == 0) || !n.joining.CompareAndSwap(false, true) {
		return
	}
	n.retried = time.Now()
	go func() {
		defer n.joining.Store(false)
		n.join(first, alone, failed)
	}()
}

func (n *Node) join(first, alone bool, failed []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	targets := n.targets(ctx, failed)
	cancel()
	n.joins.Add(1)
	if len(targets) == 0 {
		if first {
			n.log.Info("cluster: no seed but this node; serving alone until another member joins")
		}
		return
	}
	joined := 0
	var errs []error
	for _, t := range targets {
		n.mu.Lock()
		closed := n.closed
		n.mu.Unlock()
		if closed {
			return
		}
		if _, err := n.ml.Join([]string{t}); err != nil {
			errs = append(errs, err)
			continue
		}
		joined++
	}
	switch {
	case joined > 0 && alone:
		n.log.Info("joined the cluster", "reached", joined, "of", len(targets))
	case joined == 0 && alone:
		// Warn at start, then at debug: the alone gauge and /v1/cluster
		// keep saying it.
		lvl := slog.LevelDebug
		if first {
			lvl = slog.LevelWarn
		}
		n.log.Log(context.Background(), lvl, "cluster: no seed reachable; serving alone (Kafka still carries the data), retrying",
			"seeds", n.cfg.Seeds, "every", n.cfg.RetryInterval, "err", errors.Join(errs...))
	}
}

// targets resolves the seeds (each host to all its addresses), adds the
// failed members' addresses and drops the node's own address.
func (n *Node) targets(ctx context.Context, failed []string) []string {
	var out []string
	for _, s := range n.cfg.Seeds {
		host, port, _ := net.SplitHostPort(s)
		if net.ParseIP(host) != nil {
			out = append(out, s)
			continue
		}
		addrs, err := n.lookup(ctx, host)
		if err != nil {
			n.log.Debug("resolving seed", "seed", s, "err", err)
			continue
		}
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a, port))
		}
	}
	out = append(out, failed...)
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(a string) bool { return a == n.addr })
}

// publishLocked recomputes the counts and calls OnCounts when they
// changed (or force). n.mu must be held.
func (n *Node) publishLocked(force bool) {
	var c Counts
	peers := 0
	for name, m := range n.members {
		switch m.State {
		case Alive:
			c.Alive++
		case Suspect:
			c.Suspect++
		case Dead:
			c.Dead++
		case Left:
			c.Left++
		}
		if name != n.cfg.Name && (m.State == Alive || m.State == Suspect) {
			peers++
		}
	}
	c.Alone = peers == 0
	if c == n.counts && !force {
		return
	}
	if c.Alone && !n.counts.Alone && n.counts.Alive+n.counts.Suspect > 0 && !n.closed {
		n.log.Warn("cluster: no other member alive; serving alone (Kafka still carries the data)")
	}
	n.counts = c
	n.hooks.OnCounts(c)
}

// memberlist callbacks

const (
	seenJoin = iota
	seenUpdate
	seenLeave
)

// observe records what memberlist said about a node. Memberlist calls it
// with its node lock held, so it must not call memberlist.
func (n *Node) observe(node *memberlist.Node, seen int) {
	meta, metaOK := decodeMeta(node.Meta)
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.members[node.Name]
	if m == nil {
		m = &Member{Name: node.Name}
		n.members[node.Name] = m
	}
	prev := m.State
	m.Address = node.Address()
	if metaOK {
		m.Meta = meta
	}
	var kind EventKind
	switch seen {
	case seenJoin:
		m.State, m.Heard, kind = Alive, now, EventJoin
	case seenUpdate:
		m.State, m.Heard, kind = Alive, now, EventUpdate
	case seenLeave:
		kind = EventFailed
		m.State = Dead
		if m.Meta.State == StateLeaving {
			m.State, kind = Left, EventLeave
		}
	}
	if m.State != prev {
		m.Since = now
	}
	if node.Name != n.cfg.Name {
		n.hooks.OnEvent(Event{kind, *m})
		attrs := []any{"member", m.Name, "address", m.Address, "state", m.Meta.State, "url", m.Meta.PublicURL}
		switch {
		case kind == EventFailed:
			n.log.Warn("cluster member failed", attrs...)
		case kind == EventUpdate && prev != Suspect:
			n.log.Debug("cluster member updated", append(attrs, "connections", m.Meta.Connections, "load", m.Meta.Load)...)
		case kind == EventUpdate:
			n.log.Info("cluster member heard from again", attrs...)
		default:
			n.log.Info("cluster member "+string(kind), attrs...)
		}
	}
	n.publishLocked(false)
}

// gossip adapts a Node to memberlist's delegates.
type gossip struct{ n *Node }

var (
	_ memberlist.Delegate      = gossip{}
	_ memberlist.EventDelegate = gossip{}
)

func (g gossip) NodeMeta(limit int) []byte {
	b := *g.n.localMeta.Load()
	if len(b) > limit {
		return nil // cannot happen with a validated PublicURL; gossip on without metadata
	}
	return b
}

func (g gossip) NotifyMsg(b []byte)                 { g.n.notifyMsg(b) }
func (gossip) GetBroadcasts(_, _ int) [][]byte      { return nil }
func (gossip) LocalState(bool) []byte               { return nil }
func (gossip) MergeRemoteState([]byte, bool)        {}
func (g gossip) NotifyJoin(node *memberlist.Node)   { g.n.observe(node, seenJoin) }
func (g gossip) NotifyUpdate(node *memberlist.Node) { g.n.observe(node, seenUpdate) }
func (g gossip) NotifyLeave(node *memberlist.Node)  { g.n.observe(node, seenLeave) }

// gossipLog turns memberlist's "[LEVEL] memberlist: ..." lines into slog
// records at that level.
type gossipLog struct{ log *slog.Logger }

func (g gossipLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	lvl := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			lvl, line = l, strings.TrimSpace(rest)
			break
		}
	}
	g.log.Log(context.Background(), lvl, strings.TrimPrefix(line, "memberlist: "), "source", "memberlist")
	return len(p), nil
}
