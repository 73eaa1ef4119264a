package bench

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The client side of the Protobuf encoding of the Centrifugo protocol
// (client.proto of github.com/centrifugal/protocol), as far as edgebench
// speaks it: it sends connect, subscribe and the pong, and reads replies
// to those and publication pushes. The client offers the WebSocket
// subprotocol centrifuge-protobuf; every message is a binary frame of one
// or more messages, each preceded by its length as a varint: Commands from
// the client, Replies from the server. The server's ping is an empty Reply
// (the byte 0x00), the client's pong an empty Command (0x00).
//
// Written here on protowire, not shared with the relay: edgebench checks
// the relay from outside and must not import it. Decoding is proto3's,
// and strict where a relay bug could hide: unknown fields are skipped; a
// truncated varint, a length past the end of its message, a known field
// with the wrong wire type and a string that is not UTF-8 make the
// message malformed. Repeated occurrences of a scalar field: the last
// wins; of a message field: they merge (repeated publications: the last
// counts). Decoded byte fields point into the message: nothing is copied
// or allocated on the push path.

// pbSubprotocol is the WebSocket subprotocol that selects Protobuf.
const pbSubprotocol = "centrifuge-protobuf"

// pbPong is the client's pong: one empty Command, delimited.
var pbPong = []byte{0}

// Field numbers of client.proto used here.
const (
	// Command
	pbCmdID        = 1
	pbCmdConnect   = 4
	pbCmdSubscribe = 5
	// ConnectRequest
	pbConnectName = 4
	// SubscribeRequest
	pbSubChannel = 1
	pbSubRecover = 3
	pbSubEpoch   = 6
	pbSubOffset  = 7
	pbSubDelta   = 12
	pbSubFlag    = 14
	pbSubType    = 15 // map subscriptions: type, phase, cursor, limit
	pbSubPhase   = 16
	pbSubCursor  = 17
	pbSubLimit   = 18

	// Reply
	pbReplyID        = 1
	pbReplyError     = 2
	pbReplyPush      = 4
	pbReplyConnect   = 5
	pbReplySubscribe = 6
	// Error
	pbErrorCode    = 1
	pbErrorMessage = 2
	// Push
	pbPushID      = 1
	pbPushChannel = 2
	pbPushPub     = 4
	// Publication
	pbPubData   = 4
	pbPubOffset = 6
	pbPubDelta  = 8
	pbPubKey    = 11
	// SubscribeResult
	pbSubResEpoch        = 6
	pbSubResPublications = 7
	pbSubResOffset       = 9
	pbSubResDelta        = 13
	pbSubResID           = 14
	pbSubResPhase        = 16
	pbSubResCursor       = 17
	pbSubResState        = 18
)

// pbAppendConnect appends the delimited Command{id, connect{name}}.
func pbAppendConnect(dst []byte, id uint32, name string) []byte {
	req := protowire.AppendString(protowire.AppendTag(nil, pbConnectName, protowire.BytesType), name)
	return pbAppendCommand(dst, id, pbCmdConnect, req)
}

// pbAppendSubscribe appends the delimited Command{id, subscribe{channel,
// delta: "fossil" if delta, flag: 1 (channel compaction) if compact}}.
func pbAppendSubscribe(dst []byte, id uint32, channel string, delta, compact bool) []byte {
	req := protowire.AppendString(protowire.AppendTag(nil, pbSubChannel, protowire.BytesType), channel)
	if delta {
		req = protowire.AppendString(protowire.AppendTag(req, pbSubDelta, protowire.BytesType), "fossil")
	}
	if compact {
		req = protowire.AppendVarint(protowire.AppendTag(req, pbSubFlag, protowire.VarintType), 1)
	}
	return pbAppendCommand(dst, id, pbCmdSubscribe, req)
}

// pbAppendMapSubscribe appends the delimited Command{id, subscribe{channel,
// type: 1 (map), phase, cursor, limit, epoch, offset, flag: 1}}, as the
// SDK's map subscription sends it (zero fields left out).
func pbAppendMapSubscribe(dst []byte, id uint32, channel string, phase int32, cursor string, limit int32, epoch string, offset uint64) []byte {
	req := protowire.AppendString(protowire.AppendTag(nil, pbSubChannel, protowire.BytesType), channel)
	if epoch != "" {
		req = protowire.AppendString(protowire.AppendTag(req, pbSubEpoch, protowire.BytesType), epoch)
	}
	for _, f := range []struct {
		num protowire.Number
		v   uint64
	}{{pbSubOffset, offset}, {pbSubFlag, 1}, {pbSubType, 1}, {pbSubPhase, uint64(phase)}, {pbSubLimit, uint64(limit)}} {
		if f.v != 0 {
			req = protowire.AppendVarint(protowire.AppendTag(req, f.num, protowire.VarintType), f.v)
		}
	}
	if cursor != "" {
		req = protowire.AppendString(protowire.AppendTag(req, pbSubCursor, protowire.BytesType), cursor)
	}
	return pbAppendCommand(dst, id, pbCmdSubscribe, req)
}

func pbAppendCommand(dst []byte, id uint32, method protowire.Number, req []byte) []byte {
	cmd := protowire.AppendVarint(protowire.AppendTag(nil, pbCmdID, protowire.VarintType), uint64(id))
	cmd = protowire.AppendBytes(protowire.AppendTag(cmd, method, protowire.BytesType), req)
	return protowire.AppendBytes(dst, cmd)
}

// pbReply is the part of one Reply that edgebench reads.
type pbReply struct {
	// Empty: the Reply has no field at all, the server's ping.
	Empty bool
	ID    uint32
	// HasError: an error reply (code and message).
	HasError   bool
	ErrCode    uint32
	ErrMessage []byte
	Connect    bool // a connect reply
	HasSub     bool // a subscribe reply
	Sub        pbSubscribeResult
	HasPush    bool
	Push       pbPush
}

type pbSubscribeResult struct {
	Epoch  []byte
	Offset uint64
	Delta  bool  // the subscription negotiated fossil deltas
	ID     int64 // channel compaction: the id pushes carry instead of the name
	Pubs   int   // publications in the reply
	Last   pbPub // the last of them (the newest)
	// Map subscriptions: the reply's phase, the next state page's cursor,
	// and the keys of the page's state entries.
	Phase     int32
	Cursor    []byte
	StateKeys [][]byte
}

type pbPush struct {
	ID      int64
	Channel []byte
	HasPub  bool
	Pub     pbPub
}

type pbPub struct {
	Data   []byte
	Offset uint64
	Delta  bool   // Data is a Fossil patch against the previous publication's data
	Key    []byte // a map entry's key
}

// errPBWireType: a known field arrived with another wire type than
// client.proto gives it.
var errPBWireType = errors.New("wrong wire type")

// decode reads the first delimited Reply of msg into r (reset first) and
// returns the rest of msg.
func (r *pbReply) decode(msg []byte) ([]byte, error) {
	*r = pbReply{}
	b, n := protowire.ConsumeBytes(msg)
	if n < 0 {
		if _, l := protowire.ConsumeVarint(msg); l < 0 {
			return nil, fmt.Errorf("reply length: %w", protowire.ParseError(l))
		}
		return nil, fmt.Errorf("reply length past the end of the message (%d bytes)", len(msg))
	}
	r.Empty = len(b) == 0
	var f pbField
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return nil, err
		}
		switch f.num {
		case pbReplyID:
			var v uint64
			v, err = f.varint()
			r.ID = uint32(v) // uint32: truncated, as proto3 does
		case pbReplyError:
			r.HasError = true
			err = f.message(r.decodeError)
		case pbReplyPush:
			r.HasPush = true
			err = f.message(r.Push.decode)
		case pbReplyConnect:
			r.Connect = true
			err = f.message(pbSkip)
		case pbReplySubscribe:
			r.HasSub = true
			err = f.message(r.Sub.decode)
		}
		if err != nil {
			return nil, err
		}
	}
	return msg[n:], nil
}

func (r *pbReply) decodeError(b []byte) error {
	var f pbField
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		switch f.num {
		case pbErrorCode:
			var v uint64
			v, err = f.varint()
			r.ErrCode = uint32(v)
		case pbErrorMessage:
			err = f.string(&r.ErrMessage)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *pbPush) decode(b []byte) error {
	var f pbField
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		switch f.num {
		case pbPushID:
			var v uint64
			v, err = f.varint()
			p.ID = int64(v)
		case pbPushChannel:
			err = f.string(&p.Channel)
		case pbPushPub:
			p.HasPub = true
			err = f.message(p.Pub.decode)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *pbPub) decode(b []byte) error {
	var f pbField
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		switch f.num {
		case pbPubData:
			err = f.bytes(&p.Data)
		case pbPubOffset:
			p.Offset, err = f.varint()
		case pbPubDelta:
			var v uint64
			v, err = f.varint()
			p.Delta = v != 0
		case pbPubKey:
			err = f.string(&p.Key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *pbSubscribeResult) decode(b []byte) error {
	var f pbField
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
		var v uint64
		switch f.num {
		case pbSubResEpoch:
			err = f.string(&s.Epoch)
		case pbSubResPublications:
			s.Pubs++
			s.Last = pbPub{} // a repeated field: each entry on its own
			err = f.message(s.Last.decode)
		case pbSubResOffset:
			s.Offset, err = f.varint()
		case pbSubResDelta:
			v, err = f.varint()
			s.Delta = v != 0
		case pbSubResID:
			v, err = f.varint()
			s.ID = int64(v)
		case pbSubResPhase:
			v, err = f.varint()
			s.Phase = int32(v)
		case pbSubResCursor:
			err = f.string(&s.Cursor)
		case pbSubResState:
			var e pbPub
			if err = f.message(e.decode); err == nil {
				s.StateKeys = append(s.StateKeys, e.Key)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pbSkip checks that an embedded message is well-formed and reads none of
// its fields.
func pbSkip(b []byte) error {
	var f pbField
	for len(b) > 0 {
		var err error
		if b, err = f.next(b); err != nil {
			return err
		}
	}
	return nil
}

// pbField is one field of a message.
type pbField struct {
	num protowire.Number
	typ protowire.Type
	u   uint64 // VarintType
	b   []byte // BytesType, pointing into the message
}

// next reads the first field of message b into f and returns the rest.
func (f *pbField) next(b []byte) ([]byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return nil, fmt.Errorf("tag: %w", protowire.ParseError(n))
	}
	if num > protowire.MaxValidNumber { // ConsumeTag lets these through; proto does not
		return nil, fmt.Errorf("tag: field number %d out of range", num)
	}
	b = b[n:]
	*f = pbField{num: num, typ: typ}
	switch typ {
	case protowire.VarintType:
		f.u, n = protowire.ConsumeVarint(b)
	case protowire.BytesType:
		f.b, n = protowire.ConsumeBytes(b)
	default:
		n = protowire.ConsumeFieldValue(num, typ, b)
	}
	if n < 0 {
		return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
	}
	return b[n:], nil
}

func (f *pbField) want(t protowire.Type) error {
	if f.typ != t {
		return fmt.Errorf("field %d: %w", f.num, errPBWireType)
	}
	return nil
}

func (f *pbField) varint() (uint64, error) { return f.u, f.want(protowire.VarintType) }

func (f *pbField) bytes(v *[]byte) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	*v = f.b
	return nil
}

func (f *pbField) string(v *[]byte) error {
	if err := f.bytes(v); err != nil {
		return err
	}
	if !utf8.Valid(f.b) {
		return fmt.Errorf("field %d: string is not valid UTF-8", f.num)
	}
	return nil
}

// message decodes an embedded message with decode; a second occurrence
// decodes into the same value (proto merging).
func (f *pbField) message(decode func([]byte) error) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	if err := decode(f.b); err != nil {
		return fmt.Errorf("field %d: %w", f.num, err)
	}
	return nil
}
