package relay

import (
	"errors"
	"fmt"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// Map subscriptions (docs/protocol.md, "Map subscriptions"): the client
// pages the map's state (phase 2, by key cursor), then its changes since
// the first page's position (phase 1), until the reply that subscribes it
// (phase 0, live). The hub's maps (fanout/maps.go) hold the entries.

// UnsubscribeMapFull is the unsubscribe push code a map's subscribers get
// when the map passes channels.maps.max_entries or max_bytes: below 2500,
// so the SDKs do not subscribe again.
const UnsubscribeMapFull = 2100

func mapRules(rules []MapRuleConfig) []fanout.MapRule {
	out := make([]fanout.MapRule, len(rules))
	for i, r := range rules {
		out[i] = fanout.MapRule{Prefix: r.Prefix, Depth: r.Depth}
	}
	return out
}

// mapPage is the page size a map request gets: the client's limit, at
// most channels.maps.page_size (also the default).
func (c *session) mapPage(limit int32) int {
	ps := c.srv.cfg.Channels.Maps.PageSize
	if limit <= 0 || int(limit) > ps {
		return ps
	}
	return int(limit)
}

// pageFloor raises a page of limit entries of a map of n so that paging
// all of it takes at most half the frames a client may send in a second
// (websocket.max_frames_per_second) and half its command burst
// (commands_burst): the SDK asks for each page as the previous arrives,
// and a small pageSize on a large map would otherwise be closed 3013 on
// a fast link, reconnect and page again, in a loop (edgebench maps and
// the SDK found it: docs/performance.md). At most page_size.
func (c *session) pageFloor(limit, n int) int {
	ws := c.srv.cfg.WebSocket
	pages := ws.MaxFramesPerSecond
	if ws.CommandsPerSecond > 0 && (pages == 0 || ws.CommandsBurst < pages) {
		pages = ws.CommandsBurst
	}
	if pages == 0 {
		return limit
	}
	pages = max(pages/2, 1)
	return max(limit, min(c.srv.cfg.Channels.Maps.PageSize, (n+pages-1)/pages))
}

func (c *session) handleMapSubscribe(id uint32, req *protocol.SubscribeRequest) {
	if req.Type != protocol.SubscribeTypeMap {
		c.replyError(id, protocol.ErrNotAvailable.WithMessage("only map subscriptions (type 1) are served here, not presence maps"))
		return
	}
	if i := c.findSub(req.Channel); i >= 0 && !c.srv.hub.Subscribed(req.Channel, c.subs[i]) {
		c.deleteSub(req.Channel) // dropped by its map when the map became full
	}
	subExp, ok := c.admitSubscribe(id, req)
	if !ok {
		return
	}
	filter, ok := c.tagFilter(id, req) // every phase's request carries it
	if !ok {
		return
	}
	limit, maxData := c.mapPage(req.Limit), c.maxReplyData()
	// Per-entry deltas: every reply of the flow says so (in JSON its
	// entries' data are then strings), and live pushes may be patches.
	// Not with a tag filter (as for channels): a filtered subscriber
	// misses values, so a patch against its previous one may not apply.
	delta := req.Delta == "fossil" && filter == nil
	var err error
	switch req.Phase {
	case protocol.PhaseState:
		err = c.srv.hub.ViewMap(req.Channel, func(v *fanout.MapView) {
			limit := c.pageFloor(limit, v.Len())
			entries, next := v.Page(req.Cursor, limit, maxData)
			c.replyMap(id, &protocol.SubscribeResult{Phase: protocol.PhaseState, Cursor: next, Epoch: v.Epoch(), Offset: v.Top(),
				State: mapPublications(filtered(filter, entries)), Delta: delta}, false)
		})
	case protocol.PhaseStream:
		sub := c.ec.NewSink(req.Channel, subscriptionForm(c.codec, delta, false), nil)
		if filter != nil {
			sub.SetFilter(filter)
		}
		var live bool
		err = c.srv.hub.SubscribeMap(req.Channel, sub, func(v *fanout.MapView) bool {
			res := &protocol.SubscribeResult{Phase: protocol.PhaseStream, Epoch: v.Epoch(), Offset: v.Top(), Delta: delta}
			limit := c.pageFloor(limit, v.Len())
			changed, ok := v.Since(req.Epoch, req.Offset, limit+1)
			switch {
			case !ok && req.Recover:
				c.replyError(id, protocol.ErrUnrecoverable.WithMessage("the map's position is of another epoch, older than its forgotten removals or than its first entry on this node"))
				return false
			case !ok:
				// The epoch changed since the client's first state page:
				// this reply's epoch tells its flow to start again.
				c.replyMap(id, res, false)
				return false
			}
			// Pages end where they would without a filter, so that the
			// positions are the map's; the filter then takes from each.
			if n := pageLen(changed, limit, maxData); n < len(changed) {
				res.Publications = mapPublications(filtered(filter, changed[:n]))
				res.Offset = protoOffset(changed[n-1])
				c.replyMap(id, res, false)
				return false
			}
			res.Phase, res.Publications = protocol.PhaseLive, mapPublications(filtered(filter, changed))
			res.Recoverable, res.Recovered, res.WasRecovering = true, req.Recover, req.Recover
			res.Expires, res.TTL = expiry(subExp)
			ahead := req.Recover && !v.Local() && req.Offset > v.Top()
			if ahead {
				// The client resumed from a node that had read further: it
				// keeps its position, and the changes it holds are not
				// sent again (a patch of one would apply to an older value
				// than the client's).
				res.Offset = req.Offset
			}
			if !c.replyMap(id, res, true) {
				return false
			}
			sub.Subscribed(nil)
			if ahead {
				sub.HoldsThrough(int64(req.Offset) - 1)
			}
			live = true
			return true
		})
		if err == nil && live {
			c.addSub(sub)
			c.setSubExpiry(req.Channel, subExp)
		}
	default:
		c.replyError(id, protocol.ErrBadRequest.WithMessage(fmt.Sprintf("map subscribe phase %d", req.Phase)))
		return
	}
	switch {
	case errors.Is(err, fanout.ErrNotMap), errors.Is(err, fanout.ErrInvalidChannel):
		c.replyError(id, protocol.ErrBadRequest.WithMessage(err.Error()+" (channels.maps.rules)"))
	case errors.Is(err, fanout.ErrMapFull), errors.Is(err, fanout.ErrTooManyMaps):
		c.replyError(id, protocol.ErrLimitExceeded.WithMessage(err.Error()))
	case err != nil:
		c.replyError(id, protocol.ErrAlreadySubscribed)
	}
}

// replyMap replies res to a map subscribe, flushed at once when live (the
// map's next change must be queued after it); false if the client's
// encoding cannot carry an entry (closing with 3506).
func (c *session) replyMap(id uint32, res *protocol.SubscribeResult, live bool) bool {
	if !c.carries(res.State) || !c.carries(res.Publications) {
		return false
	}
	res.Type = protocol.SubscribeTypeMap
	c.reply(&protocol.Reply{ID: id, Subscribe: res})
	if live {
		c.flushReplies()
	}
	return true
}

// pageLen is how many of pubs one page takes: at most limit, and no more
// data than maxData (but at least one).
func pageLen(pubs []*fanout.Publication, limit, maxData int) int {
	n, size := 0, 0
	for n < len(pubs) && n < limit {
		if n > 0 && size+len(pubs[n].Data) > maxData {
			break
		}
		size += len(pubs[n].Data)
		n++
	}
	return n
}

func mapPublications(pubs []*fanout.Publication) []protocol.Publication {
	out := make([]protocol.Publication, len(pubs))
	for i, p := range pubs {
		out[i] = *mapPublication(p, p.Data)
	}
	return out
}

// mapFull tells the clients a full map dropped (fanout.Config.OnMapFull):
// an unsubscribe push, code UnsubscribeMapFull. Runs on ingest's
// goroutine.
func (s *Server) mapFull(name string, dropped []fanout.Subscriber) {
	for _, sub := range dropped {
		sink, ok := sub.(*engine.Sink)
		if !ok {
			continue
		}
		c, ok := sink.Handler().(*session)
		if !ok {
			continue
		}
		c.sendNow(c.codec.AppendReply(nil, &protocol.Reply{Push: &protocol.Push{Channel: name, Unsubscribe: &protocol.UnsubscribePush{
			Code:   UnsubscribeMapFull,
			Reason: fmt.Sprintf("map over its limit (channels.maps.max_entries %d, max_bytes %d)", s.cfg.Channels.Maps.MaxEntries, s.cfg.Channels.Maps.MaxBytes),
		}}}))
	}
}
