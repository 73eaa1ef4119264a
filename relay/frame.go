package relay

import (
	"encoding/binary"
	"time"
	"unicode/utf8"

	"github.com/edgerelay/edgerelay/delta"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// maxHeader is the largest header of an unmasked server frame.
const maxHeader = 10

// textFrame returns payload framed as one unmasked WebSocket text frame.
func textFrame(payload []byte) []byte {
	b := make([]byte, maxHeader, maxHeader+len(payload))
	return finishTextFrame(append(b, payload...))
}

// finishTextFrame takes a buffer holding maxHeader reserved bytes followed by
// a payload, writes the text-frame header right before the payload and
// returns the frame, which shares b's memory.
func finishTextFrame(b []byte) []byte { return finishFrame(b, 0x81) } // FIN, text

// finishFrame is finishTextFrame with the header's first byte (FIN, RSV
// bits, opcode) given.
func finishFrame(b []byte, first byte) []byte {
	n := len(b) - maxHeader
	var h [maxHeader]byte
	h[0] = first
	hl := 2
	switch {
	case n <= 125:
		h[1] = byte(n)
	case n <= 0xffff:
		h[1] = 126
		binary.BigEndian.PutUint16(h[2:], uint16(n))
		hl = 4
	default:
		h[1] = 127
		binary.BigEndian.PutUint64(h[2:], uint64(n))
		hl = 10
	}
	start := maxHeader - hl
	copy(b[start:], h[:hl])
	return b[start:]
}

// Forms of a publication frame (fanout.Form). A subscription asks for the
// form its client negotiated; each form is built on first use, once per
// update (rarely twice, see fanout.Update), and shared by every subscriber
// asking for it:
//
//	bits 2-3  kind: plain JSON, delta full (data as a JSON string), delta patch
//	bit 1     formDeflate: permessage-deflate compressed
//	bit 0     formCompact: "id" instead of "channel" (channel compaction)
//
// formRawPatch is not sent: it holds the bare Fossil patch, which both patch
// envelopes (named and compact) are built from.
const (
	formCompact fanout.Form = 1 << 0
	formDeflate fanout.Form = 1 << 1

	formPlain     fanout.Form = 0 << 2
	formDeltaFull fanout.Form = 1 << 2
	formPatch     fanout.Form = 2 << 2
	formKinds     fanout.Form = 3 << 2

	formRawPatch fanout.Form = 3 << 2
)

// encodeForm is the hub's Encoder.
func (s *Server) encodeForm(u *fanout.Update, f fanout.Form) *fanout.Frame {
	switch {
	case f == formRawPatch:
		return s.encodePatch(u)
	case f&formDeflate != 0:
		return s.deflateFrame(u.Frame(f&^formDeflate), f)
	}
	p := u.Pub
	var id uint32
	if f&formCompact != 0 {
		id = u.ChannelID
	}
	switch f & formKinds {
	case formPlain:
		b := make([]byte, maxHeader, maxHeader+len(p.Data)+len(p.Channel)+64)
		b = finishTextFrame(protocol.AppendPublicationPush(b, p.Channel, id, p.Data, protoOffset(p)))
		return &fanout.Frame{Bytes: b, Pub: p, Form: f}
	case formDeltaFull:
		b := make([]byte, maxHeader, maxHeader+2*len(p.Data)+len(p.Channel)+64)
		b = finishTextFrame(protocol.AppendDeltaPush(b, p.Channel, id, p.Data, protoOffset(p), false))
		return &fanout.Frame{Bytes: b, Pub: p, Form: f}
	default:
		raw := u.Frame(formRawPatch)
		if raw == nil {
			return nil
		}
		b := make([]byte, maxHeader, maxHeader+2*len(raw.Bytes)+len(p.Channel)+64)
		b = finishTextFrame(protocol.AppendDeltaPush(b, p.Channel, id, raw.Bytes, protoOffset(p), true))
		return &fanout.Frame{Bytes: b, Pub: p, Form: f}
	}
}

// encodePatch returns the Fossil patch from the previous publication to
// this one, or nil when there is none to make (no previous publication, or
// one from another stream) or it would not help (not smaller than the
// payload, or not valid UTF-8: SDKs carry patches in JSON strings).
func (s *Server) encodePatch(u *fanout.Update) *fanout.Frame {
	prev, p := u.Prev, u.Pub
	if prev == nil || prev.Epoch != p.Epoch {
		return nil
	}
	start := time.Now()
	d := delta.Encode(nil, prev.Data, p.Data)
	s.metrics.deltaEncode.Observe(time.Since(start).Seconds())
	if len(d) >= len(p.Data) || !utf8.Valid(d) {
		s.metrics.patchesSkipped.Inc()
		return nil
	}
	return &fanout.Frame{Bytes: d, Pub: p, Form: formRawPatch}
}
