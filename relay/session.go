package relay

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// This file holds the protocol session: what each client command does.
// Everything here runs on the connection's readLoop goroutine.

// errStop ends the handling of a message after the connection was told to
// disconnect.
var errStop = errors.New("relay: connection disconnected")

// handleMessage handles one WebSocket text message: one or more commands.
// Replies share one frame, except that a subscribe reply is flushed at once
// so that it reaches the queue before the channel's next publication. It
// reports false when the connection is being closed.
func (c *conn) handleMessage(msg []byte) bool {
	c.replies = c.replies[:0]
	err := protocol.DecodeCommands(msg, c.handleCommand)
	if errors.Is(err, protocol.ErrMalformed) {
		c.flushReplies()
		c.srv.metrics.protocolErrors.WithLabelValues("malformed").Inc()
		c.disconnect(protocol.DisconnectBadRequest)
		return false
	}
	c.flushReplies()
	return err == nil
}

func (c *conn) flushReplies() {
	if len(c.replies) == 0 {
		return
	}
	c.sendNow(c.replies)
	c.replies = c.replies[:0]
}

// sendNow queues payload (replies) as one frame, compressed if the client
// negotiated it. Unlike reply, it may be called from any goroutine.
func (c *conn) sendNow(payload []byte) {
	var frame []byte
	if c.deflate && (c.deflateWindow == 0 || len(payload) <= c.deflateWindow) {
		frame = c.srv.compressFrame(payload)
	}
	if frame == nil {
		frame = textFrame(payload)
	}
	c.send(frame)
}

func (c *conn) reply(r *protocol.Reply) {
	if len(c.replies) > 0 {
		c.replies = append(c.replies, '\n')
	}
	c.replies = protocol.AppendReply(c.replies, r)
}

func (c *conn) replyError(id uint32, e *protocol.Error) {
	c.srv.metrics.protocolErrors.WithLabelValues(fmt.Sprint(e.Code)).Inc()
	c.reply(&protocol.Reply{ID: id, Error: e})
}

func (c *conn) handleCommand(cmd *protocol.Command) error {
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
			c.srv.hub.Unsubscribe(sub.channel, sub)
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
	case "history", "presence", "presence_stats", "refresh", "sub_refresh":
		c.replyError(cmd.ID, protocol.ErrNotAvailable.WithMessage(method+" is not supported"))
	case "send":
		// Asynchronous messages have no reply and no use here yet.
	default:
		c.replyError(cmd.ID, protocol.ErrMethodNotFound)
	}
	return nil
}

func (c *conn) handleConnect(cmd *protocol.Command) error {
	if c.isConnected.Load() {
		c.flushReplies()
		c.disconnect(protocol.DisconnectBadRequest)
		return errStop
	}
	user, perr, d := c.srv.authenticate(cmd.Connect.Token)
	switch {
	case d != nil:
		c.flushReplies()
		c.disconnect(*d)
		return errStop
	case perr != nil:
		c.replyError(cmd.ID, perr)
		return nil
	}
	c.user = user
	c.lastPing.Store(time.Now().UnixNano())
	c.isConnected.Store(true)
	ws := c.srv.cfg.WebSocket
	c.reply(&protocol.Reply{ID: cmd.ID, Connect: &protocol.ConnectResult{
		Client:  c.clientID(),
		Version: Version,
		Ping:    uint32(ws.PingInterval.Seconds()),
		Pong:    ws.PingInterval > 0,
		Node:    c.srv.cfg.Node,
	}})
	return nil
}

func (c *conn) handleSubscribe(id uint32, req *protocol.SubscribeRequest) {
	if c.findSub(req.Channel) >= 0 {
		c.replyError(id, protocol.ErrAlreadySubscribed)
		return
	}
	if owner, personal := personalOwner(req.Channel); personal && (c.user == "" || owner != c.user) {
		c.replyError(id, protocol.ErrPermissionDenied.WithMessage("a personal channel is readable only by its user"))
		return
	}
	if len(c.subs) >= c.srv.cfg.WebSocket.MaxSubscriptions {
		c.replyError(id, protocol.ErrLimitExceeded.WithMessage(fmt.Sprintf("at most %d subscriptions per connection", c.srv.cfg.WebSocket.MaxSubscriptions)))
		return
	}
	sub := &subscription{c: c, channel: req.Channel, form: formPlain, conflated: c.srv.conflatedCounter(req.Channel)}
	if req.Delta == "fossil" {
		sub.form = formDeltaFull
	}
	if c.deflate {
		sub.form |= formDeflate
	}
	compact := req.Flag&protocol.FlagChannelCompaction != 0
	if compact {
		sub.form |= formCompact
	}
	err := c.srv.hub.Subscribe(req.Channel, sub, func(chID uint32, last *fanout.Publication) {
		res := subscribeResult(req, last)
		if compact {
			res.ID = chID
		}
		if sub.delta() {
			// Data travels as JSON strings; the cached value is the base
			// of the first patch.
			res.Delta = true
			for i := range res.Publications {
				res.Publications[i].Data = protocol.AppendJSONString(nil, res.Publications[i].Data)
			}
			sub.base = last
		}
		sub.sent.Store(last)
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
	}
}

// subscribeResult builds the subscribe reply. The channel is a recoverable
// stream positioned by Kafka: epoch names the topic partition, offset is
// the Kafka offset + 1. Recovery is "cache recovery": a client that already
// holds the latest offset of the same epoch gets nothing; any other client
// gets the latest publication.
func subscribeResult(req *protocol.SubscribeRequest, last *fanout.Publication) *protocol.SubscribeResult {
	res := &protocol.SubscribeResult{Recoverable: true, WasRecovering: req.Recover}
	if last == nil {
		res.Recovered = req.Recover
		return res
	}
	res.Epoch = last.Epoch
	res.Offset = protoOffset(last)
	upToDate := req.Recover && req.Epoch == last.Epoch && req.Offset >= res.Offset
	if !upToDate {
		res.Publications = []protocol.Publication{{Data: last.Data, Offset: res.Offset}}
	}
	res.Recovered = req.Recover && (upToDate || req.Epoch == last.Epoch)
	return res
}

// protoOffset maps a Kafka offset to a protocol offset: +1, because the
// SDKs read offset 0 as "no position".
func protoOffset(p *fanout.Publication) uint64 { return uint64(p.Pos.Offset) + 1 }
