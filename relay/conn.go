package relay

import (
	"encoding/hex"
	"math/bits"
	"slices"
	"strings"
	"time"

	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// conn is one client WebSocket connection on the epoll engine.
//
// An idle connection owns no goroutine and no buffer: its socket is
// registered with a poller (engine_linux.go), which reads and handles input
// only when the socket is readable, and a writer worker sends its queue
// only when there is something to send.
//
// Ownership: fields under "poller" are touched only by the owning poller's
// goroutine (reads, protocol session, final cleanup). Fields under mu are
// shared with writers, the hub (Deliver) and the heartbeat. The socket is
// closed under mu, never while a writer is using it.
type conn struct {
	srv    *Server
	poller *poller
	writer *writer
	id     [16]byte
	born   int64 // unix nanos at upgrade

	// set at upgrade: the protocol encoding, permessage-deflate
	// negotiated, and the largest message the client's window takes
	// compressed (0: any)
	codec         protocol.Codec
	deflate       bool
	deflateWindow int

	// poller
	user      string          // from the connect token; "" is anonymous
	subs      []*subscription // a slice is smaller than a map for the usual few
	replies   []byte          // replies of the message being handled, '\n'-separated
	partial   []byte          // an incomplete frame, kept only until the rest arrives
	msg       []byte          // fragments of an incomplete message
	inMessage bool
	msgZ      bool // the message being read is compressed (RSV1)
	discard   bool // closing: input is read and dropped
	// pendingInput: partial holds bytes read with the handshake, to be
	// handled on the first event.
	pendingInput bool

	betsInFlight atomic.Int32 // bets waiting for their answer

	// set by the poller on "connect", read by the heartbeat
	isConnected  atomic.Bool
	lastPing     atomic.Int64 // unix nanos of the last ping sent
	pongDeadline atomic.Int64 // unix nanos; 0 when no pong is awaited

	mu            sync.Mutex
	fd            int             // -1 once closed
	queue         []*fanout.Frame // backed by qbuf when not nil
	holding       []*subscription // subscriptions with a held frame in queue (see subscription)
	qbuf          *queueBuf
	head          int   // bytes of queue[0] already written
	queued        int   // bytes in queue, minus head
	stalledSince  int64 // unix nanos the heartbeat first saw the queue waiting with no write since; 0 after each write
	scheduled     bool  // on a writer's run list
	urgent        bool  // on a writer's urgent list (a reply or priority publication is queued)
	scheduledAt   int64 // Server.clock when last put on a run list
	writing       bool  // a writer is in writev on fd
	inflight      int   // queue entries in the writev under way: not to be replaced or dropped
	waitOut       bool  // socket full: waiting for EPOLLOUT
	waitOutSince  int64 // Server.clock when waitOut was set
	outEvents     uint32
	closing       bool  // close frame queued (or connection dead): no more frames
	closeSent     bool  // close frame written, write side shut down
	closeDeadline int64 // unix nanos after which the socket is shut down hard
	closeAfter    bool  // cleaned up while a writer was writing: writer closes fd
}

// subscription is one channel subscription of a connection; it is what the
// hub holds. form says which encoding the client negotiated (see
// frame.go): kind plain or delta full, plus the compact and deflate bits.
//
// Conflation without the hub's work: once the connection is behind (see
// deliver) and its queue holds an unwritten frame of this channel (held),
// Deliver only swaps each later update into latest, without taking c.mu or
// encoding anything; the writer puts latest's frame in held's place when it
// gets to the connection (settleLocked). Under overload most deliveries
// end there, so what the node spends on an update it will not write is one
// compare-and-swap per subscriber.
type subscription struct {
	c       *conn
	channel string
	form    fanout.Form
	// conflated counts this channel's updates replaced in the queue when
	// the node falls behind; nil: never (overload.deliver_all).
	conflated prometheus.Counter
	// sent is the latest publication queued to the client: what a bet on
	// this market can say the user saw. Read by the poller.
	sent atomic.Pointer[fanout.Publication]

	// latest is the newest update for held's place, nil while nothing is
	// held. Swapped in by Deliver without c.mu; set and taken under c.mu.
	latest atomic.Pointer[fanout.Update]

	// under c.mu (and in the Subscribe callback, before any Deliver):
	// base is the publication this client will hold last for the channel
	// (for delta: what the next patch must apply to); held is the queued
	// frame latest replaces, heldSeq its update's Seq.
	base    *fanout.Publication
	held    *fanout.Frame
	heldSeq uint64
}

var _ fanout.Subscriber = (*subscription)(nil)

func (s *subscription) delta() bool { return s.form&engine.FormKinds == engine.FormDeltaFull }

// Deliver queues u for the client (conn.deliver), or, while a frame of the
// channel is held for the newest value, makes u that value. A priority
// publication is never swapped in: it is queued after the held frame.
func (s *subscription) Deliver(u *fanout.Update) {
	if !u.Pub.Priority {
		for cur := s.latest.Load(); cur != nil; cur = s.latest.Load() {
			if s.latest.CompareAndSwap(cur, u) {
				return
			}
		}
	}
	s.c.deliver(s, u)
}

// pick returns form f of u, the uncompressed one if the client limited
// the server's deflate window below the message's size.
func (c *conn) pick(u *fanout.Update, f fanout.Form) *fanout.Frame {
	fr := u.Frame(f)
	if c.deflateWindow > 0 && fr != nil && fr.Form&engine.FormDeflate != 0 {
		if plain := u.Frame(f &^ engine.FormDeflate); len(engine.FramePayload(plain.Bytes)) > c.deflateWindow {
			return plain
		}
	}
	return fr
}

func (c *conn) clientID() string {
	h := hex.EncodeToString(c.id[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// deliver queues u in the form s's client can use, without blocking (it
// runs under the hub's channel lock): a patch only if the client will hold
// the publication it applies to, else the full payload. The full form
// replaces the queued, unwritten frames of the same channel (latest value
// wins; see replaceLocked) when
//
//   - the node is behind: the connection has waited overload.conflate_after
//     for a writer, or its writer's last connection did (it will wait as
//     long), and the channel is not under deliver_all; the frame is then
//     held for later updates (see subscription), or
//   - the client is slow: its queue is past websocket.soft_queue_bytes, or
//     its socket has been full for overload.conflate_after (not for
//     deliver_all channels);
//
// never for a priority publication, nor in place of one. Past
// websocket.max_queue_bytes the connection is closed as slow (3008: the
// SDK reconnects and recovers the latest values).
func (c *conn) deliver(s *subscription, u *fanout.Update) {
	m := c.srv.metrics
	cfg := &c.srv.cfg.WebSocket
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if s.latest.Load() != nil { // a priority update: the held frame takes its value first
		c.settleLocked(s)
	}
	full := c.pick(u, s.form)
	f := full
	if s.delta() {
		if s.base != nil && s.base == u.Prev {
			if p := c.pick(u, s.form&^engine.FormKinds|engine.FormPatch); p != nil {
				f = p
			}
		}
		s.base = u.Pub
	}
	s.sent.Store(u.Pub)
	if !u.Pub.Priority {
		now, after := c.srv.clock.Load(), int64(c.srv.cfg.Overload.ConflateAfter)
		behind := s.conflated != nil && c.scheduled && (now-c.scheduledAt >= after || c.writer.behind.Load())
		socketFull := c.waitOut && now-c.waitOutSince >= after
		slow := c.queued+len(f.Bytes) > int(cfg.SoftQueueBytes) || s.conflated != nil && socketFull
		if behind || slow {
			if n := c.replaceLocked(full); n > 0 {
				if behind {
					c.holdLocked(s, full, u)
				}
				c.mu.Unlock()
				if slow {
					m.conflated.Add(float64(n))
				} else {
					s.conflated.Add(float64(n))
					m.overloadConflatedN.Add(uint64(n))
				}
				return
			}
		}
	}
	c.enqueueLocked(f)
	c.mu.Unlock()
}

// holdLocked makes f, u's frame just queued for s, the one later updates
// of the channel replace (see subscription).
func (c *conn) holdLocked(s *subscription, f *fanout.Frame, u *fanout.Update) {
	s.held, s.heldSeq = f, u.Seq
	s.latest.Store(u)
	if !slices.Contains(c.holding, s) {
		c.holding = append(c.holding, s)
	}
}

// settleLocked puts the frame of s's newest update in place of the held
// one and stops holding it: the writer calls it (settleAllLocked) before it
// writes the queue, deliver before it queues a priority publication after
// the held frame, enqueueLocked and startCloseLocked before a reply or
// close frame (nothing published later may go out ahead of one).
func (c *conn) settleLocked(s *subscription) {
	u := s.latest.Swap(nil)
	if u == nil {
		return
	}
	held := s.held
	s.held = nil
	n := u.Seq - s.heldSeq // updates swapped in: none in between is priority
	if n == 0 {
		return
	}
	fixed := c.fixedLocked()
	i := slices.Index(c.queue[fixed:], held)
	if i < 0 {
		return // dropped with the queue
	}
	f := c.pick(u, s.form)
	c.queue[fixed+i] = f
	c.queued += len(f.Bytes) - len(held.Bytes)
	if s.delta() {
		s.base = u.Pub
	}
	s.sent.Store(u.Pub)
	s.conflated.Add(float64(n))
	c.srv.metrics.overloadConflatedN.Add(n)
}

// settleAllLocked settles every held frame: what the writer sends is each
// channel's newest value.
func (c *conn) settleAllLocked() {
	for _, s := range c.holding {
		c.settleLocked(s)
	}
	clear(c.holding)
	c.holding = c.holding[:0]
}

// forgetHeldLocked stops holding frames the queue no longer has.
func (c *conn) forgetHeldLocked() {
	for _, s := range c.holding {
		s.latest.Store(nil)
		s.held = nil
	}
	c.holding = nil
}

// conflatedCounter is the counter of channel's updates replaced in a write
// queue because the node fell behind, or nil if they never are
// (overload.deliver_all).
func (s *Server) conflatedCounter(channel string) prometheus.Counter {
	if !s.conflates(channel) {
		return nil
	}
	return s.metrics.overloadConflated.WithLabelValues(namespace(channel), "connection")
}

// conflates says whether updates of channel may replace each other when
// the node falls behind: not under overload.deliver_all.
func (s *Server) conflates(channel string) bool {
	for _, p := range s.cfg.Overload.DeliverAll {
		if strings.HasPrefix(channel, p) {
			return false
		}
	}
	return true
}

// namespace is a channel name's first segment, the label of per-namespace
// metrics.
func namespace(channel string) string {
	if i := strings.IndexByte(channel, ':'); i >= 0 {
		return channel[:i]
	}
	return channel
}

// replaceLocked puts f, a self-contained frame, in place of the channel's
// newest queued frame and drops the channel's older unwritten frames back
// to the nearest barrier: a reply or ping (never move a publication ahead
// of one; a subscribe reply may carry this channel's value), a priority
// frame of the channel, or the frames under way (fixed). The channel's
// order is kept and the client reads only its latest value; a priority
// frame is never replaced nor dropped. It returns how many queued frames
// f stands for: 0 if there was none to replace (f must be queued).
func (c *conn) replaceLocked(f *fanout.Frame) int {
	ch := f.Pub.Channel
	last, stale, stop := -1, 0, c.fixedLocked()
	for i := len(c.queue) - 1; i >= stop; i-- {
		q := c.queue[i].Pub
		if q == nil || (q.Channel == ch && q.Priority) {
			stop = i + 1
			break
		}
		if q.Channel != ch {
			continue
		}
		if last < 0 {
			last = i
		} else {
			stale++
		}
	}
	if last < 0 {
		return 0
	}
	c.queued += len(f.Bytes) - len(c.queue[last].Bytes)
	c.queue[last] = f
	if stale > 0 {
		j := stop
		for i := stop; i < len(c.queue); i++ {
			if i < last && c.queue[i].Pub.Channel == ch {
				c.queued -= len(c.queue[i].Bytes)
				continue
			}
			c.queue[j] = c.queue[i]
			j++
		}
		clear(c.queue[j:])
		c.queue = c.queue[:j]
	}
	return 1 + stale
}

// enqueueLocked queues f and schedules a write, or, if the queue would pass
// websocket.max_queue_bytes, drops it and closes the connection as slow
// (3008). Publications and replies alike: a client that sends commands but
// does not read is slow too.
func (c *conn) enqueueLocked(f *fanout.Frame) {
	if c.queued+len(f.Bytes) > int(c.srv.cfg.WebSocket.MaxQueueBytes) {
		c.dropQueueLocked()
		c.startCloseLocked(protocol.DisconnectSlow.Code, protocol.DisconnectSlow.Reason, "")
		c.srv.metrics.slowDisconnects.Inc()
		return
	}
	if f.Pub == nil && len(c.holding) > 0 {
		c.settleAllLocked()
	}
	c.pushLocked(f)
	c.scheduleLocked(f.Pub == nil || f.Pub.Priority)
}

// pushLocked appends f to the queue (pooled memory).
func (c *conn) pushLocked(f *fanout.Frame) {
	if len(c.queue) == cap(c.queue) {
		c.growQueueLocked()
	}
	c.queue = append(c.queue, f)
	c.queued += len(f.Bytes)
}

// scheduleLocked puts c on its writer's run list, or, if urgent (a reply,
// ping, close or priority publication was queued), on the urgent list,
// which the writer serves before the next connection of its run list: under
// overload a write pass over every connection takes long, and what must not
// wait for it does not.
func (c *conn) scheduleLocked(urgent bool) {
	if c.writing || c.waitOut || c.fd < 0 {
		return // the write under way, or EPOLLOUT, picks the frame up
	}
	if !c.scheduled {
		c.scheduled = true
		c.scheduledAt = c.srv.clock.Load()
		if !urgent {
			c.writer.push(c, false)
		}
	}
	if urgent && !c.urgent {
		c.urgent = true
		c.writer.push(c, true)
	}
}

// fixedLocked is how many frames at the head of the queue must stay as
// they are: those in the writev under way, and one already partly written.
func (c *conn) fixedLocked() int {
	n := c.inflight
	if c.head > 0 {
		n = max(n, 1)
	}
	return min(n, len(c.queue))
}

// dropQueueLocked drops queued frames, except fixed ones: they must finish
// as they are, or the stream would be corrupt.
func (c *conn) dropQueueLocked() {
	c.forgetHeldLocked()
	keep := 0
	if c.fd >= 0 {
		keep = c.fixedLocked()
	}
	clear(c.queue[keep:])
	c.queue = c.queue[:keep]
	c.queued = 0
	for i, f := range c.queue {
		c.queued += len(f.Bytes)
		if i == 0 {
			c.queued -= c.head
		}
	}
	if keep == 0 {
		c.head = 0
	}
}

// queueBuf is pooled backing memory for connection queues, so that a
// backlog costs no allocation per delivery and an idle connection holds no
// queue memory. Pools are per power-of-two capacity.
type queueBuf struct{ frames []*fanout.Frame }

var queuePools [18]sync.Pool // index k: capacity 1<<k, k >= minQueueBits

const minQueueBits = 2

// growQueueLocked moves the queue to pooled memory of twice the capacity.
func (c *conn) growQueueLocked() {
	k := max(bits.Len(uint(cap(c.queue))), minQueueBits)
	var qb *queueBuf
	if k < len(queuePools) {
		qb, _ = queuePools[k].Get().(*queueBuf)
	}
	if qb == nil {
		qb = &queueBuf{frames: make([]*fanout.Frame, 0, 1<<k)}
	}
	qb.frames = append(qb.frames[:0], c.queue...)
	c.releaseQueueLocked()
	c.qbuf, c.queue = qb, qb.frames
}

// releaseQueueLocked returns the queue's memory to its pool.
func (c *conn) releaseQueueLocked() {
	if qb := c.qbuf; qb != nil {
		clear(c.queue[:cap(c.queue)])
		qb.frames = c.queue[:0]
		if k := bits.Len(uint(cap(qb.frames))) - 1; k < len(queuePools) {
			queuePools[k].Put(qb)
		}
	}
	c.qbuf, c.queue = nil, nil
}

// send queues a frame that is not a publication (replies, pings, pongs).
func (c *conn) send(frame []byte) {
	c.mu.Lock()
	if !c.closing {
		c.enqueueLocked(&fanout.Frame{Bytes: frame})
	}
	c.mu.Unlock()
}

// disconnect sends what is queued, then a close frame with d's code and
// reason, then shuts the connection.
func (c *conn) disconnect(d protocol.Disconnect) { c.closeWith(ws.StatusCode(d.Code), d.Reason) }

func (c *conn) closeWith(code ws.StatusCode, reason string) {
	c.mu.Lock()
	c.startCloseLocked(uint16(code), reason, "")
	c.mu.Unlock()
}

// echoClose answers a client's close frame with the same code; counted as
// "client" (the client picks the code).
func (c *conn) echoClose(code ws.StatusCode, reason string) {
	c.mu.Lock()
	c.startCloseLocked(uint16(code), reason, "client")
	c.mu.Unlock()
}

// startCloseLocked queues a close frame and stops queueing anything else.
// label names the close in the disconnects metric ("": the code).
func (c *conn) startCloseLocked(code uint16, reason, label string) {
	if c.closing {
		return
	}
	c.closing = true
	if label == "" {
		label = codeLabel(ws.StatusCode(code))
	}
	c.srv.metrics.disconnects.WithLabelValues(label).Inc()
	if c.fd < 0 || c.closeSent {
		return
	}
	c.settleAllLocked()
	c.pushLocked(&fanout.Frame{Bytes: ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason)))})
	c.closeDeadline = time.Now().Add(c.srv.cfg.WebSocket.WriteTimeout).UnixNano()
	c.scheduleLocked(true)
}

// afterDrainLocked runs when a writer has emptied the queue: once the close
// frame is out, shut the write side; the client closes its side, the poller
// sees EOF and cleans up. The heartbeat shuts the socket if it does not.
func (c *conn) afterDrainLocked() {
	if c.closing && !c.closeSent && c.fd >= 0 {
		c.closeSent = true
		unix.Shutdown(c.fd, unix.SHUT_WR)
		c.closeDeadline = time.Now().Add(2 * time.Second).UnixNano()
	}
}

// kill shuts the socket in both directions; the poller then cleans up.
func (c *conn) kill() {
	c.mu.Lock()
	c.closing = true
	if c.fd >= 0 {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.mu.Unlock()
}

// findSub, addSub and deleteSub keep c.subs; poller goroutine only.
func (c *conn) findSub(ch string) int {
	for i, s := range c.subs {
		if s.channel == ch {
			return i
		}
	}
	return -1
}

func (c *conn) addSub(s *subscription) { c.subs = append(c.subs, s) }

// deleteSub removes and returns the subscription to ch, or nil.
func (c *conn) deleteSub(ch string) *subscription {
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
