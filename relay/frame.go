package relay

import (
	"encoding/binary"

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
