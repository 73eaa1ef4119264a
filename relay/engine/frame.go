package engine

import (
	"encoding/binary"

	"github.com/edgerelay/edgerelay/fanout"
)

// MaxHeader is the largest header of an unmasked server frame: an encoder
// reserves it in front of a payload for FinishFrame.
const MaxHeader = 10

// First header bytes of the frames the engine sends: FIN and the opcode,
// with RSV1 for a permessage-deflate message.
const (
	HeadText       byte = 0x81
	HeadBinary     byte = 0x82
	HeadCompressed byte = 0x40 // RSV1, or'ed into one of the above
)

// MessageHead is the first header byte of an uncompressed message frame:
// binary or text.
func MessageHead(binary bool) byte {
	if binary {
		return HeadBinary
	}
	return HeadText
}

// MessageFrame returns payload framed as one unmasked frame with header
// byte head, in new memory.
func MessageFrame(head byte, payload []byte) []byte {
	b := make([]byte, MaxHeader, MaxHeader+len(payload))
	return FinishFrame(append(b, payload...), head)
}

// FinishFrame takes a buffer holding MaxHeader reserved bytes followed by
// a payload, writes the frame header (first byte given: FIN, RSV bits,
// opcode) right before the payload and returns the frame, which shares b's
// memory.
func FinishFrame(b []byte, first byte) []byte {
	n := len(b) - MaxHeader
	var h [MaxHeader]byte
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
	start := MaxHeader - hl
	copy(b[start:], h[:hl])
	return b[start:]
}

// FramePayload returns the payload of an unmasked server frame; it shares
// frame's memory.
func FramePayload(frame []byte) []byte {
	switch frame[1] & 0x7f {
	case 126:
		return frame[4:]
	case 127:
		return frame[10:]
	}
	return frame[2:]
}

// The form bits the engine reads (fanout.Form). A Sink asks each update
// for the form its client negotiated; the engine picks between kinds
// (a patch only when the client holds its base, else the full payload)
// and drops FormDeflate for messages past the client's window. The other
// bits (bit 0, bit 4 and up) are the encoder's, carried through untouched:
// the relay uses them for the protocol encoding and channel compaction.
//
//	bits 2-3  kind: FormPlain, FormDeltaFull, FormPatch (FormKinds masks them)
//	bit 1     FormDeflate: permessage-deflate compressed
const (
	FormDeflate fanout.Form = 1 << 1

	FormPlain     fanout.Form = 0 << 2
	FormDeltaFull fanout.Form = 1 << 2
	FormPatch     fanout.Form = 2 << 2
	FormKinds     fanout.Form = 3 << 2
)
