package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// The JSON encoding: a client message is a text frame of one or more
// commands, each a JSON object, separated by '\n'; an empty object ("{}")
// is the client's pong. Replies to several commands may share one
// message, again separated by '\n'. Pushes are messages of their own.

type jsonCodec struct{}

func (jsonCodec) Encoding() Encoding { return EncodingJSON }
func (jsonCodec) Binary() bool       { return false }
func (jsonCodec) ChannelIDs() bool   { return true }

func (jsonCodec) Accepts(data []byte) bool { return json.Valid(data) }

// ErrMalformed wraps every error DecodeCommands returns.
var ErrMalformed = errors.New("protocol: malformed command")

// DecodeCommands decodes the '\n'-separated commands in msg. Empty lines
// are skipped; a line that is not a JSON object is malformed.
func (jsonCodec) DecodeCommands(msg []byte, fn func(*Command) error) error {
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if line[0] != '{' {
			return fmt.Errorf("%w: not a JSON object", ErrMalformed)
		}
		var c Command
		// The empty command is a pong, the most frequent client message at
		// rest (one per connection per websocket.ping_interval): no
		// decoder for it (BenchmarkDecodePong). An rpc as the SDKs send
		// it, one per bet in a storm, has its own (decodeRPCFast).
		switch {
		case len(line) == 2 && line[1] == '}':
		case bytes.Contains(line, []byte(`"rpc":`)) && json.Valid(line) && decodeRPCFast(line, &c):
		default:
			if err := json.Unmarshal(line, &c); err != nil {
				return fmt.Errorf("%w: %v", ErrMalformed, err)
			}
		}
		if err := fn(&c); err != nil {
			return err
		}
	}
	return nil
}

// AppendReply appends r as JSON, after a '\n' if msg holds replies. In
// the reply to a subscribe that negotiated deltas, publication data (and
// a map's state entries) travel as JSON strings, as the SDKs expect.
func (jsonCodec) AppendReply(msg []byte, r *Reply) []byte {
	if len(msg) > 0 {
		msg = append(msg, '\n')
	}
	if s := r.Subscribe; s != nil && s.Delta && len(s.Publications)+len(s.State) > 0 {
		c, sc := *r, *s
		sc.Publications, sc.State = jsonStrings(s.Publications), jsonStrings(s.State)
		c.Subscribe = &sc
		r = &c
	}
	if out, ok := appendRPCReplyFast(msg, r); ok {
		return out
	}
	b, err := json.Marshal(r)
	if err != nil {
		// Every field is a plain value or already-valid JSON; a failure is
		// a bug in the caller (invalid RawMessage).
		panic("protocol: encoding reply: " + err.Error())
	}
	return append(msg, b...)
}

// jsonStrings returns a copy of pubs with each data as a JSON string
// (a removal's, which has none, left out).
func jsonStrings(pubs []Publication) []Publication {
	if len(pubs) == 0 {
		return nil
	}
	out := make([]Publication, len(pubs))
	for i, p := range pubs {
		if !p.Removed {
			p.Data = AppendJSONString(nil, p.Data)
		}
		out[i] = p
	}
	return out
}

// AppendPublicationPush appends
//
//	{"push":{"channel":"<channel>","pub":{"data":<data>,"offset":<offset>}}}
//
// or, with a compact id, "id":<id> in place of the channel. channel must
// be a valid channel name (no characters that need escaping) and data
// valid JSON without a '\n'.
func (jsonCodec) AppendPublicationPush(dst []byte, channel string, id uint32, data []byte, offset uint64) []byte {
	return appendJSONPush(dst, PubPush{Channel: channel, ID: id, Data: data, Offset: offset})
}

// AppendDeltaPush appends
//
//	{"push":{"channel":"<channel>","pub":{"data":"<payload>","offset":<offset>,"delta":true}}}
//
// ("delta" only for a patch). payload must be valid UTF-8.
func (jsonCodec) AppendDeltaPush(dst []byte, channel string, id uint32, payload []byte, offset uint64, isPatch bool) []byte {
	return appendJSONPush(dst, PubPush{Channel: channel, ID: id, Data: payload, Offset: offset, Delta: true, Patch: isPatch})
}

// AppendPush appends p as AppendPublicationPush or AppendDeltaPush do,
// with "tags":{...} after the offset when p has tags.
func (jsonCodec) AppendPush(dst []byte, p PubPush) []byte { return appendJSONPush(dst, p) }

func appendJSONPush(dst []byte, p PubPush) []byte {
	if p.ID != 0 {
		dst = append(dst, `{"push":{"id":`...)
		dst = strconv.AppendUint(dst, uint64(p.ID), 10)
	} else {
		dst = append(dst, `{"push":{"channel":"`...)
		dst = append(dst, p.Channel...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"pub":{"data":`...)
	if p.Delta {
		dst = AppendJSONString(dst, p.Data)
	} else {
		dst = append(dst, p.Data...)
	}
	if p.Offset != 0 {
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendUint(dst, p.Offset, 10)
	}
	if len(p.Tags) > 0 {
		dst = append(dst, `,"tags":{`...)
		first := true
		for k, v := range p.Tags {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, v)
		}
		dst = append(dst, '}')
	}
	if p.Patch {
		dst = append(dst, `,"delta":true`...)
	}
	return append(dst, "}}}"...)
}

// AppendJSONString appends s as a JSON string. s must be valid UTF-8.
func AppendJSONString(dst, s []byte) []byte { return appendJSONString(dst, s) }

func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
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

// The server's ping in the JSON encoding: an empty object.
var jsonPing = []byte("{}")

func (jsonCodec) Ping() []byte { return jsonPing }

// UnmarshalJSON decodes a subscribe request with its tag filter bounded
// (MaxFilterDecodeNodes, MaxFilterDecodeStrings): the tree is counted in
// its JSON text first, and one past the bounds is not built but given as
// a root marked TooLarge.
func (r *SubscribeRequest) UnmarshalJSON(b []byte) error {
	type plain SubscribeRequest // no methods: no recursion
	aux := struct {
		*plain
		TF json.RawMessage `json:"tf,omitempty"` // shadows plain's
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	r.TF = nil
	if len(aux.TF) == 0 || string(aux.TF) == "null" {
		return nil
	}
	if values, strings := jsonShape(aux.TF); values > MaxFilterDecodeNodes || strings > MaxFilterDecodeStrings {
		r.TF = &FilterNode{TooLarge: true}
		return nil
	}
	return json.Unmarshal(aux.TF, &r.TF)
}

// jsonShape counts the values of b other than strings (objects, arrays,
// numbers, true, false, null: any of them in a node list becomes a
// FilterNode) and its strings (keys included); b is valid JSON.
func jsonShape(b []byte) (values, strings int) {
	in, scalar := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case in && c == '\\':
			i++
		case in:
			in = c != '"'
		case c == '"':
			in, scalar = true, false
			strings++
		case c == '{' || c == '[':
			values++
			scalar = false
		case c == ',' || c == ':' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r':
			scalar = false
		case !scalar: // the first byte of a number, true, false or null
			values++
			scalar = true
		}
	}
	return values, strings
}
