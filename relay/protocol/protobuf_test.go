package protocol

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// pbCommand builds a Command: id, then field method holding body.
func pbCommand(id uint32, method protowire.Number, body []byte) []byte {
	b := pbUint(nil, cmdID, uint64(id))
	if method != 0 {
		b = pbMessage(b, method, body)
	}
	return b
}

func pbDelimited(cmds ...[]byte) []byte {
	var b []byte
	for _, c := range cmds {
		b = protowire.AppendBytes(b, c)
	}
	return b
}

func TestProtobufDecodeCommands(t *testing.T) {
	subscribe := pbString(nil, 1, "odds:a")
	subscribe = pbBool(subscribe, 3, true)
	subscribe = pbString(subscribe, 6, "ep")
	subscribe = pbUint(subscribe, 7, 41)
	subscribe = pbString(subscribe, 12, "fossil")
	subscribe = pbUint(subscribe, 14, 1)
	history := pbString(nil, 1, "odds:a")
	history = pbUint(history, 7, uint64(0xffffffffffffffff)) // int32 -1, sign-extended
	history = pbMessage(history, 8, pbString(pbUint(nil, 1, 5), 2, "ep"))
	unknown := pbString(pbCommand(9, cmdPing, nil), 99, "from a newer SDK")

	tests := []struct {
		name    string
		msg     []byte
		methods []string
		err     error
		check   func(t *testing.T, cmds []*Command)
	}{
		{name: "connect", msg: pbDelimited(pbCommand(1, cmdConnect, pbString(pbString(nil, 1, "tok"), 4, "go"))), methods: []string{"connect"},
			check: func(t *testing.T, c []*Command) {
				if c[0].ID != 1 || c[0].Connect.Token != "tok" || c[0].Connect.Name != "go" {
					t.Fatalf("%+v %+v", c[0], c[0].Connect)
				}
			}},
		{name: "batched with pong", msg: pbDelimited(pbCommand(2, cmdSubscribe, subscribe), nil, pbCommand(3, cmdHistory, history)), methods: []string{"subscribe", "", "history"},
			check: func(t *testing.T, c []*Command) {
				s, h := c[0].Subscribe, c[2].History
				if s.Channel != "odds:a" || !s.Recover || s.Epoch != "ep" || s.Offset != 41 || s.Delta != "fossil" || s.Flag != 1 {
					t.Fatalf("subscribe %+v", s)
				}
				if !c[1].IsPong() {
					t.Fatal("empty command is not a pong")
				}
				if h.Limit != -1 || h.Since == nil || h.Since.Offset != 5 || h.Since.Epoch != "ep" {
					t.Fatalf("history %+v since %+v", h, h.Since)
				}
			}},
		{name: "rpc data is bytes", msg: pbDelimited(pbCommand(4, cmdRPC, pbString(pbBytes(nil, 1, []byte(`{"stake":5}`)), 2, "bet"))), methods: []string{"rpc"},
			check: func(t *testing.T, c []*Command) {
				if c[0].RPC.Method != "bet" || string(c[0].RPC.Data) != `{"stake":5}` {
					t.Fatalf("rpc %+v", c[0].RPC)
				}
			}},
		{name: "unknown field skipped", msg: pbDelimited(unknown), methods: []string{"ping"}},
		{name: "unsupported methods", msg: pbDelimited(pbCommand(5, cmdPublish, pbString(nil, 1, "x")), pbCommand(6, cmdRefresh, nil), pbCommand(7, cmdSend, nil)), methods: []string{"publish", "refresh", "send"}},
		{name: "empty message", msg: nil},
		{name: "truncated length varint", msg: []byte{0x80}, err: ErrMalformed},
		{name: "length past the message", msg: []byte{0x05, 0x08, 0x01}, err: ErrMalformed},
		{name: "huge length", msg: protowire.AppendVarint(nil, 1<<40), err: ErrMalformed},
		{name: "truncated field varint", msg: pbDelimited([]byte{0x08, 0x80}), err: ErrMalformed},
		{name: "wrong wire type for id", msg: pbDelimited(pbString(nil, cmdID, "1")), err: ErrMalformed},
		{name: "wrong wire type for subscribe", msg: pbDelimited(pbUint(nil, cmdSubscribe, 1)), err: ErrMalformed},
		{name: "wrong wire type inside subscribe", msg: pbDelimited(pbCommand(2, cmdSubscribe, pbUint(nil, 1, 7))), err: ErrMalformed},
		{name: "invalid UTF-8 channel", msg: pbDelimited(pbCommand(2, cmdSubscribe, pbBytes(nil, 1, []byte{0xff, 0xfe}))), err: ErrMalformed},
		{name: "field number 0", msg: pbDelimited([]byte{0x00}), err: ErrMalformed},
		{name: "field number past 2^29-1", msg: pbDelimited(protowire.AppendVarint(protowire.AppendTag(pbCommand(5, cmdPing, nil), 1<<29, protowire.VarintType), 1)), err: ErrMalformed},
		{name: "unterminated group", msg: pbDelimited([]byte{0x0b}), err: ErrMalformed},
		{name: "good then bad", msg: append(pbDelimited(pbCommand(1, cmdPing, nil)), 0x80), methods: []string{"ping"}, err: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cmds []*Command
			var methods []string
			err := Protobuf.DecodeCommands(tt.msg, func(c *Command) error {
				cmds = append(cmds, c)
				methods = append(methods, c.Method())
				return nil
			})
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if len(methods) != len(tt.methods) {
				t.Fatalf("methods %q, want %q", methods, tt.methods)
			}
			for i := range methods {
				if methods[i] != tt.methods[i] {
					t.Fatalf("methods %q, want %q", methods, tt.methods)
				}
			}
			if tt.check != nil {
				tt.check(t, cmds)
			}
		})
	}
}

// FuzzProtobufDecodeCommands: no input panics, each command costs at
// least one byte, and byte fields point into the message.
func FuzzProtobufDecodeCommands(f *testing.F) {
	f.Add(pbDelimited(pbCommand(1, cmdConnect, pbString(nil, 1, "tok"))))
	f.Add(pbDelimited(pbCommand(2, cmdSubscribe, pbString(pbBool(nil, 3, true), 1, "odds:a")), nil))
	f.Add(pbDelimited(pbCommand(3, cmdRPC, pbString(pbBytes(nil, 1, []byte(`{}`)), 2, "bet"))))
	f.Add(pbDelimited(pbCommand(4, cmdHistory, pbMessage(pbString(nil, 1, "c"), 8, pbUint(nil, 1, 3)))))
	f.Add([]byte{0x02, 0x0b, 0x0c})
	// a map subscribe: type 1, phase 2, cursor, limit
	f.Add(pbDelimited(pbCommand(5, cmdSubscribe, pbUint(pbString(pbUint(pbUint(pbString(nil, 1, "odds:m"), 15, 1), 16, 2), 17, "k"), 18, 100))))
	f.Fuzz(func(t *testing.T, msg []byte) {
		n := 0
		Protobuf.DecodeCommands(msg, func(c *Command) error {
			n++
			if c.RPC != nil && len(c.RPC.Data) > 0 && !bytes.Contains(msg, c.RPC.Data) {
				t.Fatal("rpc data not from the message")
			}
			return nil
		})
		if n > len(msg) {
			t.Fatalf("%d commands from %d bytes", n, len(msg))
		}
	})
}

func TestProtobufPushAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	data := []byte(`{"odds":[2.1,3.3]}`)
	for name, fn := range map[string]func(){
		"push":  func() { buf = Protobuf.AppendPublicationPush(buf[:0], "odds:a:b", 0, data, 123456) },
		"patch": func() { buf = Protobuf.AppendDeltaPush(buf[:0], "", 77, data, 123456, true) },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
}

// TestProtobufReplyShape checks the reply encoder against hand-assembled
// bytes for the messages whose presence matters to the SDKs: an empty
// result marks the reply's kind.
func TestProtobufReplyShape(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    *Reply
		want []byte
	}{
		{"ping", &Reply{ID: 3, Ping: &struct{}{}}, []byte{0x04, 0x08, 0x03, 0x62, 0x00}},
		{"unsubscribe", &Reply{ID: 1, Unsubscribe: &struct{}{}}, []byte{0x04, 0x08, 0x01, 0x3a, 0x00}},
		{"error", &Reply{ID: 2, Error: &Error{Code: 107, Message: "x"}}, []byte{0x09, 0x08, 0x02, 0x12, 0x05, 0x08, 0x6b, 0x12, 0x01, 'x'}},
		{"rpc", &Reply{ID: 5, RPC: &RPCResult{Data: []byte("{}")}}, []byte{0x08, 0x08, 0x05, 0x6a, 0x04, 0x0a, 0x02, '{', '}'}},
	} {
		if got := Protobuf.AppendReply(nil, tt.r); !bytes.Equal(got, tt.want) {
			t.Errorf("%s: % x, want % x", tt.name, got, tt.want)
		}
	}
	if got := Protobuf.AppendReply(Protobuf.Ping(), &Reply{ID: 1, Ping: &struct{}{}}); got[0] != 0 || got[1] != 4 {
		t.Errorf("two replies in one message: % x", got)
	}
}

// TestProtobufTagFilterDepth: a tf nested past MaxFilterDecodeDepth is
// decoded down to that depth only, the node there marked TooDeep (the
// relay then refuses the filter with 107); the command is not malformed.
func TestProtobufTagFilterDepth(t *testing.T) {
	node := pbString(pbString(pbString(nil, 2, "k"), 3, "eq"), 4, "v")
	for range 1000 {
		node = pbMessage(pbString(nil, 1, "not"), 6, node)
	}
	sub := pbMessage(pbString(nil, 1, "odds:a"), 13, node)
	var tf *FilterNode
	if err := Protobuf.DecodeCommands(pbDelimited(pbCommand(2, cmdSubscribe, sub)), func(c *Command) error { tf = c.Subscribe.TF; return nil }); err != nil {
		t.Fatal(err)
	}
	depth := 1
	for ; len(tf.Nodes) == 1; depth++ {
		tf = &tf.Nodes[0]
	}
	if depth != MaxFilterDecodeDepth || !tf.TooDeep || tf.Op != "not" {
		t.Fatalf("decoded %d levels, the last %+v", depth, tf)
	}
	// Within the bound: decoded whole, vals repeated.
	leaf := pbString(pbString(pbString(pbString(nil, 2, "g"), 3, "in"), 5, "a"), 5, "b")
	sub = pbMessage(pbString(nil, 1, "odds:a"), 13, pbMessage(pbString(nil, 1, "and"), 6, leaf))
	if err := Protobuf.DecodeCommands(pbDelimited(pbCommand(2, cmdSubscribe, sub)), func(c *Command) error { tf = c.Subscribe.TF; return nil }); err != nil {
		t.Fatal(err)
	}
	if tf.Op != "and" || len(tf.Nodes) != 1 || tf.Nodes[0].Key != "g" || len(tf.Nodes[0].Vals) != 2 || tf.Nodes[0].Vals[1] != "b" || tf.TooDeep {
		t.Fatalf("decoded %+v", tf)
	}
}

// TestTagFilterDecodeBounded: a 128 KiB subscribe whose tf is tens of
// thousands of empty nodes, or one leaf with tens of thousands of vals,
// is cut at MaxFilterDecodeNodes / MaxFilterDecodeStrings and marked
// TooLarge (the relay then answers 107), in both codecs, and decoding it
// allocates about what the message holds, not 40–60× that (the tree
// decoded whole was 5–8 MB). A filter within the bounds decodes whole.
func TestTagFilterDecodeBounded(t *testing.T) {
	const size = 128 << 10
	var pbNodes, pbVals []byte
	for len(pbNodes) < size-64 {
		pbNodes = pbMessage(pbNodes, 6, nil)
	}
	for len(pbVals) < size-64 {
		pbVals = pbMessage(pbVals, 5, nil) // an empty string
	}
	// pbRepeat is field num with value m, n times over.
	pbRepeat := func(num protowire.Number, m []byte, n int) []byte {
		var b []byte
		for range n {
			b = pbMessage(b, num, m)
		}
		return b
	}
	pbSub := func(tf []byte) []byte {
		return pbDelimited(pbCommand(2, cmdSubscribe, pbMessage(pbString(nil, 1, "odds:a"), 13, tf)))
	}
	jsonSub := func(tf string) []byte {
		return []byte(`{"id":2,"subscribe":{"channel":"odds:a","tf":` + tf + `}}`)
	}
	okLeaf := `{"key":"g","cmp":"in","vals":["a","b"]}`
	for _, tt := range []struct {
		name     string
		codec    Codec
		msg      []byte
		tooLarge bool
	}{
		{"protobuf, empty nodes", Protobuf, pbSub(pbString(pbNodes, 1, "or")), true},
		{"protobuf, vals", Protobuf, pbSub(pbString(pbString(pbVals, 2, "k"), 3, "in")), true},
		{"protobuf, tf repeated", Protobuf, pbDelimited(pbCommand(2, cmdSubscribe, pbRepeat(13, pbMessage(pbString(nil, 1, "or"), 6, nil), 2))), true},
		{"protobuf, tf repeated past the budget", Protobuf, pbDelimited(pbCommand(2, cmdSubscribe, pbRepeat(13, pbNodes[:2*(MaxFilterDecodeNodes-1)], size/(2*MaxFilterDecodeNodes)))), true},
		{"protobuf, within", Protobuf, pbSub(pbMessage(pbString(nil, 1, "or"), 6, pbString(pbString(pbString(pbString(nil, 2, "g"), 3, "in"), 5, "a"), 5, "b"))), false},
		{"json, empty nodes", JSON, jsonSub(`{"op":"or","nodes":[` + strings.Repeat(`{},`, size/3-20) + `{}]}`), true},
		{"json, vals", JSON, jsonSub(`{"key":"k","cmp":"in","vals":[` + strings.Repeat(`"",`, size/3-20) + `""]}`), true},
		{"json, null nodes", JSON, jsonSub(`{"op":"or","nodes":[` + strings.Repeat(`null,`, size/5-20) + `null]}`), true},
		{"json, number nodes", JSON, jsonSub(`{"op":"or","nodes":[` + strings.Repeat(`1,`, size/2-20) + `1]}`), true},
		{"json, array nodes", JSON, jsonSub(`{"op":"or","nodes":[` + strings.Repeat(`[],`, size/3-20) + `[]]}`), true},
		{"json, braces in strings", JSON, jsonSub(`{"op":"or","nodes":[{"key":"` + strings.Repeat("{", 1000) + `","cmp":"ex"}]}`), false},
		{"json, within", JSON, jsonSub(`{"op":"or","nodes":[` + okLeaf + `,` + okLeaf + `]}`), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var tf *FilterNode
			decode := func() {
				if err := tt.codec.DecodeCommands(tt.msg, func(c *Command) error { tf = c.Subscribe.TF; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			decode()
			runtime.ReadMemStats(&after)
			nodes, large := 0, false
			var count func(n *FilterNode)
			count = func(n *FilterNode) {
				nodes++
				large = large || n.TooLarge
				for i := range n.Nodes {
					count(&n.Nodes[i])
				}
			}
			count(tf)
			if large != tt.tooLarge || nodes > MaxFilterDecodeNodes {
				t.Fatalf("%d nodes decoded, TooLarge %v; want TooLarge %v, at most %d nodes", nodes, large, tt.tooLarge, MaxFilterDecodeNodes)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*uint64(len(tt.msg))+(256<<10) {
				t.Errorf("decoding a %d B message allocated %d B", len(tt.msg), alloc)
			}
			if !tt.tooLarge && (tf.Op != "or" || len(tf.Nodes) == 0 || tf.Nodes[0].Key == "") {
				t.Errorf("decoded %+v", tf)
			}
		})
	}
}
