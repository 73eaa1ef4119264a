package protocol

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The Protobuf encoding (client.proto of the Centrifugo protocol, module
// github.com/centrifugal/protocol): a client message is a binary frame of
// one or more Commands, each preceded by its length as a varint; a
// server message holds one or more Replies the same way. A push is a Reply
// with only its push field set; the server's ping is an empty Reply (the
// single byte 0x00) and the client's pong an empty Command.
//
// Hand-written on protowire rather than generated: the relay decodes the
// handful of commands it serves and encodes a handful of replies, so the
// code is small; the hot path, a publication push, is written in one pass
// with sizes computed up front and no allocation beyond dst, where
// generated code builds and sizes a Reply, a Push and a Publication per
// update (BenchmarkPushProtobuf in tests/go compares the two; the interop
// tests there check every message against the generated code).
//
// Decoding follows proto3: unknown fields are skipped; a known field with
// the wrong wire type, a truncated varint, a length past the end of its
// message and a string that is not UTF-8 make the whole message
// malformed, as does a field number past 2^29-1. Repeated occurrences of
// a scalar field: the last wins; of a message field: they merge.

type protobufCodec struct{}

func (protobufCodec) Encoding() Encoding { return EncodingProtobuf }
func (protobufCodec) Binary() bool       { return true }

// ChannelIDs is false: the Protobuf build of the JS SDK (npm centrifuge
// 5.8.0) decodes the int64 ids as Long objects and matches a push to its
// subscription with ===, which never holds, so it would drop every push
// that carries an id (TestCentrifugeSDK/protobuf). Pushes name the
// channel; the subscribe flag is ignored.
func (protobufCodec) ChannelIDs() bool { return false }

func (protobufCodec) Accepts([]byte) bool { return true }

// The server's ping in Protobuf: an empty Reply, delimited.
var protobufPing = []byte{0}

func (protobufCodec) Ping() []byte { return protobufPing }

// Field numbers of client.proto used here.
const (
	// Command
	cmdID            = 1
	cmdConnect       = 4
	cmdSubscribe     = 5
	cmdUnsubscribe   = 6
	cmdPublish       = 7
	cmdPresence      = 8
	cmdPresenceStats = 9
	cmdHistory       = 10
	cmdPing          = 11
	cmdSend          = 12
	cmdRPC           = 13
	cmdRefresh       = 14
	cmdSubRefresh    = 15

	// Reply
	replyID            = 1
	replyError         = 2
	replyPush          = 4
	replyConnect       = 5
	replySubscribe     = 6
	replyUnsubscribe   = 7
	replyPresence      = 9
	replyPresenceStats = 10
	replyHistory       = 11
	replyPing          = 12
	replyRPC           = 13
	replyRefresh       = 14
	replySubRefresh    = 15

	// Push
	pushID          = 1
	pushChannel     = 2
	pushPub         = 4
	pushUnsubscribe = 7
	pushSubscribe   = 9

	// Publication
	pubData    = 4
	pubOffset  = 6
	pubTags    = 7
	pubDelta   = 8
	pubKey     = 11
	pubRemoved = 12
)

// Tags of the push hot path, precomputed (all fields below 16: one byte).
var (
	tagReplyPush = byte(protowire.EncodeTag(replyPush, protowire.BytesType))
	tagPushID    = byte(protowire.EncodeTag(pushID, protowire.VarintType))
	tagPushChan  = byte(protowire.EncodeTag(pushChannel, protowire.BytesType))
	tagPushPub   = byte(protowire.EncodeTag(pushPub, protowire.BytesType))
	tagPubData   = byte(protowire.EncodeTag(pubData, protowire.BytesType))
	tagPubOffset = byte(protowire.EncodeTag(pubOffset, protowire.VarintType))
	tagPubDelta  = byte(protowire.EncodeTag(pubDelta, protowire.VarintType))
	tagPubTags   = byte(protowire.EncodeTag(pubTags, protowire.BytesType))
	tagMapKey    = byte(protowire.EncodeTag(1, protowire.BytesType))
	tagMapValue  = byte(protowire.EncodeTag(2, protowire.BytesType))
)

// tagSize is the size of each tag above.
const tagSize = 1

// AppendPublicationPush appends the delimited Reply{push: Push{channel or
// id, pub: Publication{data, offset}}}.
func (protobufCodec) AppendPublicationPush(dst []byte, channel string, id uint32, data []byte, offset uint64) []byte {
	return appendProtobufPush(dst, PubPush{Channel: channel, ID: id, Data: data, Offset: offset})
}

// AppendDeltaPush is AppendPublicationPush with delta set for a patch: in
// Protobuf the payload is raw bytes either way.
func (protobufCodec) AppendDeltaPush(dst []byte, channel string, id uint32, payload []byte, offset uint64, isPatch bool) []byte {
	return appendProtobufPush(dst, PubPush{Channel: channel, ID: id, Data: payload, Offset: offset, Patch: isPatch})
}

// AppendPush is AppendPublicationPush with the publication's tags (field
// 7, map<string, string>).
func (protobufCodec) AppendPush(dst []byte, p PubPush) []byte { return appendProtobufPush(dst, p) }

// tagEntrySize is the size of one map<string, string> entry's content.
func tagEntrySize(k, v string) int {
	return tagSize + protowire.SizeBytes(len(k)) + tagSize + protowire.SizeBytes(len(v))
}

func appendProtobufPush(dst []byte, p PubPush) []byte {
	data, offset, id, channel := p.Data, p.Offset, p.ID, p.Channel
	pubLen := 0
	if len(data) > 0 {
		pubLen += tagSize + protowire.SizeBytes(len(data))
	}
	if offset != 0 {
		pubLen += tagSize + protowire.SizeVarint(offset)
	}
	for k, v := range p.Tags {
		pubLen += tagSize + protowire.SizeBytes(tagEntrySize(k, v))
	}
	if p.Patch {
		pubLen += tagSize + 1
	}
	pushLen := tagSize + protowire.SizeBytes(pubLen)
	if id != 0 {
		pushLen += tagSize + protowire.SizeVarint(uint64(id))
	} else if channel != "" {
		pushLen += tagSize + protowire.SizeBytes(len(channel))
	}
	replyLen := tagSize + protowire.SizeBytes(pushLen)

	dst = protowire.AppendVarint(dst, uint64(replyLen))
	dst = append(dst, tagReplyPush)
	dst = protowire.AppendVarint(dst, uint64(pushLen))
	if id != 0 {
		dst = append(dst, tagPushID)
		dst = protowire.AppendVarint(dst, uint64(id))
	} else if channel != "" {
		dst = append(dst, tagPushChan)
		dst = protowire.AppendVarint(dst, uint64(len(channel)))
		dst = append(dst, channel...)
	}
	dst = append(dst, tagPushPub)
	dst = protowire.AppendVarint(dst, uint64(pubLen))
	if len(data) > 0 {
		dst = append(dst, tagPubData)
		dst = protowire.AppendVarint(dst, uint64(len(data)))
		dst = append(dst, data...)
	}
	if offset != 0 {
		dst = append(dst, tagPubOffset)
		dst = protowire.AppendVarint(dst, offset)
	}
	for k, v := range p.Tags {
		dst = append(dst, tagPubTags)
		dst = protowire.AppendVarint(dst, uint64(tagEntrySize(k, v)))
		dst = append(dst, tagMapKey)
		dst = protowire.AppendString(dst, k)
		dst = append(dst, tagMapValue)
		dst = protowire.AppendString(dst, v)
	}
	if p.Patch {
		dst = append(dst, tagPubDelta, 1)
	}
	return dst
}

// AppendReply appends r, delimited. Replies are rare next to pushes: each
// is built in a scratch buffer, then its length and bytes appended.
func (protobufCodec) AppendReply(msg []byte, r *Reply) []byte {
	b := encodeReply(nil, r)
	msg = protowire.AppendVarint(msg, uint64(len(b)))
	return append(msg, b...)
}

func encodeReply(b []byte, r *Reply) []byte {
	b = pbUint(b, replyID, uint64(r.ID))
	if e := r.Error; e != nil {
		var m []byte
		m = pbUint(m, 1, uint64(e.Code))
		m = pbString(m, 2, e.Message)
		m = pbBool(m, 3, e.Temporary)
		b = pbMessage(b, replyError, m)
	}
	if c := r.Connect; c != nil {
		var m []byte
		m = pbString(m, 1, c.Client)
		m = pbString(m, 2, c.Version)
		m = pbBool(m, 3, c.Expires)
		m = pbUint(m, 4, uint64(c.TTL))
		m = pbBytes(m, 5, c.Data)
		m = pbUint(m, 7, uint64(c.Ping))
		m = pbBool(m, 8, c.Pong)
		m = pbString(m, 10, c.Node)
		b = pbMessage(b, replyConnect, m)
	}
	if s := r.Subscribe; s != nil {
		var m []byte
		m = pbBool(m, 1, s.Expires)
		m = pbUint(m, 2, uint64(s.TTL))
		m = pbBool(m, 3, s.Recoverable)
		m = pbString(m, 6, s.Epoch)
		m = appendPublications(m, 7, s.Publications)
		m = pbBool(m, 8, s.Recovered)
		m = pbUint(m, 9, s.Offset)
		m = pbBool(m, 10, s.Positioned)
		m = pbBool(m, 12, s.WasRecovering)
		m = pbBool(m, 13, s.Delta)
		m = pbUint(m, 14, uint64(s.ID))
		m = pbUint(m, 15, uint64(s.Type))
		m = pbUint(m, 16, uint64(s.Phase))
		m = pbString(m, 17, s.Cursor)
		m = appendPublications(m, 18, s.State)
		b = pbMessage(b, replySubscribe, m)
	}
	if r.Unsubscribe != nil {
		b = pbMessage(b, replyUnsubscribe, nil)
	}
	if h := r.History; h != nil {
		var m []byte
		m = appendPublications(m, 1, h.Publications)
		m = pbString(m, 2, h.Epoch)
		m = pbUint(m, 3, h.Offset)
		b = pbMessage(b, replyHistory, m)
	}
	if p := r.Presence; p != nil {
		var m []byte
		for _, id := range slices.Sorted(maps.Keys(p.Presence)) { // deterministic bytes
			ci := p.Presence[id]
			var e, v []byte
			v = pbString(v, 1, ci.User)
			v = pbString(v, 2, ci.Client)
			e = pbString(e, 1, id)
			e = pbMessage(e, 2, v)
			m = pbMessage(m, 1, e)
		}
		b = pbMessage(b, replyPresence, m)
	}
	if p := r.PresenceStats; p != nil {
		var m []byte
		m = pbUint(m, 1, uint64(p.NumClients))
		m = pbUint(m, 2, uint64(p.NumUsers))
		b = pbMessage(b, replyPresenceStats, m)
	}
	if r.Ping != nil {
		b = pbMessage(b, replyPing, nil)
	}
	if rpc := r.RPC; rpc != nil {
		b = pbMessage(b, replyRPC, pbBytes(nil, 1, rpc.Data))
	}
	if p := r.Push; p != nil {
		var m []byte
		m = pbString(m, pushChannel, p.Channel)
		if p.Pub != nil {
			m = appendPublications(m, pushPub, []Publication{*p.Pub})
		}
		if sp := p.Subscribe; sp != nil {
			var sm []byte
			sm = pbBool(sm, 1, sp.Recoverable)
			sm = pbString(sm, 4, sp.Epoch)
			sm = pbUint(sm, 5, sp.Offset)
			sm = pbBool(sm, 6, sp.Positioned)
			m = pbMessage(m, pushSubscribe, sm)
		}
		if u := p.Unsubscribe; u != nil {
			m = pbMessage(m, pushUnsubscribe, pbString(pbUint(nil, 2, uint64(u.Code)), 3, u.Reason))
		}
		b = pbMessage(b, replyPush, m)
	}
	if f := r.SubRefresh; f != nil {
		b = pbMessage(b, replySubRefresh, pbUint(pbBool(nil, 1, f.Expires), 2, uint64(f.TTL)))
	}
	if f := r.Refresh; f != nil {
		var m []byte
		m = pbString(m, 1, f.Client)
		m = pbString(m, 2, f.Version)
		m = pbBool(m, 3, f.Expires)
		m = pbUint(m, 4, uint64(f.TTL))
		b = pbMessage(b, replyRefresh, m)
	}
	return b
}

func appendPublications(b []byte, num protowire.Number, pubs []Publication) []byte {
	for _, p := range pubs {
		var m []byte
		m = pbBytes(m, pubData, p.Data)
		m = pbUint(m, pubOffset, p.Offset)
		for k, v := range p.Tags {
			m = pbMessage(m, pubTags, pbString(pbString(nil, 1, k), 2, v))
		}
		m = pbBool(m, pubDelta, p.Delta)
		m = pbString(m, pubKey, p.Key)
		m = pbBool(m, pubRemoved, p.Removed)
		b = pbMessage(b, num, m)
	}
	return b
}

// pb* append one field, left out at its zero value as proto3 does
// (pbMessage always writes: an empty message marks a reply's kind).
func pbUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func pbBool(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	return pbUint(b, num, 1)
}

func pbString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func pbBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func pbMessage(b []byte, num protowire.Number, m []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), m)
}

// DecodeCommands decodes the delimited Commands of msg.
func (protobufCodec) DecodeCommands(msg []byte, fn func(*Command) error) error {
	for len(msg) > 0 {
		n, l := protowire.ConsumeVarint(msg)
		if l < 0 {
			return fmt.Errorf("%w: truncated command length", ErrMalformed)
		}
		msg = msg[l:]
		if n > uint64(len(msg)) {
			return fmt.Errorf("%w: command length %d past the end of the message (%d bytes left)", ErrMalformed, n, len(msg))
		}
		var c Command
		if err := decodeCommand(msg[:n], &c); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		msg = msg[n:]
		if err := fn(&c); err != nil {
			return err
		}
	}
	return nil
}

// field is one decoded field of a Protobuf message.
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64 // VarintType
	b   []byte // BytesType; points into the message
}

var errWireType = errors.New("wrong wire type")

// walk calls fn for each field of message b, in order. The field is
// walk's, valid during the call only: one per message, not one per field
// (a 128 KiB message of empty fields would otherwise allocate 3 MB).
func walk(b []byte, fn func(f *field) error) error {
	var f field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if !num.IsValid() { // ConsumeTag rejects only numbers below 1
			return fmt.Errorf("field number %d out of range", num)
		}
		b = b[n:]
		f = field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(&f); err != nil {
			return err
		}
	}
	return nil
}

func (f *field) want(t protowire.Type) error {
	if f.typ != t {
		return fmt.Errorf("field %d: %w", f.num, errWireType)
	}
	return nil
}

func (f *field) uint64(v *uint64) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*v = f.u
	return nil
}

// uint32 truncates, as proto3 does.
func (f *field) uint32(v *uint32) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*v = uint32(f.u)
	return nil
}

func (f *field) int32(v *int32) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*v = int32(f.u)
	return nil
}

func (f *field) int64(v *int64) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*v = int64(f.u)
	return nil
}

func (f *field) bool(v *bool) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*v = f.u != 0
	return nil
}

func (f *field) string(v *string) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	if !utf8.Valid(f.b) {
		return fmt.Errorf("field %d: string is not valid UTF-8", f.num)
	}
	*v = string(f.b)
	return nil
}

// bytes keeps a reference into the message.
func (f *field) bytes(v *[]byte) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	*v = f.b
	return nil
}

// message decodes an embedded message into *v, allocating it on the first
// occurrence (later ones merge).
func message[T any](f *field, v **T, decode func([]byte, *T) error) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	if *v == nil {
		*v = new(T)
	}
	if err := decode(f.b, *v); err != nil {
		return fmt.Errorf("field %d: %w", f.num, err)
	}
	return nil
}

// skipMessage checks an embedded message is well-formed and ignores its
// fields: the methods edgerelay answers without reading their request.
func skipMessage(b []byte, _ *struct{}) error {
	return walk(b, func(*field) error { return nil })
}

func decodeCommand(b []byte, c *Command) error {
	return walk(b, func(f *field) error {
		switch f.num {
		case cmdID:
			return f.uint32(&c.ID)
		case cmdConnect:
			return message(f, &c.Connect, decodeConnect)
		case cmdSubscribe:
			return message(f, &c.Subscribe, decodeSubscribe)
		case cmdUnsubscribe:
			return message(f, &c.Unsubscribe, decodeChannelRequest)
		case cmdPublish:
			return message(f, &c.Publish, skipMessage)
		case cmdPresence:
			return message(f, &c.Presence, decodeChannelRequest)
		case cmdPresenceStats:
			return message(f, &c.PresenceStats, decodeChannelRequest)
		case cmdHistory:
			return message(f, &c.History, decodeHistory)
		case cmdPing:
			return message(f, &c.Ping, skipMessage)
		case cmdSend:
			return message(f, &c.Send, skipMessage)
		case cmdRPC:
			return message(f, &c.RPC, decodeRPC)
		case cmdRefresh:
			return message(f, &c.Refresh, decodeRefresh)
		case cmdSubRefresh:
			return message(f, &c.SubRefresh, decodeSubRefresh)
		}
		return nil
	})
}

// decodeConnect reads token, data, name and version; subs, headers and
// the rest are skipped (edgerelay does not act on them).
func decodeConnect(b []byte, r *ConnectRequest) error {
	return walk(b, func(f *field) error {
		switch f.num {
		case 1:
			return f.string(&r.Token)
		case 2:
			return f.bytes((*[]byte)(&r.Data))
		case 4:
			return f.string(&r.Name)
		case 5:
			return f.string(&r.Version)
		}
		return nil
	})
}

func decodeSubscribe(b []byte, r *SubscribeRequest) error {
	return walk(b, func(f *field) error {
		switch f.num {
		case 1:
			return f.string(&r.Channel)
		case 2:
			return f.string(&r.Token)
		case 3:
			return f.bool(&r.Recover)
		case 6:
			return f.string(&r.Epoch)
		case 7:
			return f.uint64(&r.Offset)
		case 8:
			return f.bytes((*[]byte)(&r.Data))
		case 9:
			return f.bool(&r.Positioned)
		case 10:
			return f.bool(&r.Recoverable)
		case 11:
			return f.bool(&r.JoinLeave)
		case 12:
			return f.string(&r.Delta)
		case 14:
			return f.int64(&r.Flag)
		case 15:
			return f.int32(&r.Type)
		case 16:
			return f.int32(&r.Phase)
		case 17:
			return f.string(&r.Cursor)
		case 18:
			return f.int32(&r.Limit)
		case 13:
			if r.TF != nil {
				// A second tf (or a second subscribe field) would merge
				// into the first with a budget of its own: no client
				// sends one, so the filter is refused instead.
				r.TF.TooLarge = true
				return nil
			}
			return message(f, &r.TF, func(b []byte, n *FilterNode) error { return decodeFilterNode(b, n, 1, new(filterBudget)) })
		}
		return nil
	})
}

// filterBudget counts what the decoder built of one filter tree.
type filterBudget struct{ nodes, strings int }

// decodeFilterNode decodes a FilterNode at depth (the root is 1); past
// MaxFilterDecodeDepth it leaves the children undecoded, marking the node
// TooDeep; past the tree's budget (MaxFilterDecodeNodes,
// MaxFilterDecodeStrings) it decodes nothing more, marking the node
// TooLarge.
func decodeFilterNode(b []byte, n *FilterNode, depth int, budget *filterBudget) error {
	budget.nodes++ // case 6 checks the budget before a child is added
	return walk(b, func(f *field) error {
		if n.TooLarge {
			return nil
		}
		if f.num >= 1 && f.num <= 5 {
			if budget.strings++; budget.strings > MaxFilterDecodeStrings {
				n.TooLarge = true
				return nil
			}
		}
		switch f.num {
		case 1:
			return f.string(&n.Op)
		case 2:
			return f.string(&n.Key)
		case 3:
			return f.string(&n.Cmp)
		case 4:
			return f.string(&n.Val)
		case 5:
			var v string
			if err := f.string(&v); err != nil {
				return err
			}
			n.Vals = append(n.Vals, v)
		case 6:
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			if depth >= MaxFilterDecodeDepth {
				n.TooDeep = true
				return nil
			}
			if budget.nodes >= MaxFilterDecodeNodes {
				n.TooLarge = true
				return nil
			}
			n.Nodes = append(n.Nodes, FilterNode{})
			if err := decodeFilterNode(f.b, &n.Nodes[len(n.Nodes)-1], depth+1, budget); err != nil {
				return fmt.Errorf("field 6: %w", err)
			}
		}
		return nil
	})
}

func decodeChannelRequest(b []byte, r *ChannelRequest) error {
	return walk(b, func(f *field) error {
		if f.num == 1 {
			return f.string(&r.Channel)
		}
		return nil
	})
}

func decodeHistory(b []byte, r *HistoryRequest) error {
	return walk(b, func(f *field) error {
		switch f.num {
		case 1:
			return f.string(&r.Channel)
		case 7:
			return f.int32(&r.Limit)
		case 8:
			return message(f, &r.Since, decodeStreamPosition)
		case 9:
			return f.bool(&r.Reverse)
		}
		return nil
	})
}

func decodeStreamPosition(b []byte, p *StreamPosition) error {
	return walk(b, func(f *field) error {
		switch f.num {
		case 1:
			return f.uint64(&p.Offset)
		case 2:
			return f.string(&p.Epoch)
		}
		return nil
	})
}

func decodeRefresh(b []byte, r *RefreshRequest) error {
	return walk(b, func(f *field) error {
		if f.num == 1 {
			return f.string(&r.Token)
		}
		return nil
	})
}

func decodeSubRefresh(b []byte, r *SubRefreshRequest) error {
	return walk(b, func(f *field) error {
		switch f.num {
		case 1:
			return f.string(&r.Channel)
		case 2:
			return f.string(&r.Token)
		}
		return nil
	})
}

func decodeRPC(b []byte, r *RPCRequest) error {
	return walk(b, func(f *field) error {
		switch f.num {
		case 1:
			return f.bytes((*[]byte)(&r.Data))
		case 2:
			return f.string(&r.Method)
		}
		return nil
	})
}
