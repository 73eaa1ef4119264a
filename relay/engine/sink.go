package engine

import (
	"slices"
	"sync/atomic"

	"github.com/edgerelay/edgerelay/fanout"
)

// Sink is one channel subscription of a connection: what the hub holds
// (a fanout.Subscriber). form is the form the client negotiated: a kind
// (FormPlain or FormDeltaFull), FormDeflate if the connection has it, and
// the encoder's own bits.
//
// Conflation without the hub's work: once the connection is behind (see
// deliver) and its queue holds an unwritten frame of this channel (held),
// Deliver only swaps each later update into latest, without taking c.mu or
// encoding anything; the writer puts latest's frame in held's place when it
// gets to the connection (settleLocked). Under overload most deliveries
// end there, so what the node spends on an update it will not write is one
// compare-and-swap per subscriber.
type Sink struct {
	c       *Conn
	channel string
	form    fanout.Form
	// conflated counts this channel's updates replaced in the queue when
	// the node falls behind; nil: never.
	conflated Counter
	// sent is the latest publication queued to the client.
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

	// holdsThrough: the client already holds the channel's publications
	// up to this Kafka offset (it recovered from a node ahead of this
	// one); Deliver drops those. -1: none. Under the hub's channel lock
	// (set in the Subscribe callback, read by Deliver).
	holdsThrough int64

	// filter, if set, picks the publications the client gets (its tag
	// filter); a map entry's removal always passes. Set before Subscribe.
	filter fanout.Filter
}

var _ fanout.Subscriber = (*Sink)(nil)

// NewSink returns a sink for c's subscription to channel, to pass to
// fanout.Hub.Subscribe. form is FormPlain or FormDeltaFull with the
// encoder's bits; FormDeflate is added if c negotiated permessage-deflate.
// conflated counts the channel's updates conflated because the node is
// behind; nil means the channel is never conflated for that (say, bets:
// every update must go out), only when the client itself is slow.
func (c *Conn) NewSink(channel string, form fanout.Form, conflated Counter) *Sink {
	if c.cfg.Deflate.Accepted {
		form |= FormDeflate
	}
	return &Sink{c: c, channel: channel, form: form, conflated: conflated, holdsThrough: -1}
}

// Channel is the sink's channel.
func (s *Sink) Channel() string { return s.channel }

// Handler returns the Handler of the sink's connection.
func (s *Sink) Handler() Handler { return s.c.h }

// Sent is the latest publication queued to the client for the channel:
// what the client has been sent, or will be, last. Any goroutine.
func (s *Sink) Sent() *fanout.Publication { return s.sent.Load() }

// Subscribed records last, the channel's value the subscribe reply
// carries, as what the client holds: the base of a delta sink's first
// patch, and Sent. Call it from the hub's Subscribe callback, before the
// first Deliver.
func (s *Sink) Subscribed(last *fanout.Publication) {
	if s.delta() {
		s.base = last
	}
	s.sent.Store(last)
}

// HoldsThrough records that the client already holds the channel's
// publications up to Kafka offset through, past the value Subscribed
// recorded (it resumed from a node further ahead in the stream than this
// one): Deliver drops those instead of sending them twice, each becoming
// what the client holds. Call it from the hub's Subscribe callback, after
// Subscribed.
func (s *Sink) HoldsThrough(through int64) { s.holdsThrough = through }

// SetFilter makes the sink take only the publications f matches (and a
// map entry's removals, whatever their tags: a client must not keep an
// entry that is gone). Call it before handing the sink to the hub; the
// filter only decides whether the sink takes an update's frames, so it
// costs no encoding.
func (s *Sink) SetFilter(f fanout.Filter) { s.filter = f }

func (s *Sink) delta() bool { return s.form&FormKinds == FormDeltaFull }

// Deliver queues u for the client (Conn.deliver), or, while a frame of the
// channel is held for the newest value, makes u that value. A priority
// publication is never swapped in: it is queued after the held frame.
// An update the sink's filter does not match is dropped first.
// The hub calls it with the channel's lock held; it does not block.
func (s *Sink) Deliver(u *fanout.Update) {
	if s.filter != nil && !u.Pub.Removed && !s.filter.Match(u.Pub.Tags) {
		return
	}
	if u.Pub.Pos.Offset <= s.holdsThrough {
		s.c.holdsAlready(s, u.Pub)
		return
	}
	// (Binary updates go the long way, where a missing form is seen at
	// once: a held frame is settled only with an update it can encode.)
	if !u.Pub.Priority && !u.Pub.Binary {
		for cur := s.latest.Load(); cur != nil; cur = s.latest.Load() {
			if s.latest.CompareAndSwap(cur, u) {
				return
			}
		}
	}
	s.c.deliver(s, u)
}

// holdsAlready records p, which the client has from another node, as what
// it holds: the base of the next patch.
func (c *Conn) holdsAlready(s *Sink, p *fanout.Publication) {
	c.mu.Lock()
	if s.delta() {
		s.base = p
	}
	c.mu.Unlock()
	s.sent.Store(p)
}

// pick returns form f of u, the uncompressed one if the client limited
// the server's deflate window below the message's size.
func (c *Conn) pick(u *fanout.Update, f fanout.Form) *fanout.Frame {
	fr := u.Frame(f)
	if window := c.cfg.Deflate.Window; window > 0 && fr != nil && fr.Form&FormDeflate != 0 {
		if plain := u.Frame(f &^ FormDeflate); len(FramePayload(plain.Bytes)) > window {
			return plain
		}
	}
	return fr
}

// deliver queues u in the form s's client can use, without blocking (it
// runs under the hub's channel lock): a patch only if the client will hold
// the publication it applies to, else the full payload. The full form
// replaces the queued, unwritten frames of the same channel (latest value
// wins; see replaceLocked) when
//
//   - the node is behind: the connection has waited Config.ConflateAfter
//     for a writer, or its writer's last connection did (it will wait as
//     long), and the sink has a conflated Counter; the frame is then
//     held for later updates (see Sink), or
//   - the client is slow: its queue is past Config.SoftQueueBytes, or
//     its socket has been full for Config.ConflateAfter (only for sinks
//     with a Counter);
//
// never for a priority publication, nor in place of one. Past
// Config.MaxQueueBytes the connection is closed with Config.Slow.
func (c *Conn) deliver(s *Sink, u *fanout.Update) {
	cfg := &c.eng.cfg
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if s.latest.Load() != nil { // a priority update: the held frame takes its value first
		c.settleLocked(s)
	}
	full := c.pick(u, s.form)
	if full == nil {
		un := cfg.Unencodable
		c.startCloseLocked(un.Code, un.Reason, CloseRequested)
		c.mu.Unlock()
		return
	}
	f := full
	if s.delta() {
		base := s.base
		if u.Pub.Key != "" {
			// A map's entry: the client holds each key's previous
			// value, as every change of a map reaches its subscribers
			// (or is one it holds already, HoldsThrough) and a
			// conflated one is replaced by a full value (see
			// replaceLocked).
			base = u.Prev
		}
		if base != nil && base == u.Prev {
			if p := c.pick(u, s.form&^FormKinds|FormPatch); p != nil {
				f = p
			}
		}
		s.base = u.Pub
	}
	s.sent.Store(u.Pub)
	if !u.Pub.Priority {
		now, after := c.eng.clock.Load(), int64(cfg.ConflateAfter)
		behind := s.conflated != nil && c.scheduled && (now-c.scheduledAt >= after || c.writer.behind.Load())
		socketFull := c.waitOut && now-c.waitOutSince >= after
		slow := c.queued+len(f.Bytes) > cfg.SoftQueueBytes || s.conflated != nil && socketFull
		if behind || slow {
			if n := c.replaceLocked(full); n > 0 {
				if behind {
					c.holdLocked(s, full, u)
				}
				c.mu.Unlock()
				if !slow {
					s.conflated.Add(float64(n))
				}
				c.eng.hooks.OnQueueConflated(n, !slow)
				return
			}
		}
	}
	c.enqueueLocked(f)
	c.mu.Unlock()
}

// holdLocked makes f, u's frame just queued for s, the one later updates
// of the channel replace (see Sink).
func (c *Conn) holdLocked(s *Sink, f *fanout.Frame, u *fanout.Update) {
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
func (c *Conn) settleLocked(s *Sink) {
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
	c.eng.hooks.OnQueueConflated(int(n), true)
}

// settleAllLocked settles every held frame: what the writer sends is each
// channel's newest value.
func (c *Conn) settleAllLocked() {
	for _, s := range c.holding {
		c.settleLocked(s)
	}
	clear(c.holding)
	c.holding = c.holding[:0]
}

// forgetHeldLocked stops holding frames the queue no longer has.
func (c *Conn) forgetHeldLocked() {
	for _, s := range c.holding {
		s.latest.Store(nil)
		s.held = nil
	}
	c.holding = nil
}
