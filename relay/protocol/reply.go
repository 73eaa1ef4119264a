package protocol

import (
	"encoding/json"
	"strconv"
)

// Reply answers one command. Exactly one of Error or a result is set.
type Reply struct {
	ID          uint32           `json:"id,omitempty"`
	Error       *Error           `json:"error,omitempty"`
	Connect     *ConnectResult   `json:"connect,omitempty"`
	Subscribe   *SubscribeResult `json:"subscribe,omitempty"`
	Unsubscribe *struct{}        `json:"unsubscribe,omitempty"`
	RPC         *RPCResult       `json:"rpc,omitempty"`
	History     *HistoryResult   `json:"history,omitempty"`
	Ping        *struct{}        `json:"ping,omitempty"`
}

// ConnectResult is the reply to "connect".
type ConnectResult struct {
	Client  string          `json:"client"`
	Version string          `json:"version,omitempty"`
	Expires bool            `json:"expires,omitempty"`
	TTL     uint32          `json:"ttl,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	// Ping is the server ping interval in seconds; Pong asks the client to
	// answer each ping.
	Ping uint32 `json:"ping,omitempty"`
	Pong bool   `json:"pong,omitempty"`
	Node string `json:"node,omitempty"`
}

// SubscribeResult is the reply to "subscribe".
type SubscribeResult struct {
	Recoverable   bool          `json:"recoverable,omitempty"`
	Epoch         string        `json:"epoch,omitempty"`
	Offset        uint64        `json:"offset,omitempty"`
	Positioned    bool          `json:"positioned,omitempty"`
	Recovered     bool          `json:"recovered,omitempty"`
	WasRecovering bool          `json:"was_recovering,omitempty"`
	Publications  []Publication `json:"publications,omitempty"`
	// Delta says fossil deltas were negotiated: every publication's data
	// is then a JSON string (the payload text, or a patch if delta).
	Delta bool `json:"delta,omitempty"`
	// ID is the channel's number for channel compaction (subscribe flag
	// 1): pushes then carry "id" instead of "channel".
	ID uint32 `json:"id,omitempty"`
}

// HistoryResult is the reply to "history": the publications asked for and
// the stream's current position.
type HistoryResult struct {
	Publications []Publication `json:"publications,omitempty"`
	Epoch        string        `json:"epoch,omitempty"`
	Offset       uint64        `json:"offset,omitempty"`
}

// RPCResult is the reply to "rpc".
type RPCResult struct {
	Data json.RawMessage `json:"data,omitempty"`
}

// Publication is a channel update as the client sees it.
type Publication struct {
	Data   json.RawMessage   `json:"data"`
	Offset uint64            `json:"offset,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
}

// AppendReply appends r as JSON to dst.
func AppendReply(dst []byte, r *Reply) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// Every field is a plain value or already-valid JSON; a failure is
		// a bug in the caller (invalid RawMessage).
		panic("protocol: encoding reply: " + err.Error())
	}
	return append(dst, b...)
}

// AppendPublicationPush appends the push of one publication to dst:
//
//	{"push":{"channel":"<channel>","pub":{"data":<data>,"offset":<offset>}}}
//
// or, when id is not 0 (channel compaction, negotiated per subscription
// with flag 1 and the id of the subscribe reply), "id":<id> in place of
// the channel. channel must be a valid channel name (no characters that
// need escaping) and data valid JSON. offset 0 is left out, as the
// protocol does.
func AppendPublicationPush(dst []byte, channel string, id uint32, data []byte, offset uint64) []byte {
	dst = appendPushStart(dst, channel, id)
	dst = append(dst, data...)
	return appendPushEnd(dst, offset, false)
}

// AppendDeltaPush appends a publication push for a delta subscription:
// data is written as a JSON string holding payload (the full JSON text, or
// a Fossil patch when isPatch). payload must be valid UTF-8. channel and id
// as for AppendPublicationPush.
//
//	{"push":{"channel":"<channel>","pub":{"data":"<payload>","offset":<offset>,"delta":true}}}
func AppendDeltaPush(dst []byte, channel string, id uint32, payload []byte, offset uint64, isPatch bool) []byte {
	dst = appendPushStart(dst, channel, id)
	dst = AppendJSONString(dst, payload)
	return appendPushEnd(dst, offset, isPatch)
}

func appendPushStart(dst []byte, channel string, id uint32) []byte {
	if id != 0 {
		dst = append(dst, `{"push":{"id":`...)
		dst = strconv.AppendUint(dst, uint64(id), 10)
	} else {
		dst = append(dst, `{"push":{"channel":"`...)
		dst = append(dst, channel...)
		dst = append(dst, '"')
	}
	return append(dst, `,"pub":{"data":`...)
}

func appendPushEnd(dst []byte, offset uint64, isPatch bool) []byte {
	if offset != 0 {
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendUint(dst, offset, 10)
	}
	if isPatch {
		dst = append(dst, `,"delta":true`...)
	}
	return append(dst, "}}}"...)
}

// AppendJSONString appends s as a JSON string. s must be valid UTF-8.
func AppendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// Ping is the server's ping in protocol v2: an empty object.
var Ping = []byte("{}")
