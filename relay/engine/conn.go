package engine

import (
	"errors"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/edgerelay/edgerelay/fanout"
)

// Handler is the session on top of one connection: what the client's
// messages mean. The engine calls it on the connection's poller
// goroutine, one call at a time, never with an engine lock held. It must
// not block: the poller serves many connections. Queue answers with
// Conn.Send or Conn.SendMessage and hand slow work to another goroutine.
type Handler interface {
	// Message handles one complete client message, reassembled from its
	// fragments and inflated; binary says its frame type, which is always
	// the connection's (ConnConfig.Binary); a text message is valid
	// UTF-8. msg is the engine's: valid only during the call, copy what
	// is kept. Message returns false when the connection is closing: the
	// engine then reads and drops all further input. It does so as well,
	// without being told, once the connection is closing for any other
	// reason (Conn.Close from any goroutine, a slow close, a failed
	// write): no Message comes after that, even within one read.
	Message(msg []byte, binary bool) bool
	// Violation reports that the engine is closing the connection with
	// code because the client broke the WebSocket protocol or sent the
	// wrong frame type (err matches ErrWrongFrameType); err's text is the
	// close reason. For logs and metrics.
	Violation(code uint16, err error)
	// Closed is called once, after the socket is closed and the engine
	// has let go of the connection: the session unsubscribes its sinks
	// and drops the Conn. What it sends from now on is discarded.
	Closed()
}

// ConnConfig is what the handshake decided about one connection.
type ConnConfig struct {
	// Binary: the connection's messages travel in binary frames, else
	// in text frames, both ways.
	Binary bool
	// WrongFrameType is the close for a client message of the other
	// frame type.
	WrongFrameType Close
	// Deflate is the permessage-deflate negotiation's outcome.
	Deflate DeflateNegotiation
}

// Close is a WebSocket close frame's status code and reason.
type Close struct {
	Code   uint16
	Reason string
}

// ErrWrongFrameType matches the error Handler.Violation gets for a
// message of the other frame type.
var ErrWrongFrameType = errors.New("engine: message of the wrong frame type")

// Conn is one client WebSocket connection on the engine.
//
// An idle connection owns no goroutine and no buffer: its socket is
// registered with a poller, which reads and handles input only when the
// socket is readable, and a writer sends its queue only when there is
// something to send.
//
// Ownership: fields under "poller" are touched only by the owning poller's
// goroutine (reads, Handler calls, final cleanup). Fields under mu are
// shared with writers, the hub (Sink.Deliver) and the session's other
// goroutines. The socket is closed under mu, never while a writer is
// using it. Exported methods are safe for concurrent use.
type Conn struct {
	eng    *Engine
	h      Handler
	cfg    ConnConfig
	poller *poller
	writer *writer

	// poller
	partial   []byte // an incomplete frame, kept only until the rest arrives
	msg       []byte // fragments of an incomplete message
	inMessage bool
	msgZ      bool // the message being read is compressed (RSV1)
	discard   bool // closing: input is read and dropped
	// frames counted in the second of the engine's clock that began at
	// frameWindow (Config.MaxFramesPerSecond)
	frames      int
	frameWindow int64
	readAgain   bool // on the poller's list of connections to read again
	hungUp      bool // the poller saw the peer hang up (or an error)
	// oob: the peer sent TCP urgent data (EPOLLPRI), at whose mark a
	// read stops short with input left: its reads go on to EAGAIN.
	oob bool
	// pendingInput: partial holds bytes read with the handshake, to be
	// handled on the first event.
	pendingInput bool

	mu            sync.Mutex
	fd            int             // -1 once closed
	queue         []*fanout.Frame // backed by qbuf when not nil, else by one
	one           [1]*fanout.Frame
	holding       []*Sink // sinks with a held frame in queue (see Sink)
	qbuf          *queueBuf
	head          int   // bytes of queue[0] already written
	queued        int   // bytes in queue, minus head
	stalledSince  int64 // unix nanos CheckTimeouts first saw the queue waiting with no write since; 0 after each write
	scheduled     bool  // on a writer's run list
	urgent        bool  // on a writer's urgent list (a reply or priority publication is queued)
	scheduledAt   int64 // Engine.clock when last put on a run list
	writing       bool  // a writer is in writev on fd
	inflight      int   // queue entries in the writev under way: not to be replaced or dropped
	waitOut       bool  // socket full: waiting for EPOLLOUT
	waitOutSince  int64 // Engine.clock when waitOut was set
	outEvents     uint32
	closing       bool  // close frame queued (or connection dead): no more frames
	closeSent     bool  // close frame written, write side shut down
	closeDeadline int64 // unix nanos after which the socket is shut down hard
	closeAfter    bool  // cleaned up while a writer was writing: writer closes fd
}

// Start registers c with its poller. initial holds bytes read past the
// handshake (the engine copies them). From a nil return on, the socket
// is c's, and Handler.Closed says when it is gone; on an error the caller
// still owns it.
func (c *Conn) Start(initial []byte) error { return c.poller.add(c, initial) }

// Send queues frame, one or more complete WebSocket frames that are not a
// publication (a reply, a ping), behind what is queued. The engine reads
// frame until it is written: the caller must not modify it, and may share
// one frame between connections.
func (c *Conn) Send(frame []byte) {
	c.mu.Lock()
	if !c.closing {
		c.enqueueLocked(&fanout.Frame{Bytes: frame})
	}
	c.mu.Unlock()
}

// SendMessage queues payload as one message of the connection's frame
// type, compressed if the client negotiated permessage-deflate and it
// helps. payload is copied: the caller may reuse it.
func (c *Conn) SendMessage(payload []byte) {
	var frame []byte
	head := MessageHead(c.cfg.Binary)
	if z, window := c.eng.cfg.Compressor, c.cfg.Deflate.Window; z != nil && c.cfg.Deflate.Accepted && (window == 0 || len(payload) <= window) {
		frame = z.Frame(head, payload)
	}
	if frame == nil {
		frame = MessageFrame(head, payload)
	}
	c.Send(frame)
}

// Close sends what is queued, then a close frame with code and reason,
// then shuts the connection. Later sends are dropped.
func (c *Conn) Close(code uint16, reason string) {
	c.mu.Lock()
	c.startCloseLocked(code, reason, CloseRequested)
	c.mu.Unlock()
}

// echoClose answers a client's close frame with the same code.
func (c *Conn) echoClose(code ws.StatusCode, reason string) {
	c.mu.Lock()
	c.startCloseLocked(uint16(code), reason, CloseEcho)
	c.mu.Unlock()
}

// startCloseLocked queues a close frame and stops queueing anything else.
func (c *Conn) startCloseLocked(code uint16, reason string, cause CloseCause) {
	if c.closing {
		return
	}
	c.closing = true
	c.eng.hooks.OnClose(code, cause)
	if c.fd < 0 || c.closeSent {
		return
	}
	c.settleAllLocked()
	c.pushLocked(&fanout.Frame{Bytes: ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason)))})
	c.closeDeadline = time.Now().Add(c.eng.cfg.WriteTimeout).UnixNano()
	c.scheduleLocked(true)
}

// afterDrainLocked runs when a writer has emptied the queue: once the close
// frame is out, shut the write side; the client closes its side, the poller
// sees EOF and cleans up. CheckTimeouts shuts the socket if it does not.
func (c *Conn) afterDrainLocked() {
	if c.closing && !c.closeSent && c.fd >= 0 {
		c.closeSent = true
		unix.Shutdown(c.fd, unix.SHUT_WR)
		c.closeDeadline = time.Now().Add(2 * time.Second).UnixNano()
	}
}

// kill shuts the socket in both directions; the poller then cleans up.
func (c *Conn) kill() {
	c.mu.Lock()
	c.closing = true
	if c.fd >= 0 {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.mu.Unlock()
}

// CheckTimeouts enforces the engine's timeouts at now (unix nanoseconds):
// a close that has not completed by its deadline shuts the socket hard; a
// queue without a write for Config.StallTimeout closes the connection with
// Config.Slow. It reports whether the connection is closing, in which
// case the session's own timeouts (pings, connect) no longer matter. The
// caller's sweep calls it, for every connection after Engine.Tick, so
// that no connection needs a timer.
func (c *Conn) CheckTimeouts(now int64) (closing bool) {
	c.mu.Lock()
	closing, deadline := c.closing, c.closeDeadline
	// Stall time is measured from the first sweep that finds the queue
	// waiting since the last write, so enqueueing never reads the clock.
	if len(c.queue) > 0 && c.stalledSince == 0 {
		c.stalledSince = now
	}
	stalled := len(c.queue) > 0 && now-c.stalledSince > int64(c.eng.cfg.StallTimeout)
	c.mu.Unlock()
	switch {
	case closing:
		if deadline != 0 && now > deadline {
			c.kill() // the close frame could not go out, or the client never closed
		}
		return true
	case stalled:
		c.closeSlow()
		return true
	}
	return false
}

// closeSlow closes the connection as slow (Config.Slow).
func (c *Conn) closeSlow() {
	c.mu.Lock()
	c.closeSlowLocked()
	c.mu.Unlock()
}

func (c *Conn) closeSlowLocked() {
	c.startCloseLocked(c.eng.cfg.Slow.Code, c.eng.cfg.Slow.Reason, CloseSlow)
}
