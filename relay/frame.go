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

// First header bytes of the frames the relay sends: FIN and the opcode,
// with RSV1 for a permessage-deflate message.
const (
	headText       byte = 0x81
	headBinary     byte = 0x82
	headCompressed byte = 0x40 // RSV1, or'ed into one of the above
)

// messageHead is the first header byte of an uncompressed message in the
// codec's frames: text for JSON, binary for Protobuf.
func messageHead(codec protocol.Codec) byte {
	if codec.Binary() {
		return headBinary
	}
	return headText
}

// messageFrame returns payload framed as one unmasked frame with header
// byte head.
func messageFrame(head byte, payload []byte) []byte {
	b := make([]byte, maxHeader, maxHeader+len(payload))
	return finishFrame(append(b, payload...), head)
}

// textFrame returns payload framed as one unmasked WebSocket text frame.
func textFrame(payload []byte) []byte { return messageFrame(headText, payload) }

// finishFrame takes a buffer holding maxHeader reserved bytes followed by
// a payload, writes the frame header (first byte given: FIN, RSV bits,
// opcode) right before the payload and returns the frame, which shares b's
// memory.
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
//	bit 4     formProtobuf: the Protobuf encoding (else JSON)
//	bits 2-3  kind: plain, delta full, delta patch
//	bit 1     formDeflate: permessage-deflate compressed
//	bit 0     formCompact: the channel's id instead of its name (channel compaction)
//
// In JSON a delta subscription's full payload travels as a JSON string,
// so delta full is a form of its own; in Protobuf data is raw bytes
// either way, and the delta full form is the plain frame itself (shared,
// labelled plain).
//
// formRawPatch is not sent: it holds the bare Fossil patch, which every
// patch envelope (both encodings, named and compact) is built from.
const (
	formCompact  fanout.Form = 1 << 0
	formDeflate  fanout.Form = 1 << 1
	formProtobuf fanout.Form = 1 << 4

	formPlain     fanout.Form = 0 << 2
	formDeltaFull fanout.Form = 1 << 2
	formPatch     fanout.Form = 2 << 2
	formKinds     fanout.Form = 3 << 2

	formRawPatch fanout.Form = 3 << 2
)

// formCodec returns the codec form f is encoded with.
func formCodec(f fanout.Form) protocol.Codec {
	if f&formProtobuf != 0 {
		return protocol.Protobuf
	}
	return protocol.JSON
}

// encodingForm is the form bit of a codec.
func encodingForm(c protocol.Codec) fanout.Form {
	if c.Binary() {
		return formProtobuf
	}
	return 0
}

// encodeForm is the hub's Encoder.
func (s *Server) encodeForm(u *fanout.Update, f fanout.Form) *fanout.Frame {
	switch {
	case f == formRawPatch:
		return s.encodePatch(u)
	case f&formDeflate != 0:
		return s.deflateFrame(u.Frame(f&^formDeflate), f)
	}
	p := u.Pub
	codec := formCodec(f)
	var id uint32
	if f&formCompact != 0 {
		id = u.ChannelID
	}
	var b []byte
	switch f & formKinds {
	case formPlain:
		b = make([]byte, maxHeader, maxHeader+len(p.Data)+len(p.Channel)+64)
		b = codec.AppendPublicationPush(b, p.Channel, id, p.Data, protoOffset(p))
	case formDeltaFull:
		if codec.Binary() {
			return u.Frame(f&^formKinds | formPlain)
		}
		b = make([]byte, maxHeader, maxHeader+2*len(p.Data)+len(p.Channel)+64)
		b = codec.AppendDeltaPush(b, p.Channel, id, p.Data, protoOffset(p), false)
	default:
		raw := u.Frame(formRawPatch)
		if raw == nil {
			return nil
		}
		if !codec.Binary() && !utf8.Valid(raw.Bytes) {
			// JSON carries patches in strings; this client gets the
			// full payload.
			s.metrics.patchesSkipped.Inc()
			return nil
		}
		b = make([]byte, maxHeader, maxHeader+2*len(raw.Bytes)+len(p.Channel)+64)
		b = codec.AppendDeltaPush(b, p.Channel, id, raw.Bytes, protoOffset(p), true)
	}
	return &fanout.Frame{Bytes: finishFrame(b, messageHead(codec)), Pub: p, Form: f}
}

// encodePatch returns the Fossil patch from the previous publication to
// this one, or nil when there is none to make (no previous publication, or
// one from another stream) or it would not help (not smaller than the
// payload).
func (s *Server) encodePatch(u *fanout.Update) *fanout.Frame {
	prev, p := u.Prev, u.Pub
	if prev == nil || prev.Epoch != p.Epoch {
		return nil
	}
	start := time.Now()
	d := delta.Encode(nil, prev.Data, p.Data)
	s.metrics.deltaEncode.Observe(time.Since(start).Seconds())
	if len(d) >= len(p.Data) {
		s.metrics.patchesSkipped.Inc()
		return nil
	}
	return &fanout.Frame{Bytes: d, Pub: p, Form: formRawPatch}
}
