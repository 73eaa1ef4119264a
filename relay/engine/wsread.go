package engine

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// This file turns the bytes a poller reads into WebSocket messages. It runs
// on the poller goroutine; data is the poller's scratch buffer, so anything
// kept across reads is copied into c.partial or c.msg.

// Errors from the frame reader, each mapped to a WebSocket close code. The
// text is the close frame's reason, as clients have always seen it (hence
// no package prefix, and the relay's name for Config.MaxMessageBytes).
var (
	errFrameTooLarge = errors.New("message larger than websocket.max_message_bytes")
	errInvalidUTF8   = errors.New("text message is not valid UTF-8")
	errProtocol      = errors.New("WebSocket protocol violation")
	errCloseCode     = errors.New("close frame with an invalid status code")
	errCloseReason   = errors.New("close frame reason is not valid UTF-8")
	errNonMinimal    = errors.New("frame length not in its minimal form")
	errFlood         = errors.New("more than websocket.max_frames_per_second frames")
)

// wrongFrameType is the error of a message of the other frame type: its
// text is the connection's close reason (ConnConfig.WrongFrameType).
type wrongFrameType string

func (e wrongFrameType) Error() string        { return string(e) }
func (e wrongFrameType) Is(target error) bool { return target == ErrWrongFrameType }

// parseHeader parses a client frame header at the start of b. It returns
// the header and its size, or ok=false when b holds less than a header.
// Client frames must be masked; unmasked ones are reported by the caller.
func parseHeader(b []byte) (h ws.Header, size int, ok bool) {
	if len(b) < 2 {
		return h, 0, false
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	size = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		size = 4
	case 127:
		if len(b) < 10 {
			return h, 0, false
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			u = math.MaxInt64 // the RFC forbids the top bit; rejected as too large
		}
		h.Length = int64(u)
		size = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < size+4 {
			return h, 0, false
		}
		copy(h.Mask[:], b[size:size+4])
		size += 4
	}
	return h, size, true
}

// consume handles the bytes read from the socket: complete messages are
// handled, an incomplete frame is kept for the next read.
func (c *Conn) consume(data []byte) {
	if c.discard || c.stopIfClosing() {
		return
	}
	if len(c.partial) > 0 {
		c.partial = append(c.partial, data...)
		data = c.partial
	}
	max := int64(c.eng.cfg.MaxMessageBytes)
	for len(data) > 0 && !c.discard {
		h, hs, ok := parseHeader(data)
		if !ok {
			break
		}
		if !h.Masked || !c.rsvAllowed(h) {
			c.fail(ws.StatusProtocolError, errProtocol)
			return
		}
		if !minimalLength(h, hs) {
			c.fail(ws.StatusProtocolError, errNonMinimal)
			return
		}
		if h.OpCode.IsControl() && (h.Length > 125 || !h.Fin) {
			c.fail(ws.StatusProtocolError, errProtocol)
			return
		}
		if !h.OpCode.IsControl() && h.Length > max-int64(len(c.msg)) {
			c.fail(ws.StatusMessageTooBig, errFrameTooLarge)
			return
		}
		if int64(len(data)-hs) < h.Length {
			break
		}
		// Counted once complete: a frame arriving in many reads is one.
		if !c.countFrame() {
			flood := c.eng.cfg.Flood
			c.fail(ws.StatusCode(flood.Code), errFlood)
			return
		}
		payload := data[hs : hs+int(h.Length)]
		data = data[hs+int(h.Length):]
		ws.Cipher(payload, h.Mask, 0)
		c.frame(h, payload)
	}
	c.keepPartial(data)
}

// minimalLength says whether h, parsed from hs header bytes, states its
// length in the fewest bytes, as RFC 6455 section 5.2 requires.
func minimalLength(h ws.Header, hs int) bool {
	if h.Masked {
		hs -= 4
	}
	switch hs {
	case 4:
		return h.Length >= 126
	case 10:
		return h.Length > 0xffff
	}
	return true
}

// countFrame counts a frame against Config.MaxFramesPerSecond (per
// second of the engine's clock), reporting false past it.
func (c *Conn) countFrame() bool {
	limit := c.eng.cfg.MaxFramesPerSecond
	if limit <= 0 {
		return true
	}
	if now := c.eng.clock.Load(); now-c.frameWindow >= int64(time.Second) {
		c.frameWindow, c.frames = now, 0
	}
	c.frames++
	return c.frames <= limit
}

// validCloseCode says whether a client may send code in a close frame
// (RFC 6455 section 7.4 and the IANA registry): 1000-1003, 1007-1014,
// 3000-4999. 1004-1006 and 1015 are reserved, the rest undefined.
func validCloseCode(code ws.StatusCode) bool {
	return code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
}

// rsvAllowed says whether h's RSV bits are legal: none, except RSV1 on the
// first frame of a data message when permessage-deflate was negotiated.
func (c *Conn) rsvAllowed(h ws.Header) bool {
	const rsv1 = 0x4
	switch h.Rsv {
	case 0:
		return true
	case rsv1:
		return c.cfg.Deflate.Accepted && (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary)
	}
	return false
}

// keepPartial stores the unparsed rest of the input. When data is the
// tail of c.partial (the frame grew by this read and is still
// incomplete), c.partial's memory is kept: copying the whole frame again
// on every read made a frame drip-fed in small segments cost quadratic
// time.
func (c *Conn) keepPartial(data []byte) {
	if c.discard || len(data) == 0 {
		c.partial = nil
		return
	}
	if n := len(c.partial); n > 0 && &data[len(data)-1] == &c.partial[n-1] {
		if &data[0] != &c.partial[0] { // else nothing was consumed: keep it as it is
			c.partial = c.partial[:copy(c.partial, data)]
		}
		return
	}
	rest := make([]byte, len(data), max(len(data), 512))
	copy(rest, data)
	c.partial = rest
}

// frame handles one complete, unmasked frame.
func (c *Conn) frame(h ws.Header, payload []byte) {
	switch h.OpCode {
	case ws.OpPing:
		c.Send(ws.MustCompileFrame(ws.NewPongFrame(append([]byte(nil), payload...))))
		return
	case ws.OpPong:
		return
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(payload)
		switch {
		case len(payload) == 1 || len(payload) >= 2 && !validCloseCode(code):
			c.fail(ws.StatusProtocolError, errCloseCode)
			return
		case !utf8.ValidString(reason):
			c.fail(ws.StatusInvalidFramePayloadData, errCloseReason)
			return
		case code.Empty():
			code = ws.StatusNormalClosure
		}
		c.discard = true
		c.echoClose(code, reason) // as RFC 6455 asks
		return
	case ws.OpText, ws.OpBinary:
		if c.inMessage {
			c.fail(ws.StatusProtocolError, errProtocol)
			return
		}
		// The wrong kind of frame for the connection means a client
		// that speaks another encoding: the session chose the close
		// (the relay's is terminal, so that an SDK does not retry for
		// ever).
		if binary := h.OpCode == ws.OpBinary; binary != c.cfg.Binary {
			wrong := c.cfg.WrongFrameType
			c.fail(ws.StatusCode(wrong.Code), wrongFrameType(wrong.Reason))
			return
		}
	case ws.OpContinuation:
		if !c.inMessage {
			c.fail(ws.StatusProtocolError, errProtocol)
			return
		}
	default:
		c.fail(ws.StatusProtocolError, errProtocol)
		return
	}
	if h.OpCode != ws.OpContinuation {
		c.msgZ = h.Rsv != 0
	}
	msg := payload
	if !h.Fin || c.inMessage {
		c.msg = append(c.msg, payload...)
		c.inMessage = !h.Fin
		if c.inMessage {
			return
		}
		msg = c.msg
	}
	c.msg = nil
	if c.msgZ {
		// UTF-8 and size are checked on what the client meant to send.
		var err error
		if msg, err = inflate(msg, c.eng.cfg.MaxMessageBytes); err != nil {
			code := ws.StatusInvalidFramePayloadData
			if err == errFrameTooLarge {
				code = ws.StatusMessageTooBig
			}
			c.fail(code, err)
			return
		}
	}
	if !c.cfg.Binary && !utf8.Valid(msg) {
		c.fail(ws.StatusInvalidFramePayloadData, errInvalidUTF8)
		return
	}
	if !c.h.Message(msg, c.cfg.Binary) || c.stopIfClosing() {
		c.discard = true
	}
}

// stopIfClosing reports whether the connection is closing, and if so
// drops its input from now on (discard). A close the Handler did not ask
// for, so did not answer with false from Message, is seen here: the slow
// close of a queue past Config.MaxQueueBytes (often during Message, as
// the session queues a reply), a close from another goroutine, or a
// writer's failed write. Without it the poller went on handing a closed
// connection's whole backlog to its Handler, everything sent to it
// dropped, and served no other event meanwhile, the client's hang-up
// among them.
func (c *Conn) stopIfClosing() bool {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		c.discard = true
	}
	return closing
}

// fail closes the connection with a WebSocket-level close code and ignores
// further input.
func (c *Conn) fail(code ws.StatusCode, err error) {
	c.h.Violation(uint16(code), err)
	c.discard = true
	c.Close(uint16(code), err.Error())
}
