package relay

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// conn is one client WebSocket connection.
//
// Goroutines: readLoop owns the session state (connected, subs) and does the
// final cleanup; writeLoop owns writes to the socket. Deliver and close may be
// called from any goroutine (Deliver with a hub channel lock held) and only
// touch the queue under mu.
type conn struct {
	srv      *Server
	nc       net.Conn
	id       string
	accepted time.Time

	// Owned by readLoop.
	connected bool
	subs      map[string]struct{}
	replies   []byte // replies of the frame being handled, '\n'-separated

	// Heartbeat state, read by the server's heartbeat goroutine.
	isConnected  atomic.Bool
	lastPing     atomic.Int64 // unix nanos of the last ping sent
	pongDeadline atomic.Int64 // unix nanos; 0 when no pong is awaited

	mu      sync.Mutex
	wake    *sync.Cond
	queue   []outFrame
	queued  int // bytes in queue
	closing bool
	closeFr []byte // close frame to send after the queue, once closing

	writerDone chan struct{}
}

// outFrame is one WebSocket frame waiting to be written. pub is set for
// publication pushes so the write can be timed against the source timestamp.
type outFrame struct {
	b   []byte
	pub *fanout.Publication
}

var _ fanout.Subscriber = (*conn)(nil)

func newConn(s *Server, nc net.Conn, id string) *conn {
	c := &conn{srv: s, nc: nc, id: id, accepted: time.Now(), subs: map[string]struct{}{}, writerDone: make(chan struct{})}
	c.wake = sync.NewCond(&c.mu)
	return c
}

// Deliver queues a publication frame. It never blocks: a connection whose
// queue would pass websocket.max_queue_bytes is disconnected as slow, with a
// code that tells the SDK to reconnect and recover.
func (c *conn) Deliver(f *fanout.Frame) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.queued+len(f.Bytes) > int(c.srv.cfg.WebSocket.MaxQueueBytes) {
		c.queue, c.queued = nil, 0 // the client recovers from the cache
		c.closeLocked(closeFrame(ws.StatusCode(protocol.DisconnectSlow.Code), protocol.DisconnectSlow.Reason))
		c.mu.Unlock()
		c.srv.metrics.disconnects.WithLabelValues("3008").Inc()
		return
	}
	c.queue = append(c.queue, outFrame{b: f.Bytes, pub: f.Pub})
	c.queued += len(f.Bytes)
	c.mu.Unlock()
	c.wake.Signal()
}

// send queues a frame that is not a publication (replies, pings).
func (c *conn) send(frame []byte) {
	c.mu.Lock()
	if !c.closing {
		c.queue = append(c.queue, outFrame{b: frame})
		c.queued += len(frame)
	}
	c.mu.Unlock()
	c.wake.Signal()
}

// disconnect sends what is queued, then a close frame with d, then closes.
func (c *conn) disconnect(d protocol.Disconnect) {
	c.closeWith(ws.StatusCode(d.Code), d.Reason)
}

func (c *conn) closeWith(code ws.StatusCode, reason string) {
	c.mu.Lock()
	first := !c.closing
	c.closeLocked(closeFrame(code, reason))
	c.mu.Unlock()
	if first {
		c.srv.metrics.disconnects.WithLabelValues(codeLabel(code)).Inc()
	}
	c.wake.Signal()
}

func (c *conn) closeLocked(frame []byte) {
	if c.closing {
		return
	}
	c.closing = true
	c.closeFr = frame
	c.wake.Signal()
}

func closeFrame(code ws.StatusCode, reason string) []byte {
	return ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
}

// writeLoop writes queued frames, several per write call, until the
// connection closes.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var spare []outFrame
	bufs := make(net.Buffers, 0, 16)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closing {
			c.wake.Wait()
		}
		batch := c.queue
		c.queue, c.queued = spare[:0], 0
		closing, closeFr := c.closing, c.closeFr
		c.mu.Unlock()

		if len(batch) > 0 {
			bufs = bufs[:0]
			n := 0
			for _, f := range batch {
				bufs = append(bufs, f.b)
				n += len(f.b)
			}
			c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WebSocket.WriteTimeout))
			toWrite := bufs // WriteTo consumes its receiver
			if _, err := toWrite.WriteTo(c.nc); err != nil {
				c.abort()
				return
			}
			c.srv.observeWrite(batch, n)
			clear(batch)
			spare = batch
		}
		if closing {
			c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			if closeFr != nil {
				c.nc.Write(closeFr)
			}
			// Half-close and let the reader drain what the client still
			// sends: closing with unread data makes the kernel send a
			// reset, and the client could lose our close frame.
			if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
				tc.CloseWrite()
			}
			c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			return
		}
	}
}

// abort ends the connection after a write error.
func (c *conn) abort() {
	c.mu.Lock()
	c.closeLocked(nil)
	c.mu.Unlock()
	c.nc.Close()
}

// Errors from the frame reader, each mapped to a WebSocket close code.
var (
	errFrameTooLarge = errors.New("message larger than websocket.max_message_bytes")
	errInvalidUTF8   = errors.New("text message is not valid UTF-8")
	errBinary        = errors.New("binary messages are not supported by the JSON protocol")
	errProtocol      = errors.New("WebSocket protocol violation")
)

// readLoop reads messages from br, which reads c.nc, and handles them until
// the connection ends, then cleans up.
func (c *conn) readLoop(br *bufio.Reader) {
	defer c.cleanup()
	max := int(c.srv.cfg.WebSocket.MaxMessageBytes)
	var msg []byte
	inMessage := false
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			c.readFailed(err)
			return
		}
		if !h.Masked || h.Rsv != 0 {
			c.fail(ws.StatusProtocolError, errProtocol)
			return
		}
		if h.OpCode.IsControl() {
			if h.Length > 125 || !h.Fin {
				c.fail(ws.StatusProtocolError, errProtocol)
				return
			}
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(br, payload); err != nil {
				c.readFailed(err)
				return
			}
			ws.Cipher(payload, h.Mask, 0)
			switch h.OpCode {
			case ws.OpPing:
				c.send(ws.MustCompileFrame(ws.NewPongFrame(payload)))
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(payload)
				if code.Empty() {
					code = ws.StatusNormalClosure
				}
				c.closeWith(code, reason) // echo, as RFC 6455 asks
				c.drain(br)
				return
			}
			continue
		}
		switch {
		case h.OpCode == ws.OpBinary:
			c.fail(ws.StatusUnsupportedData, errBinary)
			return
		case h.OpCode == ws.OpText && !inMessage, h.OpCode == ws.OpContinuation && inMessage:
		default:
			c.fail(ws.StatusProtocolError, errProtocol)
			return
		}
		if h.Length > int64(max-len(msg)) {
			c.fail(ws.StatusMessageTooBig, errFrameTooLarge)
			return
		}
		start := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(br, msg[start:]); err != nil {
			c.readFailed(err)
			return
		}
		ws.Cipher(msg[start:], h.Mask, 0)
		inMessage = !h.Fin
		if inMessage {
			continue
		}
		if !utf8.Valid(msg) {
			c.fail(ws.StatusInvalidFramePayloadData, errInvalidUTF8)
			return
		}
		if !c.handleMessage(msg) {
			c.drain(br)
			return
		}
		msg = msg[:0]
		if cap(msg) > 16<<10 {
			msg = nil // do not keep a large buffer for an idle connection
		}
	}
}

// fail closes the connection with a WebSocket-level close code.
func (c *conn) fail(code ws.StatusCode, err error) {
	c.srv.log.Debug("closing connection", "client", c.id, "code", int(code), "err", err)
	c.closeWith(code, err.Error())
	c.drain(nil)
}

// readFailed handles a read error: the peer went away or the drain deadline
// passed.
func (c *conn) readFailed(err error) {
	c.mu.Lock()
	c.closeLocked(nil)
	c.mu.Unlock()
	c.wake.Signal()
}

// drain discards input until the writer has sent the close frame and the
// client has closed its side (or the drain deadline passes).
func (c *conn) drain(br *bufio.Reader) {
	var r io.Reader = c.nc
	if br != nil {
		r = br
	}
	<-c.writerDone
	io.Copy(io.Discard, r)
}

func (c *conn) cleanup() {
	<-c.writerDone
	c.nc.Close()
	for ch := range c.subs {
		c.srv.hub.Unsubscribe(ch, c)
	}
	c.srv.removeConn(c)
}
