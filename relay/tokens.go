package relay

import (
	"time"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// The session side of token lifetimes (docs/bets.md, "Expiry on a live
// connection"; docs/protocol.md, "Access"): the connection token's expiry
// and refresh, subscription tokens' expiry and sub_refresh, and the
// server-side subscriptions a connection token's channels claim makes.
// Poller goroutine, as the rest of the session; the heartbeat reads only
// the atomics expiresAt and subExpiresAt.

// setExpiry makes who's token expiry the connection's, returning what the
// connect and refresh replies say: expires, and the seconds left (at
// least 1). The heartbeat closes an expired connection with 3005.
func (c *session) setExpiry(who identity) (expires bool, ttl uint32) {
	if who.expires.IsZero() {
		c.expiresAt.Store(0)
		return false, 0
	}
	c.expiresAt.Store(who.expires.UnixNano())
	return expiry(who.expires)
}

// handleRefresh runs "refresh": a new token for the same user extends the
// connection (the SDKs send it, from getToken, before the ttl of the
// connect reply runs out). Another user's token, or an invalid one,
// closes with 3500; an expired one gets 109.
func (c *session) handleRefresh(id uint32, req *protocol.RefreshRequest) error {
	if c.expiresAt.Load() == 0 {
		c.replyError(id, protocol.ErrNotAvailable.WithMessage("this connection does not expire"))
		return nil
	}
	who, perr, d := c.srv.authenticate(req.Token)
	switch {
	case d == nil && perr == nil && who.user != c.user:
		c.srv.metrics.authFailures.WithLabelValues("other_user").Inc()
		d = &protocol.DisconnectInvalidToken
		fallthrough
	case d != nil:
		c.flushReplies()
		c.disconnect(*d)
		return errStop
	case perr != nil:
		c.replyError(id, perr)
		return nil
	}
	expires, ttl := c.setExpiry(who)
	c.reply(&protocol.Reply{ID: id, Refresh: &protocol.RefreshResult{Client: c.clientID(), Version: Version, Expires: expires, TTL: ttl}})
	return nil
}

// expiry is what a reply says of a token's exp: expires, and the seconds
// left, truncated (the SDKs refresh when the ttl runs out, which must not
// be after exp), at least 1.
func expiry(exp time.Time) (expires bool, ttl uint32) {
	if exp.IsZero() {
		return false, 0
	}
	return true, uint32(max(1, time.Until(exp)/time.Second))
}

// setSubExpiry records when channel's subscription token expires (zero:
// never) and publishes the earliest for the heartbeat, which closes the
// connection with 3006 once it passes without a sub_refresh. Poller
// goroutine only.
func (c *session) setSubExpiry(channel string, exp time.Time) {
	if exp.IsZero() {
		delete(c.subExpiry, channel)
	} else {
		if c.subExpiry == nil {
			c.subExpiry = map[string]int64{}
		}
		c.subExpiry[channel] = exp.UnixNano()
	}
	var first int64
	for _, e := range c.subExpiry {
		if first == 0 || e < first {
			first = e
		}
	}
	c.subExpiresAt.Store(first)
}

// handleSubRefresh runs "sub_refresh": a new subscription token for a
// channel the connection holds with one extends it; an expired token gets
// 109, an invalid one or one for another channel or user 103.
func (c *session) handleSubRefresh(id uint32, req *protocol.SubRefreshRequest) {
	if _, ok := c.subExpiry[req.Channel]; !ok {
		c.replyError(id, protocol.ErrNotAvailable.WithMessage("no subscription with a token to this channel"))
		return
	}
	exp, perr := c.srv.verifySubToken(req.Token, c.user, req.Channel)
	if perr != nil {
		c.replyError(id, perr)
		return
	}
	c.setSubExpiry(req.Channel, exp)
	expires, ttl := expiry(exp)
	c.reply(&protocol.Reply{ID: id, SubRefresh: &protocol.SubRefreshResult{Expires: expires, TTL: ttl}})
}

// subscribeServerSide subscribes the connection to ch because its token's
// channels claim names it (Centrifugo's server-side subscriptions: a
// backend puts a user on, say, their personal channel without the app
// knowing its name). The client gets a subscribe push, then the cached
// value as a publication push, then every update, all naming the channel.
// The claim grants what a subscription token would; a personal channel
// is still its owner's alone. A channel that cannot be subscribed (an
// invalid name, not readable, past websocket.max_subscriptions) is
// skipped and logged: the token is the backend's, not the client's.
func (c *session) subscribeServerSide(ch string) {
	skip := func(why string) {
		c.srv.log.Info("server-side subscription skipped", "channel", ch, "user", c.user, "why", why)
	}
	switch {
	case c.findSub(ch) >= 0:
		return
	case len(c.subs) >= c.srv.cfg.WebSocket.MaxSubscriptions:
		skip("websocket.max_subscriptions reached")
		return
	case fanout.ValidateName(ch, c.srv.cfg.Channels.MaxNameLength) != nil:
		skip("invalid channel name")
		return
	}
	if e := c.srv.mayRead(c.user, ch, true); e != nil {
		skip(e.Message)
		return
	}
	conflated := c.srv.conflatedCounter(ch, c.srv.hub.Last(ch) != nil)
	sub := c.ec.NewSink(ch, subscriptionForm(c.codec, false, false), conflated)
	err := c.srv.hub.Subscribe(ch, sub, func(st *fanout.State) {
		announce := &protocol.SubscribePush{Recoverable: true}
		var pubs []protocol.Publication
		if last := st.Last; last != nil {
			announce.Epoch, announce.Offset = last.Epoch, protoOffset(last)
			pubs = []protocol.Publication{protoPublication(last)}
		}
		if !c.carries(pubs) {
			return // closing with 3506
		}
		sub.Subscribed(st.Last)
		c.reply(&protocol.Reply{Push: &protocol.Push{Channel: ch, Subscribe: announce}})
		for i := range pubs {
			c.reply(&protocol.Reply{Push: &protocol.Push{Channel: ch, Pub: &pubs[i]}})
		}
		c.flushReplies() // under the channel lock, as for a subscribe reply
	})
	if err != nil {
		skip(err.Error())
		return
	}
	c.addSub(sub)
}
