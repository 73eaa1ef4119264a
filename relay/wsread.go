package relay

import (
	"encoding/binary"
	"errors"
	"math"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/edgerelay/edgerelay/relay/protocol"
)

// This file turns the bytes a poller reads into WebSocket messages. It runs
// on the poller goroutine; data is the poller's scratch buffer, so anything
// kept across reads is copied into c.partial or c.msg.

// Errors from the frame reader, each mapped to a WebSocket close code.
var (
	errFrameTooLarge = errors.New("message larger than websocket.max_message_bytes")
	errInvalidUTF8   = errors.New("text message is not valid UTF-8")
	errBinary        = errors.New("binary message on a JSON connection (speak Protobuf with the centrifuge-protobuf subprotocol)")
	errText          = errors.New("text message on a Protobuf connection")
	errProtocol      = errors.New("WebSocket protocol violation")
)

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
func (c *conn) consume(data []byte) {
	if c.discard {
		return
	}
	if len(c.partial) > 0 {
		c.partial = append(c.partial, data...)
		data = c.partial
	}
	max := int64(c.srv.cfg.WebSocket.MaxMessageBytes)
	for len(data) > 0 && !c.discard {
		h, hs, ok := parseHeader(data)
		if !ok {
			break
		}
		if !h.Masked || !c.rsvAllowed(h) {
			c.fail(ws.StatusProtocolError, errProtocol)
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
		payload := data[hs : hs+int(h.Length)]
		data = data[hs+int(h.Length):]
		ws.Cipher(payload, h.Mask, 0)
		c.frame(h, payload)
	}
	c.keepPartial(data)
}

// rsvAllowed says whether h's RSV bits are legal: none, except RSV1 on the
// first frame of a data message when permessage-deflate was negotiated.
func (c *conn) rsvAllowed(h ws.Header) bool {
	const rsv1 = 0x4
	switch h.Rsv {
	case 0:
		return true
	case rsv1:
		return c.deflate && (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary)
	}
	return false
}

// keepPartial stores the unparsed rest of the input, reusing c.partial's
// memory when data lives in it.
func (c *conn) keepPartial(data []byte) {
	if c.discard || len(data) == 0 {
		c.partial = nil
		return
	}
	rest := make([]byte, len(data), max(len(data), 512))
	copy(rest, data)
	c.partial = rest
}

// frame handles one complete, unmasked frame.
func (c *conn) frame(h ws.Header, payload []byte) {
	switch h.OpCode {
	case ws.OpPing:
		c.send(ws.MustCompileFrame(ws.NewPongFrame(append([]byte(nil), payload...))))
		return
	case ws.OpPong:
		return
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(payload)
		if code.Empty() {
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
		// The wrong kind of frame for the encoding means a client that
		// speaks the other one: close with a terminal code (3501), so
		// that an SDK does not retry for ever.
		if binary := h.OpCode == ws.OpBinary; binary != c.codec.Binary() {
			err := errBinary
			if !binary {
				err = errText
			}
			c.failProtocol(protocol.DisconnectBadRequest, err)
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
		if msg, err = inflate(msg, int(c.srv.cfg.WebSocket.MaxMessageBytes)); err != nil {
			code := ws.StatusInvalidFramePayloadData
			if err == errFrameTooLarge {
				code = ws.StatusMessageTooBig
			}
			c.fail(code, err)
			return
		}
	}
	if !c.codec.Binary() && !utf8.Valid(msg) {
		c.fail(ws.StatusInvalidFramePayloadData, errInvalidUTF8)
		return
	}
	if !c.handleMessage(msg) {
		c.discard = true
	}
}

// fail closes the connection with a WebSocket-level close code and ignores
// further input.
func (c *conn) fail(code ws.StatusCode, err error) {
	c.srv.log.Debug("closing connection", "client", c.clientID(), "code", int(code), "err", err)
	c.srv.metrics.protocolErrors.WithLabelValues(codeLabel(code)).Inc()
	c.discard = true
	c.closeWith(code, err.Error())
}

// failProtocol closes the connection with a protocol disconnect code and
// err as the reason, and ignores further input.
func (c *conn) failProtocol(d protocol.Disconnect, err error) {
	c.srv.log.Debug("closing connection", "client", c.clientID(), "code", int(d.Code), "err", err)
	c.srv.metrics.protocolErrors.WithLabelValues("wrong_frame_type").Inc()
	c.discard = true
	c.closeWith(ws.StatusCode(d.Code), err.Error())
}
