package protocol

import "fmt"

// Encoding is a client's wire encoding of the protocol, chosen at the
// WebSocket handshake (see Negotiate).
type Encoding uint8

const (
	EncodingJSON     Encoding = iota // text frames, '\n'-separated JSON objects
	EncodingProtobuf                 // binary frames, varint-length-delimited messages
)

func (e Encoding) String() string {
	if e == EncodingProtobuf {
		return "protobuf"
	}
	return "json"
}

// Subprotocol is the WebSocket subprotocol a client offers to speak
// Protobuf, as the Centrifugo SDKs do.
const Subprotocol = "centrifuge-protobuf"

// ParseFormat maps the "format" query parameter of the WebSocket URL to an
// encoding: "json" or "protobuf" ("" is JSON). Any other value is an error
// naming it.
func ParseFormat(format string) (Encoding, error) {
	switch format {
	case "", "json":
		return EncodingJSON, nil
	case "protobuf":
		return EncodingProtobuf, nil
	}
	return 0, fmt.Errorf("protocol: unknown format %q (want json or protobuf)", format)
}

// Codec is one encoding of the protocol. The session builds Commands and
// Replies; a Codec turns them into bytes and back. Both codecs are
// stateless values, safe for concurrent use.
//
// Buffers: every Append method appends to dst and returns the extended
// slice, which the caller owns; Append methods do not keep dst or their
// arguments. DecodeCommands may hand fn Commands whose byte fields (Data)
// point into msg: msg must not be reused while they are in use.
type Codec interface {
	// Encoding names the codec.
	Encoding() Encoding
	// Binary reports whether the codec's messages travel in binary
	// WebSocket frames (else text frames).
	Binary() bool
	// ChannelIDs reports whether pushes may carry a channel's numeric id
	// in place of its name (channel compaction, subscribe flag 1).
	ChannelIDs() bool
	// Accepts reports whether data can be a publication's data in this
	// encoding: JSON needs valid JSON, Protobuf takes any bytes.
	Accepts(data []byte) bool
	// DecodeCommands decodes every command of one client message and
	// calls fn for each, in order, stopping at fn's first error. A message
	// that cannot be decoded stops with an error wrapping ErrMalformed;
	// commands before the bad one have been passed to fn.
	DecodeCommands(msg []byte, fn func(*Command) error) error
	// AppendReply appends r to msg, which holds zero or more replies
	// already: several replies may travel in one message.
	AppendReply(msg []byte, r *Reply) []byte
	// AppendPublicationPush appends, as a message of its own, the push of
	// one publication of channel (or of compact channel id, when id is not
	// 0) with data as it came from the source and offset (0: none).
	AppendPublicationPush(dst []byte, channel string, id uint32, data []byte, offset uint64) []byte
	// AppendDeltaPush appends the push for a subscription that negotiated
	// fossil deltas: payload is the full data, or a Fossil patch when
	// isPatch. JSON carries it as a JSON string (payload must then be
	// valid UTF-8); Protobuf as the raw bytes.
	AppendDeltaPush(dst []byte, channel string, id uint32, payload []byte, offset uint64, isPatch bool) []byte
	// AppendPush appends the push of p, as AppendPublicationPush does
	// (AppendDeltaPush when p.Delta), with p.Tags: both of those are
	// AppendPush without tags.
	AppendPush(dst []byte, p PubPush) []byte
	// Ping is the server's ping message (the client answers with an empty
	// command). The slice is shared: callers must not modify it.
	Ping() []byte
}

// The two codecs.
var (
	JSON     Codec = jsonCodec{}
	Protobuf Codec = protobufCodec{}
)

// PubPush is one publication push, for AppendPush.
type PubPush struct {
	// Channel names the channel; ID, when not 0, stands for it (channel
	// compaction).
	Channel string
	ID      uint32
	// Data is the payload: the publication's data, or a Fossil patch
	// when Patch.
	Data   []byte
	Offset uint64 // 0: none
	// Tags are the publication's tags (Publication.tags); keys and values
	// must be valid UTF-8.
	Tags map[string]string
	// Delta: the subscription negotiated fossil deltas (JSON then carries
	// Data as a JSON string, which must be valid UTF-8).
	Delta, Patch bool
}
