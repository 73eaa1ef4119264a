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
func finishTextFrame(b []byte) []byte {
	n := len(b) - maxHeader
	var h [maxHeader]byte
	h[0] = 0x81 // FIN, text
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

// encodePush is the hub's Encoder: the publication push frame, built once
// per update in a single allocation and shared by every subscriber.
func encodePush(p *fanout.Publication) []byte {
	b := make([]byte, maxHeader, maxHeader+len(p.Data)+len(p.Channel)+64)
	return finishTextFrame(protocol.AppendPublicationPush(b, p.Channel, p.Data, protoOffset(p)))
}

// encodeDelta is the hub's DeltaEncoder: the full payload as a JSON string,
// and a Fossil patch against prev when prev is from the same stream and the
// patch is smaller and valid UTF-8 (SDKs carry it in a JSON string).
func (s *Server) encodeDelta(prev, p *fanout.Publication) (full, patch []byte) {
	start := time.Now()
	defer func() { s.metrics.deltaEncode.Observe(time.Since(start).Seconds()) }()
	b := make([]byte, maxHeader, maxHeader+2*len(p.Data)+len(p.Channel)+64)
	full = finishTextFrame(protocol.AppendDeltaPush(b, p.Channel, p.Data, protoOffset(p), false))
	if prev == nil || prev.Epoch != p.Epoch {
		return full, nil
	}
	d := delta.Encode(nil, prev.Data, p.Data)
	if len(d) >= len(p.Data) || !utf8.Valid(d) {
		s.metrics.patchesSkipped.Inc()
		return full, nil
	}
	b = make([]byte, maxHeader, maxHeader+2*len(d)+len(p.Channel)+64)
	return full, finishTextFrame(protocol.AppendDeltaPush(b, p.Channel, d, protoOffset(p), true))
}
