package relay

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// session is the protocol side of one client connection: identity,
// subscriptions and what each client command does. Its engine.Conn owns
// the socket, the write queue and the framing; the session is the Conn's
// Handler, so Message and Closed, and everything they call, run on the
// connection's poller goroutine (fields under "poller"), except where a
// method says otherwise.
type session struct {
	srv   *Server
	ec    *engine.Conn
	id    [16]byte
	born  int64          // unix nanos at upgrade
	codec protocol.Codec // the encoding, set at upgrade
	addr  string         // the client's address key (admission)
	// unbridge ends the TLS bridge of a connection to a TLS listener
	// (tls.go); nil for plain TCP.
	unbridge func()

	// poller
	user    string         // from the connect token; "" is anonymous
	subs    []*engine.Sink // a slice is smaller than a map for the usual few
	replies *[]byte        // replies of the message being handled, '\n'-separated: from replyBufs until flushed, nil at rest
	// the command rate's bucket (websocket.commands_per_second): tokens
	// as of cmdLast (unix nanos); below 0, commands are refused
	cmdTokens float64
	cmdLast   int64
	// subExpiry: channel → its subscription token's exp (unix nanos)
	subExpiry map[string]int64

	betsInFlight atomic.Int32 // bets waiting for their answer

	// set by the poller on "connect", read by the heartbeat
	isConnected  atomic.Bool
	expiresAt    atomic.Int64 // unix nanos the token expires; 0: never (also "refresh")
	subExpiresAt atomic.Int64 // the earliest subscription token's exp (unix nanos); 0: none
	lastPing     atomic.Int64 // unix nanos of the last ping sent
	pongDeadline atomic.Int64 // unix nanos; 0 when no pong is awaited
}

var _ engine.Handler = (*session)(nil)

// firstPingBase is the lastPing a new connection starts with: now less a
// random part of the ping interval, so that its first ping comes somewhere
// within the first interval and then every interval after. Clients that
// connected together (a ramp, a reconnect storm) would otherwise all be
// pinged, and all pong, in the same heartbeat tick every interval: on one
// core that burst set the p99 of the seconds around it (docs/performance.md,
// "Tail latency").
func firstPingBase(now int64, interval time.Duration) int64 {
	if interval <= 0 {
		return now
	}
	return now - rand.Int64N(int64(interval))
}

func (c *session) clientID() string {
	h := hex.EncodeToString(c.id[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Message is engine.Handler.Message: one message of the connection's
// encoding.
func (c *session) Message(msg []byte, _ bool) bool { return c.handleMessage(msg) }

// Violation is engine.Handler.Violation: it logs and counts the close.
func (c *session) Violation(code uint16, err error) {
	c.srv.log.Debug("closing connection", "client", c.clientID(), "code", int(code), "err", err)
	label := codeLabel(code)
	if errors.Is(err, engine.ErrWrongFrameType) {
		label = "wrong_frame_type"
	}
	c.srv.metrics.protocolErrors.WithLabelValues(label).Inc()
}

// Closed is engine.Handler.Closed: the connection is gone.
func (c *session) Closed() {
	for _, sub := range c.subs {
		c.srv.hub.Unsubscribe(sub.Channel(), sub)
	}
	c.subs, c.replies = nil, nil // a buffer not flushed goes to the GC, not back to the pool
	if c.unbridge != nil {
		c.unbridge() // before the admission slot is given back
	}
	c.srv.removeConn(c)
}

// disconnect sends what is queued, then a close frame with d's code and
// reason, then shuts the connection. Any goroutine.
func (c *session) disconnect(d protocol.Disconnect) { c.ec.Close(d.Code, d.Reason) }

// wrongFrameType is the close for a message in the other encoding's frame
// type: terminal (3501), so that an SDK does not retry for ever.
func wrongFrameType(codec protocol.Codec) engine.Close {
	reason := "binary message on a JSON connection (speak Protobuf with the centrifuge-protobuf subprotocol)"
	if codec.Binary() {
		reason = "text message on a Protobuf connection"
	}
	return engine.Close{Code: protocol.DisconnectBadRequest.Code, Reason: reason}
}

// errStop ends the handling of a message after the connection was told to
// disconnect.
var errStop = errors.New("relay: connection disconnected")

// errSkipRest ends the handling of a message whose connect failed with an
// error reply (109, say): its other commands (the SDKs send their
// subscribes with the connect) are dropped, not answered as commands
// before connect, and the connection stays open for the client to retry.
var errSkipRest = errors.New("relay: connect failed; rest of the message skipped")

// handleMessage handles one WebSocket message of the connection's
// encoding: one or more commands.
// Replies share one frame, except that a subscribe reply is flushed at once
// so that it reaches the queue before the channel's next publication. It
// reports false when the connection is being closed.
func (c *session) handleMessage(msg []byte) bool {
	err := c.codec.DecodeCommands(msg, c.handleBounded)
	if errors.Is(err, protocol.ErrMalformed) {
		c.flushReplies()
		c.srv.metrics.protocolErrors.WithLabelValues("malformed").Inc()
		c.disconnect(protocol.DisconnectBadRequest)
		return false
	}
	c.flushReplies()
	return err == nil || errors.Is(err, errSkipRest)
}

func (c *session) flushReplies() {
	if c.replies == nil {
		return
	}
	b := c.replies
	c.replies = nil
	if len(*b) > 0 {
		c.sendNow(*b) // copies
	}
	if cap(*b) <= 4<<10 { // a big one goes to the GC
		*b = (*b)[:0]
		replyBufs.Put(b)
	}
}

// replyBufs are the sessions' reply buffers: a connection holds one only
// while it handles a message (at rest it would be about 270 bytes of each
// connection's memory; docs/performance.md, tail latency).
var replyBufs = sync.Pool{New: func() any { return new([]byte) }}

// handleBounded handles one command, then checks the replies built so
// far: the replies of one message count against websocket.max_queue_bytes
// as they are built, not once queued, so that a message of many costly
// commands (history, say) stops as soon as its replies could not be
// queued. The client is then closed as slow (3008), as it would be once
// they were queued.
func (c *session) handleBounded(cmd *protocol.Command) error {
	switch c.takeCommand() {
	case commandRefused:
		c.srv.metrics.commandsRefused.Inc()
		if cmd.ID != 0 {
			c.replyError(cmd.ID, protocol.ErrTooManyRequests.WithMessage("past websocket.commands_per_second"))
		}
		return nil
	case commandFlood:
		c.srv.metrics.commandsRefused.Inc()
		c.flushReplies()
		c.disconnect(protocol.DisconnectTooManyReqs)
		return errStop
	}
	if err := c.handleCommand(cmd); err != nil {
		return err
	}
	if c.replies != nil && len(*c.replies) > int(c.srv.cfg.WebSocket.MaxQueueBytes) {
		c.replies = nil
		c.srv.metrics.slowDisconnects.Inc()
		c.disconnect(protocol.DisconnectSlow)
		return errStop
	}
	return nil
}

// Outcomes of takeCommand.
const (
	commandOK      = iota
	commandRefused // over the rate: answered with 111
	commandFlood   // a burst past the rate as well: closed with 3013
)

// takeCommand takes a token from the connection's command bucket
// (websocket.commands_per_second, bursts of commands_burst). A client
// over the rate has its commands refused; one that goes on for another
// burst's worth without slowing down is flooding.
func (c *session) takeCommand() int {
	ws := &c.srv.cfg.WebSocket
	if ws.CommandsPerSecond <= 0 {
		return commandOK
	}
	now, burst := time.Now().UnixNano(), float64(ws.CommandsBurst)
	if c.cmdLast == 0 {
		c.cmdTokens = burst
	} else {
		c.cmdTokens = min(burst, c.cmdTokens+float64(now-c.cmdLast)/1e9*ws.CommandsPerSecond)
	}
	c.cmdLast = now
	c.cmdTokens--
	switch {
	case c.cmdTokens >= 0:
		return commandOK
	case c.cmdTokens > -burst:
		return commandRefused
	}
	return commandFlood
}

// maxReplyData bounds the publication data one reply may carry: half the
// queue, so that the reply and the pushes behind it fit.
func (c *session) maxReplyData() int { return int(c.srv.cfg.WebSocket.MaxQueueBytes) / 2 }

// dataBytes is the publication data in pubs.
func dataBytes(pubs []*fanout.Publication) int {
	n := 0
	for _, p := range pubs {
		n += len(p.Data)
	}
	return n
}

// sendNow queues payload (replies) as one message. Unlike reply, it may
// be called from any goroutine.
func (c *session) sendNow(payload []byte) { c.ec.SendMessage(payload) }

func (c *session) reply(r *protocol.Reply) {
	if c.replies == nil {
		c.replies = replyBufs.Get().(*[]byte)
	}
	*c.replies = c.codec.AppendReply(*c.replies, r)
}

func (c *session) replyError(id uint32, e *protocol.Error) {
	c.srv.metrics.protocolErrors.WithLabelValues(fmt.Sprint(e.Code)).Inc()
	c.reply(&protocol.Reply{ID: id, Error: e})
}

func (c *session) handleCommand(cmd *protocol.Command) error {
	if cmd.IsPong() {
		c.pongDeadline.Store(0)
		return nil
	}
	method := cmd.Method()
	if !c.isConnected.Load() && method != "connect" {
		// As Centrifugo does: a client that skips connect is broken.
		c.srv.metrics.protocolErrors.WithLabelValues("not_connected").Inc()
		c.flushReplies()
		c.disconnect(protocol.DisconnectBadRequest)
		return errStop
	}
	if cmd.ID == 0 && method != "send" {
		c.srv.metrics.protocolErrors.WithLabelValues("no_id").Inc()
		c.flushReplies()
		c.disconnect(protocol.DisconnectBadRequest)
		return errStop
	}
	switch method {
	case "connect":
		return c.handleConnect(cmd)
	case "subscribe":
		c.handleSubscribe(cmd.ID, cmd.Subscribe)
	case "unsubscribe":
		if sub := c.deleteSub(cmd.Unsubscribe.Channel); sub != nil {
			c.srv.hub.Unsubscribe(sub.Channel(), sub)
			c.setSubExpiry(sub.Channel(), time.Time{})
		}
		c.reply(&protocol.Reply{ID: cmd.ID, Unsubscribe: &struct{}{}})
	case "ping":
		c.reply(&protocol.Reply{ID: cmd.ID, Ping: &struct{}{}})
	case "rpc":
		if cmd.RPC.Method == "bet" {
			c.handleBet(cmd.ID, cmd.RPC.Data)
			return nil
		}
		c.replyError(cmd.ID, protocol.ErrMethodNotFound.WithMessage(fmt.Sprintf("rpc method %q", cmd.RPC.Method)))
	case "publish":
		c.replyError(cmd.ID, protocol.ErrPermissionDenied.WithMessage("channels are published from Kafka, not by clients"))
	case "history":
		c.handleHistory(cmd.ID, cmd.History)
	case "refresh":
		return c.handleRefresh(cmd.ID, cmd.Refresh)
	case "sub_refresh":
		c.handleSubRefresh(cmd.ID, cmd.SubRefresh)
	case "presence":
		c.handlePresence(cmd.ID, cmd.Presence, true)
	case "presence_stats":
		c.handlePresence(cmd.ID, cmd.PresenceStats, false)
	case "send":
		// Asynchronous messages have no reply and no use here yet.
	default:
		c.replyError(cmd.ID, protocol.ErrMethodNotFound)
	}
	return nil
}

func (c *session) handleConnect(cmd *protocol.Command) error {
	if c.isConnected.Load() {
		c.flushReplies()
		c.disconnect(protocol.DisconnectBadRequest)
		return errStop
	}
	who, perr, d := c.srv.authenticate(cmd.Connect.Token)
	switch {
	case d != nil:
		c.flushReplies()
		c.disconnect(*d)
		return errStop
	case perr != nil:
		c.replyError(cmd.ID, perr)
		return errSkipRest
	}
	c.user = who.user
	expires, ttl := c.setExpiry(who)
	c.lastPing.Store(firstPingBase(time.Now().UnixNano(), c.srv.cfg.WebSocket.PingInterval))
	c.isConnected.Store(true)
	ws := c.srv.cfg.WebSocket
	c.reply(&protocol.Reply{ID: cmd.ID, Connect: &protocol.ConnectResult{
		Client:  c.clientID(),
		Version: Version,
		Expires: expires,
		TTL:     ttl,
		Ping:    uint32(ws.PingInterval.Seconds()),
		Pong:    ws.PingInterval > 0,
		Node:    c.srv.cfg.Node,
	}})
	for _, ch := range who.channels {
		c.subscribeServerSide(ch)
	}
	return nil
}

func (c *session) handleSubscribe(id uint32, req *protocol.SubscribeRequest) {
	if req.Type != protocol.SubscribeTypeStream {
		c.handleMapSubscribe(id, req)
		return
	}
	subExp, ok := c.admitSubscribe(id, req)
	if !ok {
		return
	}
	filter, ok := c.tagFilter(id, req)
	if !ok {
		return
	}
	// As in Centrifugo, a tag filter and deltas exclude each other: with
	// a filter, delta is not negotiated and pushes carry full payloads.
	delta := req.Delta == "fossil" && filter == nil
	compact := req.Flag&protocol.FlagChannelCompaction != 0 && c.codec.ChannelIDs()
	// Only a channel Kafka has written to names a namespace label.
	conflated := c.srv.conflatedCounter(req.Channel, c.srv.hub.Last(req.Channel) != nil)
	sub := c.ec.NewSink(req.Channel, subscriptionForm(c.codec, delta, compact), conflated)
	if filter != nil {
		sub.SetFilter(filter)
	}
	err := c.srv.hub.Subscribe(req.Channel, sub, func(st *fanout.State) {
		res := subscribeResult(req, st, c.maxReplyData(), filter)
		if !c.carries(res.Publications) {
			return // closing with 3506
		}
		if compact {
			res.ID = st.ID
		}
		res.Delta = delta
		res.Expires, res.TTL = expiry(subExp)
		// The cached value is what the client holds: the base of the
		// first patch, what a bet can say it saw (if its filter lets it
		// see it).
		if st.Last == nil || passes(filter, st.Last) {
			sub.Subscribed(st.Last)
		}
		if res.Recovered && st.Last != nil && req.Offset > protoOffset(st.Last) {
			// The client is ahead of this node (it resumed from another
			// that had read further): what it holds is not sent again.
			sub.HoldsThrough(int64(req.Offset) - 1)
		}
		c.reply(&protocol.Reply{ID: id, Subscribe: res})
		// Flush under the channel lock: the next publication of this
		// channel must be queued after this reply.
		c.flushReplies()
	})
	switch {
	case errors.Is(err, fanout.ErrInvalidChannel):
		c.replyError(id, protocol.ErrBadRequest.WithMessage(err.Error()))
	case err != nil:
		c.replyError(id, protocol.ErrAlreadySubscribed)
	default:
		c.addSub(sub)
		c.setSubExpiry(req.Channel, subExp)
	}
}

// admitSubscribe checks that the client may subscribe as req asks,
// replying with the error if not, and returns its subscription token's
// expiry (zero: none).
func (c *session) admitSubscribe(id uint32, req *protocol.SubscribeRequest) (time.Time, bool) {
	if c.findSub(req.Channel) >= 0 {
		c.replyError(id, protocol.ErrAlreadySubscribed)
		return time.Time{}, false
	}
	var subExp time.Time
	if req.Token != "" {
		exp, perr := c.srv.verifySubToken(req.Token, c.user, req.Channel)
		if perr != nil {
			c.replyError(id, perr)
			return time.Time{}, false
		}
		subExp = exp
	}
	if !c.mayRead(id, req.Channel, req.Token != "") {
		return time.Time{}, false
	}
	if len(c.subs) >= c.srv.cfg.WebSocket.MaxSubscriptions {
		c.replyError(id, protocol.ErrLimitExceeded.WithMessage(fmt.Sprintf("at most %d subscriptions per connection", c.srv.cfg.WebSocket.MaxSubscriptions)))
		return time.Time{}, false
	}
	return subExp, true
}

// subscribeResult builds the subscribe reply. The channel is a recoverable
// stream positioned by Kafka: epoch names the topic partition, offset is
// the Kafka offset + 1. A client recovering from a position of the same
// epoch gets every publication it missed if the channel's history
// (channels.history_size) still holds them all (recovered), else the
// latest publication, not recovered: updates are lost to it. Without
// history it gets the latest publication, not recovered either: the relay
// cannot prove the gap empty, and recovered:true tells an SDK nothing was
// missed. A client already at the latest offset gets nothing, recovered. A gap whose
// publications hold more than maxData bytes is not filled: the client gets
// the latest publication, not recovered, as if the history did not reach
// back so far.
//
// With a tag filter f, the reply carries only what f passes: the missed
// publications it matches (recovered all the same: the others are not
// lost, the client did not want them), or the newest matching
// publication of the history and cached value, or none. The reply's
// offset stays the channel's. A filter runs over at most maxFilterScan
// publications: a filtered recovery that missed more is not recovered.
func subscribeResult(req *protocol.SubscribeRequest, st *fanout.State, maxData int, f fanout.Filter) *protocol.SubscribeResult {
	res := &protocol.SubscribeResult{Recoverable: true, WasRecovering: req.Recover}
	last := st.Last
	if last == nil {
		res.Recovered = req.Recover
		return res
	}
	res.Epoch = last.Epoch
	res.Offset = protoOffset(last)
	sameEpoch := req.Recover && (req.Epoch == last.Epoch || req.Epoch == "" && seenHere(st, req.Offset))
	if sameEpoch && req.Offset >= res.Offset {
		// Nothing missed. A client ahead of this node (it resumed from
		// one that had read further) keeps its position; the
		// publications it holds are not pushed again (Sink.HoldsThrough).
		res.Recovered = true
		res.Offset = req.Offset
		return res
	}
	if sameEpoch && req.Offset > 0 {
		if missed, ok := st.Since(req.Epoch, int64(req.Offset)-1); ok && (f == nil || len(missed) <= maxFilterScan) {
			if missed = filtered(f, missed); dataBytes(missed) <= maxData {
				res.Publications = protoPublications(missed, false)
				res.Recovered = true
				return res
			}
		}
	}
	res.Recovered = false // a gap it cannot prove empty: the latest value, recovered:false
	if p := newestPassing(f, st); p != nil {
		res.Publications = []protocol.Publication{protoPublication(p)}
	}
	return res
}

// seenHere reports whether offset (a protocol offset: Kafka's + 1) is the
// position after one of the channel's publications this node holds, the
// cached one or one in its history. A client that subscribed before the
// channel's first record got a reply without epoch; the position it
// recovers from is then of the current stream if it names one of these
// (else it gets the latest value, not recovered, as for another epoch).
func seenHere(st *fanout.State, offset uint64) bool {
	if offset == 0 {
		return false
	}
	if st.Last != nil && protoOffset(st.Last) == offset {
		return true
	}
	for _, p := range st.History {
		if p.Epoch == st.Last.Epoch && protoOffset(p) == offset {
			return true
		}
	}
	return false
}

// carries checks that the client's encoding can take every publication
// in pubs (a JSON client, a "payload: binary" topic's data that is not
// JSON), closing it with 3506 — Centrifugo's code for this — if not.
func (c *session) carries(pubs []protocol.Publication) bool {
	for _, p := range pubs {
		if p.Binary && !c.codec.Accepts(p.Data) {
			c.srv.metrics.notJSON.Inc()
			c.disconnect(protocol.DisconnectInappropriate)
			return false
		}
	}
	return true
}

// protoPublications converts pubs for a reply, newest first if reverse.
func protoPublications(pubs []*fanout.Publication, reverse bool) []protocol.Publication {
	out := make([]protocol.Publication, len(pubs))
	for i, p := range pubs {
		j := i
		if reverse {
			j = len(pubs) - 1 - i
		}
		out[j] = protoPublication(p)
	}
	return out
}

// protoPublication is p as a reply carries it.
func protoPublication(p *fanout.Publication) protocol.Publication {
	return protocol.Publication{Data: p.Data, Offset: protoOffset(p), Tags: p.Tags, Binary: p.Binary}
}

// mayRead reports whether the client may read channel (Server.mayRead),
// replying with the error if not. granted: a subscription token (or a
// subscription that needed one) names the channel.
func (c *session) mayRead(id uint32, channel string, granted bool) bool {
	if e := c.srv.mayRead(c.user, channel, granted); e != nil {
		c.replyError(id, e)
		return false
	}
	return true
}

// handleHistory answers "history" from the channel's history
// (channels.history_size): the publications after req.Since (all it keeps
// if unset), oldest first or newest first (reverse), at most req.Limit (0:
// only the stream's position; negative: all), and the stream's position.
// Errors: 108 when the node keeps no history, 112 when the history no
// longer reaches back to req.Since or is of another epoch, 107 for a
// missing or invalid channel name, 103 for another user's personal
// channel, 106 when the publications would pass maxReplyData.
func (c *session) handleHistory(id uint32, req *protocol.HistoryRequest) {
	switch {
	case !c.srv.hub.KeepsHistory():
		c.replyError(id, protocol.ErrNotAvailable.WithMessage("history is off on this node (channels.history_size: 0)"))
		return
	case fanout.ValidateName(req.Channel, c.srv.cfg.Channels.MaxNameLength) != nil:
		c.replyError(id, protocol.ErrBadRequest.WithMessage("history needs a valid channel name"))
		return
	case !c.mayRead(id, req.Channel, c.findSub(req.Channel) >= 0):
		return
	}
	st := c.srv.hub.History(req.Channel)
	res := &protocol.HistoryResult{}
	if st.Last != nil {
		res.Epoch, res.Offset = st.Last.Epoch, protoOffset(st.Last)
	}
	pubs := st.History
	if req.Since != nil && st.Last != nil {
		var ok bool
		if pubs, ok = st.Since(req.Since.Epoch, int64(req.Since.Offset)-1); !ok {
			c.replyError(id, protocol.ErrUnrecoverable.WithMessage("the history no longer reaches back to this position, or is of another epoch"))
			return
		}
	}
	limit := len(pubs)
	if req.Limit >= 0 {
		limit = min(limit, int(req.Limit))
	}
	if req.Reverse {
		pubs = pubs[len(pubs)-limit:]
	} else {
		pubs = pubs[:limit]
	}
	if dataBytes(pubs) > c.maxReplyData() {
		c.replyError(id, protocol.ErrLimitExceeded.WithMessage(fmt.Sprintf("the %d publications asked for hold more than the %d bytes one reply may carry; ask with a smaller limit", len(pubs), c.maxReplyData())))
		return
	}
	res.Publications = protoPublications(pubs, req.Reverse)
	if !c.carries(res.Publications) {
		return // closing with 3506
	}
	c.reply(&protocol.Reply{ID: id, History: res})
}

// protoOffset maps a Kafka offset to a protocol offset: +1, because the
// SDKs read offset 0 as "no position".
func protoOffset(p *fanout.Publication) uint64 { return uint64(p.Pos.Offset) + 1 }

// findSub, addSub and deleteSub keep c.subs; poller goroutine only.
func (c *session) findSub(ch string) int {
	for i, s := range c.subs {
		if s.Channel() == ch {
			return i
		}
	}
	return -1
}

func (c *session) addSub(s *engine.Sink) { c.subs = append(c.subs, s) }

// deleteSub removes and returns the subscription to ch, or nil.
func (c *session) deleteSub(ch string) *engine.Sink {
	i := c.findSub(ch)
	if i < 0 {
		return nil
	}
	s := c.subs[i]
	last := len(c.subs) - 1
	c.subs[i] = c.subs[last]
	c.subs[last] = nil
	c.subs = c.subs[:last]
	if len(c.subs) == 0 {
		c.subs = nil
	}
	return s
}
