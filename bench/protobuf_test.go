package bench

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/edgerelay/edgerelay/delta"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// Builders for test messages, field by field.

func tVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func tBytes(b []byte, num protowire.Number, v string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func tMsg(b []byte, num protowire.Number, m []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), m)
}

// tDelimited joins replies into one message.
func tDelimited(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = protowire.AppendBytes(b, m)
	}
	return b
}

// decodeAll decodes every reply of msg.
func decodeAll(msg []byte) ([]pbReply, error) {
	var out []pbReply
	for len(msg) > 0 {
		var r pbReply
		var err error
		if msg, err = r.decode(msg); err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func TestPBDecodeReplies(t *testing.T) {
	value := `{"seq":3,"t":1}`
	pub := tVarint(tBytes(nil, pbPubData, value), pbPubOffset, 42)
	patch := tVarint(tVarint(tBytes(nil, pbPubData, "3\n2:4,"), pbPubOffset, 43), pbPubDelta, 1)
	subRes := tBytes(nil, pbSubResEpoch, "e1e21a88-4")
	subRes = tMsg(subRes, pbSubResPublications, tVarint(tBytes(nil, pbPubData, "old"), pbPubOffset, 40))
	subRes = tMsg(subRes, pbSubResPublications, pub)
	subRes = tVarint(tVarint(tVarint(subRes, pbSubResOffset, 42), pbSubResDelta, 1), pbSubResID, 17)
	unknowns := tVarint(nil, 3, 7)                                                                  // reserved in client.proto
	unknowns = protowire.AppendFixed64(protowire.AppendTag(unknowns, 50, protowire.Fixed64Type), 1) // from a newer server
	unknowns = protowire.AppendFixed32(protowire.AppendTag(unknowns, 51, protowire.Fixed32Type), 1)
	unknowns = tMsg(unknowns, 11, tVarint(nil, 3, 9)) // a history reply: not read
	group := protowire.AppendTag(nil, 60, protowire.StartGroupType)
	group = tVarint(group, 1, 5)
	group = protowire.AppendTag(group, 60, protowire.EndGroupType)

	for _, tt := range []struct {
		name   string
		msg    []byte
		want   []pbReply
		errHas string
	}{
		{name: "server ping", msg: []byte{0}, want: []pbReply{{Empty: true}}},
		{name: "push by channel", msg: tDelimited(tMsg(nil, pbReplyPush, tMsg(tBytes(nil, pbPushChannel, "odds:a:b"), pbPushPub, pub))),
			want: []pbReply{{HasPush: true, Push: pbPush{Channel: []byte("odds:a:b"), HasPub: true, Pub: pbPub{Data: []byte(value), Offset: 42}}}}},
		{name: "patch by channel id", msg: tDelimited(tMsg(nil, pbReplyPush, tMsg(tVarint(nil, pbPushID, 17), pbPushPub, patch))),
			want: []pbReply{{HasPush: true, Push: pbPush{ID: 17, HasPub: true, Pub: pbPub{Data: []byte("3\n2:4,"), Offset: 43, Delta: true}}}}},
		{name: "subscribe reply, two publications: the last counts", msg: tDelimited(tMsg(tVarint(nil, pbReplyID, 2), pbReplySubscribe, subRes)),
			want: []pbReply{{ID: 2, HasSub: true, Sub: pbSubscribeResult{Epoch: []byte("e1e21a88-4"), Offset: 42, Delta: true, ID: 17, Pubs: 2,
				Last: pbPub{Data: []byte(value), Offset: 42}}}}},
		{name: "empty subscribe reply", msg: tDelimited(tMsg(tVarint(nil, pbReplyID, 3), pbReplySubscribe, nil)),
			want: []pbReply{{ID: 3, HasSub: true}}},
		{name: "connect reply, then subscribe reply and a ping in one message",
			msg: tDelimited(tMsg(tVarint(nil, pbReplyID, 1), pbReplyConnect, tVarint(tBytes(nil, 1, "client-uuid"), 7, 25)),
				tMsg(tVarint(nil, pbReplyID, 2), pbReplySubscribe, nil), nil),
			want: []pbReply{{ID: 1, Connect: true}, {ID: 2, HasSub: true}, {Empty: true}}},
		{name: "error reply", msg: tDelimited(tMsg(tVarint(nil, pbReplyID, 4), pbReplyError, tBytes(tVarint(tVarint(nil, 3, 1), pbErrorCode, 106), pbErrorMessage, "limit exceeded"))),
			want: []pbReply{{ID: 4, HasError: true, ErrCode: 106, ErrMessage: []byte("limit exceeded")}}},
		{name: "unknown fields and groups skipped", msg: tDelimited(append(append(tMsg(unknowns, pbReplyPush, tMsg(tMsg(nil, 5, []byte{0x08, 1}), pbPushPub, pub)), group...), 0x08, 9)),
			want: []pbReply{{ID: 9, HasPush: true, Push: pbPush{HasPub: true, Pub: pbPub{Data: []byte(value), Offset: 42}}}}},
		{name: "a message field twice merges, a scalar twice: the last wins",
			msg: tDelimited(tMsg(tMsg(tVarint(tVarint(nil, pbReplyID, 1), pbReplyID, 2), pbReplyPush, tBytes(tMsg(nil, pbPushPub, pub), pbPushChannel, "x")),
				pbReplyPush, tMsg(tBytes(nil, pbPushChannel, "y"), pbPushPub, tVarint(nil, pbPubOffset, 99)))),
			want: []pbReply{{ID: 2, HasPush: true, Push: pbPush{Channel: []byte("y"), HasPub: true, Pub: pbPub{Data: []byte(value), Offset: 99}}}}},
		{name: "uint32 id truncated as proto3 does", msg: tDelimited(tVarint(nil, pbReplyID, 1<<32|5)), want: []pbReply{{ID: 5}}},
		{name: "negative channel id (int64)", msg: tDelimited(tMsg(nil, pbReplyPush, tVarint(nil, pbPushID, ^uint64(0)))),
			want: []pbReply{{HasPush: true, Push: pbPush{ID: -1}}}},

		{name: "truncated length", msg: []byte{0x80}, errHas: "reply length"},
		{name: "length past the end", msg: []byte{0x05, 0x08, 0x01}, errHas: "past the end"},
		{name: "truncated varint field", msg: []byte{0x02, 0x08, 0x80}, errHas: "field 1"},
		{name: "field number 0", msg: []byte{0x02, 0x00, 0x01}, errHas: "tag"},
		{name: "field number past 2^29-1", msg: tDelimited(tVarint(nil, protowire.MaxValidNumber+1, 1)), errHas: "out of range"},
		{name: "reserved wire type", msg: []byte{0x02, 0x0e, 0x01}, errHas: "field 1"},
		{name: "end group without start", msg: []byte{0x01, 0x0c}, errHas: "field 1"},
		{name: "push as a varint", msg: tDelimited(tVarint(nil, pbReplyPush, 1)), errHas: "wrong wire type"},
		{name: "data as a varint", msg: tDelimited(tMsg(nil, pbReplyPush, tMsg(nil, pbPushPub, tVarint(nil, pbPubData, 1)))), errHas: "wrong wire type"},
		{name: "id as bytes", msg: tDelimited(tBytes(nil, pbReplyID, "1")), errHas: "wrong wire type"},
		{name: "channel not UTF-8", msg: tDelimited(tMsg(nil, pbReplyPush, tBytes(nil, pbPushChannel, "odds:\xff"))), errHas: "UTF-8"},
		{name: "publication past the end of its push", msg: tDelimited(tMsg(nil, pbReplyPush, []byte{0x22, 0x05, 0x22})), errHas: "field 4"},
		{name: "good reply, then a bad one", msg: append(tDelimited(nil), 0x03, 0x08), errHas: "past the end"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(tt.msg)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("decode %x: %v, want an error with %q", tt.msg, err, tt.errHas)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("decode %x:\n got %+v, %v\nwant %+v", tt.msg, got, err, tt.want)
			}
		})
	}
}

// TestPBAgainstRelay: what the relay's Protobuf codec writes decodes to
// what it meant, and what edgebench sends decodes, in the relay, to the
// commands edgebench means. (The relay is imported in tests only.)
func TestPBAgainstRelay(t *testing.T) {
	codec := protocol.Protobuf
	data := []byte(`{"seq":7,"t":123,"pad":"ooo"}`)
	cases := []struct {
		name string
		msg  []byte
		want pbReply
	}{
		{"named push", codec.AppendPublicationPush(nil, "odds:football:epl:m-1:1x2", 0, data, 1043),
			pbReply{HasPush: true, Push: pbPush{Channel: []byte("odds:football:epl:m-1:1x2"), HasPub: true, Pub: pbPub{Data: data, Offset: 1043}}}},
		{"compact push", codec.AppendPublicationPush(nil, "odds:x", 300, data, 0),
			pbReply{HasPush: true, Push: pbPush{ID: 300, HasPub: true, Pub: pbPub{Data: data}}}},
		{"delta patch", codec.AppendDeltaPush(nil, "odds:x", 17, []byte("patch"), 1<<40, true),
			pbReply{HasPush: true, Push: pbPush{ID: 17, HasPub: true, Pub: pbPub{Data: []byte("patch"), Offset: 1 << 40, Delta: true}}}},
		{"delta full", codec.AppendDeltaPush(nil, "odds:x", 0, data, 9, false),
			pbReply{HasPush: true, Push: pbPush{Channel: []byte("odds:x"), HasPub: true, Pub: pbPub{Data: data, Offset: 9}}}},
		{"subscribe reply", codec.AppendReply(nil, &protocol.Reply{ID: 2, Subscribe: &protocol.SubscribeResult{Recoverable: true, Epoch: "ep-1",
			Offset: 1043, Publications: []protocol.Publication{{Data: data, Offset: 1043}}, Delta: true, ID: 17}}),
			pbReply{ID: 2, HasSub: true, Sub: pbSubscribeResult{Epoch: []byte("ep-1"), Offset: 1043, Delta: true, ID: 17, Pubs: 1, Last: pbPub{Data: data, Offset: 1043}}}},
		{"connect reply", codec.AppendReply(nil, &protocol.Reply{ID: 1, Connect: &protocol.ConnectResult{Client: "c", Version: "v", Ping: 25, Pong: true, Node: "n"}}),
			pbReply{ID: 1, Connect: true}},
		{"error reply", codec.AppendReply(nil, &protocol.Reply{ID: 3, Error: &protocol.Error{Code: 106, Message: "limit exceeded"}}),
			pbReply{ID: 3, HasError: true, ErrCode: 106, ErrMessage: []byte("limit exceeded")}},
		{"server ping", codec.Ping(), pbReply{Empty: true}},
	}
	for _, tt := range cases {
		got, err := decodeAll(tt.msg)
		if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
			t.Errorf("%s: %x decodes to %+v, %v; want %+v", tt.name, tt.msg, got, err, tt.want)
		}
	}

	cmds := pbAppendConnect(nil, 1, "edgebench")
	cmds = pbAppendSubscribe(cmds, 2, "odds:a", false, false)
	cmds = pbAppendSubscribe(cmds, 3, "odds:b", true, true)
	cmds = append(cmds, pbPong...)
	var got []*protocol.Command
	if err := codec.DecodeCommands(cmds, func(c *protocol.Command) error { cp := *c; got = append(got, &cp); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].ID != 1 || got[0].Connect == nil || got[0].Connect.Name != "edgebench" ||
		got[1].ID != 2 || got[1].Subscribe == nil || !reflect.DeepEqual(*got[1].Subscribe, protocol.SubscribeRequest{Channel: "odds:a"}) ||
		got[2].ID != 3 || got[2].Subscribe == nil ||
		!reflect.DeepEqual(*got[2].Subscribe, protocol.SubscribeRequest{Channel: "odds:b", Delta: "fossil", Flag: protocol.FlagChannelCompaction}) ||
		!got[3].IsPong() {
		t.Fatalf("the relay reads %x as %+v", cmds, got)
	}
}

// TestPBDecodePushAllocs: the load generator decodes every delivery; a
// push costs no allocation.
func TestPBDecodePushAllocs(t *testing.T) {
	msg := protocol.Protobuf.AppendDeltaPush(nil, "odds:x", 17, []byte("patch"), 1043, true)
	allocs := testing.AllocsPerRun(100, func() {
		var r pbReply
		if _, err := r.decode(msg); err != nil || !r.Push.Pub.Delta {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per push", allocs)
	}
}

// replyDescriptor is the part of client.proto's Reply that edgebench
// reads, built at run time, for google.golang.org/protobuf to decode as
// the reference (FuzzPBDecodeReply).
func replyDescriptor(t testing.TB) protoreflect.MessageDescriptor {
	const pkg = "centrifugal.centrifuge.protocol"
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, msg string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), JsonName: proto.String(name), Number: proto.Int32(num),
			Type: typ.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()}
		if msg != "" {
			f.TypeName = proto.String("." + pkg + "." + msg)
		}
		return f
	}
	const (
		tUint32 = descriptorpb.FieldDescriptorProto_TYPE_UINT32
		tUint64 = descriptorpb.FieldDescriptorProto_TYPE_UINT64
		tInt64  = descriptorpb.FieldDescriptorProto_TYPE_INT64
		tBool   = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		tString = descriptorpb.FieldDescriptorProto_TYPE_STRING
		tBytes  = descriptorpb.FieldDescriptorProto_TYPE_BYTES
		tMsg    = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	)
	message := func(name string, fields ...*descriptorpb.FieldDescriptorProto) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{Name: proto.String(name), Field: fields}
	}
	pubs := field("publications", pbSubResPublications, tMsg, "Publication")
	pubs.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	fd := &descriptorpb.FileDescriptorProto{
		Name: proto.String("edgebench/client_subset.proto"), Package: proto.String(pkg), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			message("Error", field("code", pbErrorCode, tUint32, ""), field("message", pbErrorMessage, tString, "")),
			message("Publication", field("data", pbPubData, tBytes, ""), field("offset", pbPubOffset, tUint64, ""), field("delta", pbPubDelta, tBool, "")),
			message("Push", field("id", pbPushID, tInt64, ""), field("channel", pbPushChannel, tString, ""), field("pub", pbPushPub, tMsg, "Publication")),
			message("ConnectResult"),
			message("SubscribeResult", field("epoch", pbSubResEpoch, tString, ""), pubs, field("offset", pbSubResOffset, tUint64, ""),
				field("delta", pbSubResDelta, tBool, ""), field("id", pbSubResID, tInt64, "")),
			message("Reply", field("id", pbReplyID, tUint32, ""), field("error", pbReplyError, tMsg, "Error"), field("push", pbReplyPush, tMsg, "Push"),
				field("connect", pbReplyConnect, tMsg, "ConnectResult"), field("subscribe", pbReplySubscribe, tMsg, "SubscribeResult")),
		},
	}
	file, err := protodesc.NewFile(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	return file.Messages().ByName("Reply")
}

// fromReference is what pbReply.decode should make of m, a Reply decoded
// by google.golang.org/protobuf from b.
func fromReference(m protoreflect.Message, b []byte) pbReply {
	get := func(m protoreflect.Message, name string) protoreflect.Value {
		return m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name)))
	}
	has := func(m protoreflect.Message, name string) bool {
		return m.Has(m.Descriptor().Fields().ByName(protoreflect.Name(name)))
	}
	nilIfEmpty := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return b
	}
	pub := func(p protoreflect.Message) pbPub {
		return pbPub{Data: nilIfEmpty(get(p, "data").Bytes()), Offset: get(p, "offset").Uint(), Delta: get(p, "delta").Bool()}
	}
	r := pbReply{Empty: len(b) == 0, ID: uint32(get(m, "id").Uint())}
	if r.HasError = has(m, "error"); r.HasError {
		e := get(m, "error").Message()
		r.ErrCode, r.ErrMessage = uint32(get(e, "code").Uint()), nilIfEmpty([]byte(get(e, "message").String()))
	}
	r.Connect = has(m, "connect")
	if r.HasPush = has(m, "push"); r.HasPush {
		p := get(m, "push").Message()
		r.Push = pbPush{ID: get(p, "id").Int(), Channel: nilIfEmpty([]byte(get(p, "channel").String())), HasPub: has(p, "pub")}
		if r.Push.HasPub {
			r.Push.Pub = pub(get(p, "pub").Message())
		}
	}
	if r.HasSub = has(m, "subscribe"); r.HasSub {
		s := get(m, "subscribe").Message()
		pubs := get(s, "publications").List()
		r.Sub = pbSubscribeResult{Epoch: nilIfEmpty([]byte(get(s, "epoch").String())), Offset: get(s, "offset").Uint(),
			Delta: get(s, "delta").Bool(), ID: get(s, "id").Int(), Pubs: pubs.Len()}
		if pubs.Len() > 0 {
			r.Sub.Last = pub(pubs.Get(pubs.Len() - 1).Message())
		}
	}
	return r
}

// normalized makes decoded byte fields comparable with the reference's:
// empty is nil.
func normalized(r pbReply) pbReply {
	for _, b := range []*[]byte{&r.ErrMessage, &r.Sub.Epoch, &r.Sub.Last.Data, &r.Push.Channel, &r.Push.Pub.Data} {
		if len(*b) == 0 {
			*b = nil
		}
	}
	return r
}

// FuzzPBDecodeReply: the reply decoder never panics, and whatever it
// accepts google.golang.org/protobuf reads the same from client.proto's
// definitions; what it refuses, the reference refuses too, except a known
// field with the wrong wire type (the reference keeps it as an unknown
// field; edgebench calls it a relay bug).
func FuzzPBDecodeReply(f *testing.F) {
	desc := replyDescriptor(f)
	codec := protocol.Protobuf
	data := []byte(`{"seq":7,"t":123}`)
	for _, seed := range [][]byte{
		{0},
		codec.AppendPublicationPush(nil, "odds:a", 0, data, 5),
		codec.AppendDeltaPush(nil, "odds:a", 17, []byte("patch"), 6, true),
		codec.AppendReply(codec.AppendReply(nil, &protocol.Reply{ID: 1, Connect: &protocol.ConnectResult{Client: "c", Ping: 25}}),
			&protocol.Reply{ID: 2, Subscribe: &protocol.SubscribeResult{Epoch: "e", Offset: 5, Publications: []protocol.Publication{{Data: data, Offset: 5}}, Delta: true, ID: 3}}),
		codec.AppendReply(nil, &protocol.Reply{ID: 3, Error: &protocol.Error{Code: 106, Message: "limit exceeded"}}),
		{0x80},
		{0x02, 0x20, 0x01},
		tDelimited(tMsg(nil, pbReplyPush, tBytes(nil, pbPushChannel, "\xff"))),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		for rest := msg; len(rest) > 0; {
			var r pbReply
			after, err := r.decode(rest)
			b, n := protowire.ConsumeBytes(rest)
			if n < 0 {
				if err == nil {
					t.Fatalf("%x: decoded a reply whose length is bad", rest)
				}
				return
			}
			ref := dynamicpb.NewMessage(desc)
			refErr := proto.Unmarshal(b, ref)
			switch {
			case err != nil && refErr == nil && !errors.Is(err, errPBWireType):
				t.Fatalf("%x: refused (%v), the reference accepts it", b, err)
			case err != nil:
				return
			case refErr != nil:
				t.Fatalf("%x: accepted as %+v, the reference refuses it: %v", b, r, refErr)
			}
			if want := fromReference(ref, b); !reflect.DeepEqual(normalized(r), want) {
				t.Fatalf("%x:\n decoded %+v\nreference %+v", b, normalized(r), want)
			}
			if len(after) != len(rest)-n {
				t.Fatalf("%x: %d bytes left, want %d", rest, len(after), len(rest)-n)
			}
			rest = after
		}
	})
}

// TestPBClientChecks: a Protobuf client rebuilds delta values from raw
// patches and applies the JSON client's checks to them: a patch that does
// not apply (or comes with no base) is a bad delta, a repeated or older
// sequence number a duplicate or out of order, a skipped one a gap.
func TestPBClientChecks(t *testing.T) {
	value := func(seq int) []byte {
		return fmt.Appendf(nil, `{"seq":%d,"t":%d,"pad":"oooooooooooooooooooooooooooooo"}`, seq, time.Now().UnixNano())
	}
	push := func(channel string, data []byte, isPatch bool) []byte {
		return protocol.Protobuf.AppendDeltaPush(nil, channel, 0, data, 1, isPatch)
	}
	c := &clientResult{protobuf: true, delta: true, sink: &seriesSink{series: map[int64]*Histogram{}, connects: map[int64]int{}},
		subs: []*chanState{{name: "a"}, {name: "b"}}}
	base := value(0)
	msg := protocol.Protobuf.AppendReply(nil, &protocol.Reply{ID: 2, Subscribe: &protocol.SubscribeResult{Delta: true, Publications: []protocol.Publication{{Data: base}}}})
	msg = protocol.Protobuf.AppendReply(msg, &protocol.Reply{ID: 3, Subscribe: &protocol.SubscribeResult{}}) // b: no delta, no cached value
	if err := c.protobufMessage(nil, msg, time.Now()); err != nil || !c.subscribed || !c.subs[0].pbDelta || c.subs[1].pbDelta {
		t.Fatalf("subscribe replies: %v, subscribed %v", err, c.subscribed)
	}
	// counts: received, gaps, bad deltas, duplicates, out of order
	type counts [5]uint64
	for _, step := range []struct {
		msg  []byte
		want counts // after it
	}{
		{push("a", delta.Encode(nil, base, value(1)), true), counts{1, 0, 0, 0, 0}},
		{push("b", value(1), false), counts{2, 0, 0, 0, 0}},
		{push("a", value(3), false), counts{3, 1, 0, 0, 0}},             // full, in a delta subscription: seq 2 skipped
		{push("a", []byte("not a patch"), true), counts{3, 1, 1, 0, 0}}, // a patch that does not apply
		{push("b", []byte("2\n"), true), counts{3, 1, 2, 0, 0}},         // a patch on a plain subscription
		{push("b", value(1), false), counts{4, 1, 2, 1, 0}},
		{push("b", value(0), false), counts{5, 1, 2, 1, 1}},
	} {
		if err := c.protobufMessage(nil, step.msg, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := (counts{c.received, c.gaps, c.badDeltas, c.duplicates, c.outOfOrder}); got != step.want {
			t.Fatalf("after %x: counts %v, want %v", step.msg, got, step.want)
		}
	}
	if c.subs[0].lastSeq != 3 {
		t.Fatalf("channel a ends on %d, want 3", c.subs[0].lastSeq)
	}
	if err := c.protobufMessage(nil, protocol.Protobuf.AppendReply(nil, &protocol.Reply{ID: 4, Error: &protocol.Error{Code: 106, Message: "limit exceeded"}}), time.Now()); err == nil ||
		!strings.Contains(err.Error(), "error 106") {
		t.Fatalf("an error reply: %v", err)
	}
	if err := c.protobufMessage(nil, []byte{0x05, 0x22}, time.Now()); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("a malformed reply: %v", err)
	}
}
