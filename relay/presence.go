package relay

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// Presence: who is subscribed to a channel, summed over the cluster.
//
// A node answers presence and presence_stats for channels of namespaces
// with presence: true. It counts its own subscribers by walking the
// channel's subscriber set in the hub, asks every other alive member the
// same by a cluster query (package cluster: one reliable memberlist
// message each way, channels.presence.timeout to answer), and adds the
// answers up. One answer per channel and kind is cached for
// channels.presence.cache, and concurrent asks for it wait for the one
// query in flight, so that many clients asking about a hot channel cost
// one walk and one query per node per cache period.
//
// num_users is the sum of each node's distinct users: a user with
// connections on two nodes counts twice (the nodes do not exchange user
// lists for the stats). The list ("presence") is exact and only served
// for channels with at most channels.presence.max_clients subscribers.
//
// A member that does not answer in time is left out (counted in
// edgerelay_presence_queries_total{result="partial"}).

// presenceQuery is what a node asks the others; presenceAnswer is what
// each node (and the sum) says. JSON, over the cluster's query messages.
type presenceQuery struct {
	Channel string `json:"ch,omitempty"`
	List    bool   `json:"l,omitempty"`
	Max     int    `json:"m,omitempty"` // the list's bound: past it only counts
	// Top asks instead for the node's Top most subscribed channels
	// (the busiest-channels gauge).
	Top int `json:"top,omitempty"`
}

// channelCount is one channel of a node's busiest.
type channelCount struct {
	Name string `json:"n"`
	Subs int    `json:"s"`
}

type presenceAnswer struct {
	Clients int                            `json:"c"`
	Users   int                            `json:"u"`
	List    map[string]protocol.ClientInfo `json:"p,omitempty"`
	TooMany bool                           `json:"t,omitempty"` // the list passed Max
}

// presenceKey names a cached answer.
type presenceKey struct {
	channel string
	list    bool
}

// presenceEntry is an answer being computed (waiters) or computed.
type presenceEntry struct {
	done    bool
	expires time.Time
	answer  presenceAnswer
	waiters []func(presenceAnswer)
}

// maxPresenceEntries bounds the cache: past it, expired entries are
// swept, and if none are, asks are answered 106 until some expire.
const maxPresenceEntries = 10_000

// maxPresenceQueries bounds the uncached asks being answered at once (each
// a walk of the channel's subscribers and a cluster query of up to
// channels.presence.timeout): past it, asks for other channels get 111.
const maxPresenceQueries = 64

// presence is a node's presence service. Safe for concurrent use.
type presence struct {
	s       *Server
	queries *prometheus.CounterVec   // by kind and result
	latency *prometheus.HistogramVec // cluster queries, by kind
	// busiestGauge: edgerelay_channel_subscribers_busiest (nil: off)
	busiestGauge *prometheus.GaugeVec

	mu       sync.Mutex
	entries  map[presenceKey]*presenceEntry
	swept    time.Time
	inFlight int // uncached asks being answered
}

func (s *Server) newPresence() *presence {
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "edgerelay", Name: name, Help: help}
	}
	p := &presence{s: s, entries: map[presenceKey]*presenceEntry{},
		queries: prometheus.NewCounterVec(prometheus.CounterOpts(f("presence_requests_total",
			"presence and presence_stats answered, by kind and result: cached (from the cache or a query in flight), complete (every member answered), partial (some did not in time), alone (no other member), refused (over channels.presence.max_clients, or the cache full).")), []string{"kind", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "edgerelay", Name: "presence_query_seconds",
			Help:    "Time to answer a presence query that was not cached: the local walk and the other members' answers.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}, []string{"kind"}),
	}
	s.metrics.reg.MustRegister(p.queries, p.latency)
	if s.cfg.Channels.Presence.Busiest > 0 {
		p.busiestGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "edgerelay", Name: "channel_subscribers_busiest",
			Help: "Subscribers of the channels.presence.busiest channels with the most, summed over every node of the cluster (every node reports the same figures: use max by (channel))."}, []string{"channel"})
		s.metrics.reg.MustRegister(p.busiestGauge)
	}
	s.cluster.SetQueryHandler(p.answerQuery)
	return p
}

func presenceKind(list bool) string {
	if list {
		return "presence"
	}
	return "presence_stats"
}

// local counts this node's subscribers of channel, and lists them if
// list and there are at most max.
func (p *presence) local(channel string, list bool, max int) presenceAnswer {
	var a presenceAnswer
	users := map[string]struct{}{}
	if list {
		a.List = map[string]protocol.ClientInfo{}
	}
	a.Clients = p.s.hub.Subscribers(channel, func(sub fanout.Subscriber) {
		sink, ok := sub.(*engine.Sink)
		if !ok {
			return
		}
		// A session's user and id are set before it subscribes (under
		// the channel lock held here) and never change after.
		c := sink.Handler().(*session)
		users[c.user] = struct{}{}
		if list && len(a.List) < max {
			id := c.clientID()
			a.List[id] = protocol.ClientInfo{User: c.user, Client: id}
		}
	})
	a.Users = len(users)
	if list && a.Clients > max {
		a.TooMany, a.List = true, nil
	}
	return a
}

// answerQuery is the cluster.QueryFunc: another member asks.
func (p *presence) answerQuery(req []byte) []byte {
	var q presenceQuery
	if json.Unmarshal(req, &q) != nil {
		return nil
	}
	if q.Top > 0 {
		b, _ := json.Marshal(p.localBusiest(min(q.Top, 3*maxBusiest)))
		return b
	}
	if fanout.ValidateName(q.Channel, p.s.cfg.Channels.MaxNameLength) != nil {
		return nil
	}
	b, _ := json.Marshal(p.local(q.Channel, q.List, min(q.Max, p.s.cfg.Channels.Presence.MaxClients)))
	return b
}

// ask answers for channel (list: the client list, else the counts): at
// once (now true) from the cache or with an error, else later with done,
// on a goroutine of its own, once the members have answered.
func (p *presence) ask(channel string, list bool, done func(presenceAnswer, *protocol.Error)) (a presenceAnswer, e *protocol.Error, now bool) {
	kind := presenceKind(list)
	key := presenceKey{channel, list}
	cfg := p.s.cfg.Channels.Presence
	t := time.Now()
	p.mu.Lock()
	entry := p.entries[key]
	switch {
	case entry != nil && !entry.done:
		entry.waiters = append(entry.waiters, func(a presenceAnswer) { done(p.result(a, list)) })
		p.mu.Unlock()
		p.queries.WithLabelValues(kind, "cached").Inc()
		return a, nil, false
	case entry != nil && t.Before(entry.expires):
		a = entry.answer
		p.mu.Unlock()
		p.queries.WithLabelValues(kind, "cached").Inc()
		a, e = p.result(a, list)
		return a, e, true
	}
	if len(p.entries) >= maxPresenceEntries {
		p.sweepLocked(t)
		if len(p.entries) >= maxPresenceEntries {
			p.mu.Unlock()
			p.queries.WithLabelValues(kind, "refused").Inc()
			return a, protocol.ErrLimitExceeded.WithMessage("too many channels asked about at once; try again shortly"), true
		}
	}
	if p.inFlight >= maxPresenceQueries {
		p.mu.Unlock()
		p.queries.WithLabelValues(kind, "refused").Inc()
		return a, protocol.ErrTooManyRequests.WithMessage("too many presence queries in progress on this node; try again shortly"), true
	}
	p.inFlight++
	entry = &presenceEntry{}
	p.entries[key] = entry
	p.mu.Unlock()

	go func() {
		start := time.Now()
		a, result := p.query(channel, list, cfg)
		p.latency.WithLabelValues(kind).Observe(time.Since(start).Seconds())
		p.queries.WithLabelValues(kind, result).Inc()
		p.mu.Lock()
		p.inFlight--
		entry.done, entry.answer, entry.expires = true, a, time.Now().Add(cfg.Cache)
		waiters := entry.waiters
		entry.waiters = nil
		if cfg.Cache == 0 {
			delete(p.entries, key)
		}
		p.mu.Unlock()
		done(p.result(a, list))
		for _, w := range waiters {
			w(a)
		}
	}()
	return a, nil, false
}

// query sums the local answer and the other members'.
func (p *presence) query(channel string, list bool, cfg PresenceConfig) (presenceAnswer, string) {
	sum := p.local(channel, list, cfg.MaxClients)
	req, _ := json.Marshal(presenceQuery{Channel: channel, List: list, Max: cfg.MaxClients})
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	answers, asked, err := p.s.cluster.Query(ctx, req)
	result := "complete"
	switch {
	case err != nil: // cluster.ErrBusy: too many queries in flight
		p.s.log.Debug("presence query not sent", "channel", channel, "err", err)
		result = "partial"
	case asked == 0:
		result = "alone"
	case len(answers) < asked:
		result = "partial"
	}
	for _, b := range answers {
		var a presenceAnswer
		if json.Unmarshal(b, &a) != nil {
			continue
		}
		sum.Clients += a.Clients
		sum.Users += a.Users
		sum.TooMany = sum.TooMany || a.TooMany
		if sum.List != nil {
			maps.Copy(sum.List, a.List) // each at most MaxClients
		}
	}
	if list && (sum.TooMany || sum.Clients > cfg.MaxClients) {
		sum.TooMany, sum.List = true, nil
	}
	return sum, result
}

// result is the reply's error for an answer: a list past the bound.
func (p *presence) result(a presenceAnswer, list bool) (presenceAnswer, *protocol.Error) {
	if list && a.TooMany {
		p.queries.WithLabelValues("presence", "refused").Inc()
		return a, protocol.ErrLimitExceeded.WithMessage(fmt.Sprintf("presence lists only channels with at most %d subscribers (channels.presence.max_clients); use presence_stats", p.s.cfg.Channels.Presence.MaxClients))
	}
	return a, nil
}

// sweepLocked drops expired answers, at most once a second.
func (p *presence) sweepLocked(now time.Time) {
	if now.Sub(p.swept) < time.Second {
		return
	}
	p.swept = now
	for k, e := range p.entries {
		if e.done && now.After(e.expires) {
			delete(p.entries, k)
		}
	}
}

// maxBusiest bounds channels.presence.busiest.
const maxBusiest = 100

func (p *presence) localBusiest(n int) []channelCount {
	var out []channelCount
	for _, c := range p.s.hub.Busiest(n) {
		out = append(out, channelCount{c.Name, c.Subscribers})
	}
	return out
}

// busiest keeps edgerelay_channel_subscribers_busiest{channel}: the
// channels.presence.busiest channels with the most subscribers summed
// over the cluster. Each node reports its own 3N busiest and the sums
// are ranked, so a channel that is in no node's 3N but in the cluster's N
// is missed: exact for the hot channels it is meant for. Runs until ctx
// is done.
func (p *presence) busiest(ctx context.Context) {
	cfg := p.s.cfg.Channels.Presence
	n, gauge := cfg.Busiest, p.busiestGauge
	if n == 0 {
		return
	}
	shown := map[string]bool{}
	t := time.NewTicker(cfg.BusiestInterval)
	defer t.Stop()
	for {
		sums := map[string]int{}
		for _, c := range p.localBusiest(3 * n) {
			sums[c.Name] += c.Subs
		}
		req, _ := json.Marshal(presenceQuery{Top: 3 * n})
		qctx, cancel := context.WithTimeout(ctx, p.s.cfg.Channels.Presence.Timeout)
		answers, _, _ := p.s.cluster.Query(qctx, req)
		cancel()
		for _, b := range answers {
			var cs []channelCount
			json.Unmarshal(b, &cs)
			for _, c := range cs {
				if fanout.ValidateName(c.Name, p.s.cfg.Channels.MaxNameLength) == nil {
					sums[c.Name] += c.Subs
				}
			}
		}
		top := slices.SortedFunc(maps.Keys(sums), func(a, b string) int {
			return cmp.Or(cmp.Compare(sums[b], sums[a]), strings.Compare(a, b))
		})
		top = top[:min(n, len(top))]
		now := map[string]bool{}
		for _, ch := range top {
			gauge.WithLabelValues(ch).Set(float64(sums[ch]))
			now[ch] = true
		}
		for ch := range shown {
			if !now[ch] {
				gauge.DeleteLabelValues(ch)
			}
		}
		shown = now
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// handlePresence runs presence (list) and presence_stats: for channels
// the client may read, of namespaces with presence on; the answer comes
// from the cache at once or, after the cluster query, from another
// goroutine (sendNow).
func (c *session) handlePresence(id uint32, req *protocol.ChannelRequest, list bool) {
	s := c.srv
	switch {
	case fanout.ValidateName(req.Channel, s.cfg.Channels.MaxNameLength) != nil:
		c.replyError(id, protocol.ErrBadRequest.WithMessage("presence needs a valid channel name"))
		return
	case !c.mayRead(id, req.Channel, c.findSub(req.Channel) >= 0):
		return
	case !s.namespaceOf(req.Channel).Presence:
		c.replyError(id, protocol.ErrNotAvailable.WithMessage("presence is off for this namespace (channels.namespaces[].presence)"))
		return
	}
	a, e, now := s.presence.ask(req.Channel, list, func(a presenceAnswer, e *protocol.Error) {
		c.sendNow(c.codec.AppendReply(nil, presenceReply(id, list, a, e)))
	})
	if now {
		c.reply(presenceReply(id, list, a, e))
	}
}

func presenceReply(id uint32, list bool, a presenceAnswer, e *protocol.Error) *protocol.Reply {
	reply := &protocol.Reply{ID: id, Error: e}
	switch {
	case e != nil:
	case list:
		reply.Presence = &protocol.PresenceResult{Presence: a.List}
		if reply.Presence.Presence == nil {
			reply.Presence.Presence = map[string]protocol.ClientInfo{}
		}
	default:
		reply.PresenceStats = &protocol.PresenceStatsResult{NumClients: uint32(a.Clients), NumUsers: uint32(a.Users)}
	}
	return reply
}
