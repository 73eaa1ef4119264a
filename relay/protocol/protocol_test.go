package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeCommands(t *testing.T) {
	tests := []struct {
		name    string
		frame   string
		methods []string
		ids     []uint32
		err     error
	}{
		{name: "connect", frame: `{"id":1,"connect":{"name":"js"}}`, methods: []string{"connect"}, ids: []uint32{1}},
		{name: "batched", frame: "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\n", methods: []string{"connect", "subscribe"}, ids: []uint32{1, 2}},
		{name: "pong", frame: `{}`, methods: []string{""}, ids: []uint32{0}},
		{name: "blank lines", frame: "\n\n{\"id\":3,\"rpc\":{\"method\":\"bet\"}}\n\n", methods: []string{"rpc"}, ids: []uint32{3}},
		{name: "unknown method", frame: `{"id":4,"frobnicate":{}}`, methods: []string{""}, ids: []uint32{4}},
		{name: "not json", frame: `hello`, err: ErrMalformed},
		{name: "array", frame: `[1,2]`, err: ErrMalformed},
		{name: "truncated", frame: `{"id":1,"connect":{`, err: ErrMalformed},
		{name: "bad type", frame: `{"id":"x"}`, err: ErrMalformed},
		{name: "good then bad", frame: "{\"id\":1,\"connect\":{}}\nnope", methods: []string{"connect"}, ids: []uint32{1}, err: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var methods []string
			var ids []uint32
			err := JSON.DecodeCommands([]byte(tt.frame), func(c *Command) error {
				methods = append(methods, c.Method())
				ids = append(ids, c.ID)
				return nil
			})
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if strings.Join(methods, ",") != strings.Join(tt.methods, ",") || len(ids) != len(tt.ids) {
				t.Fatalf("methods %q ids %v, want %q %v", methods, ids, tt.methods, tt.ids)
			}
			for i := range ids {
				if ids[i] != tt.ids[i] {
					t.Fatalf("ids %v, want %v", ids, tt.ids)
				}
			}
		})
	}
}

func FuzzDecodeCommands(f *testing.F) {
	f.Add([]byte(`{"id":1,"connect":{"token":"x"}}`))
	f.Add([]byte("{\"id\":2,\"subscribe\":{\"channel\":\"odds:a\",\"recover\":true,\"offset\":5}}\n{}"))
	f.Add([]byte(`{"id":3,"rpc":{"method":"bet","data":{"stake":1}}}`))
	f.Add([]byte(`{"id":4,"subscribe":{"channel":"odds:a","tf":{"op":"or","nodes":[{},{"key":"k\\"{","cmp":"eq","val":"v"}]}}}`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		n := 0
		JSON.DecodeCommands(frame, func(c *Command) error {
			n++
			// Whatever decodes must encode again: handlers echo parts back.
			if _, err := json.Marshal(c); err != nil {
				t.Fatalf("decoded command does not re-encode: %v", err)
			}
			return nil
		})
		if n > len(frame) {
			t.Fatalf("%d commands from %d bytes", n, len(frame))
		}
	})
}

func TestAppendPublicationPush(t *testing.T) {
	for _, tt := range []struct {
		channel string
		id      uint32
		offset  uint64
		want    string
	}{
		{"odds:a", 0, 42, `{"push":{"channel":"odds:a","pub":{"data":{"x":1},"offset":42}}}`},
		{"odds:a", 9, 42, `{"push":{"id":9,"pub":{"data":{"x":1},"offset":42}}}`},
		{"c", 0, 0, `{"push":{"channel":"c","pub":{"data":{"x":1}}}}`},
	} {
		got := JSON.AppendPublicationPush(nil, tt.channel, tt.id, []byte(`{"x":1}`), tt.offset)
		if string(got) != tt.want {
			t.Errorf("channel %q id %d offset %d: %s, want %s", tt.channel, tt.id, tt.offset, got, tt.want)
		}
		var v map[string]any
		if err := json.Unmarshal(got, &v); err != nil {
			t.Errorf("%s: %v", got, err)
		}
	}
}

func TestAppendPublicationPushAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	data := []byte(`{"odds":[2.1,3.3]}`)
	if n := testing.AllocsPerRun(100, func() { buf = JSON.AppendPublicationPush(buf[:0], "odds:a:b", 0, data, 123456) }); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}

func TestReplyEncoding(t *testing.T) {
	got := string(JSON.AppendReply(nil, &Reply{ID: 7, Error: ErrBadRequest.WithMessage("invalid channel name")}))
	want := `{"id":7,"error":{"code":107,"message":"bad request: invalid channel name"}}`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if !(Disconnect{3008, ""}).Reconnect() || DisconnectBadRequest.Reconnect() {
		t.Fatal("Reconnect classification wrong")
	}
}

func TestAppendDeltaPush(t *testing.T) {
	for i, payload := range []string{`{"a":"b\"c\\d","n":[1,2]}`, "line\nbreak\ttab\x01 ünï", ""} {
		got := JSON.AppendDeltaPush(nil, "odds:a", uint32(i), []byte(payload), 7, true)
		var v struct {
			Push struct {
				Pub struct {
					Data   string `json:"data"`
					Offset uint64 `json:"offset"`
					Delta  bool   `json:"delta"`
				} `json:"pub"`
			} `json:"push"`
		}
		if err := json.Unmarshal(got, &v); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if v.Push.Pub.Data != payload || v.Push.Pub.Offset != 7 || !v.Push.Pub.Delta {
			t.Fatalf("decoded %+v from %s", v, got)
		}
		if strings.ContainsRune(string(got), '\n') {
			t.Fatalf("raw newline in %q", got)
		}
	}
}

func TestAppendPushTags(t *testing.T) {
	tags := map[string]string{"group": "main", "q\"uote": "back\\slash\nnewline", "ünï": ""}
	for _, delta := range []bool{false, true} {
		got := JSON.AppendPush(nil, PubPush{Channel: "odds:a", Data: []byte(`{"x":1}`), Offset: 7, Tags: tags, Delta: delta})
		var v struct {
			Push struct {
				Pub struct {
					Data   json.RawMessage   `json:"data"`
					Offset uint64            `json:"offset"`
					Tags   map[string]string `json:"tags"`
				} `json:"pub"`
			} `json:"push"`
		}
		if err := json.Unmarshal(got, &v); err != nil || bytes.IndexByte(got, '\n') >= 0 {
			t.Fatalf("%s: %v", got, err)
		}
		if !maps.Equal(v.Push.Pub.Tags, tags) || v.Push.Pub.Offset != 7 {
			t.Fatalf("decoded %+v from %s", v, got)
		}
	}
	// Without tags, the same bytes as AppendPublicationPush.
	if a, b := JSON.AppendPush(nil, PubPush{Channel: "c", Data: []byte("1"), Offset: 2}), JSON.AppendPublicationPush(nil, "c", 0, []byte("1"), 2); !bytes.Equal(a, b) {
		t.Fatalf("%s != %s", a, b)
	}
	buf, data := make([]byte, 0, 512), []byte(`{}`)
	for _, c := range []Codec{JSON, Protobuf} {
		if n := testing.AllocsPerRun(100, func() { buf = c.AppendPush(buf[:0], PubPush{Channel: "odds:a", Data: data, Offset: 9, Tags: tags}) }); n != 0 {
			t.Errorf("%s: %v allocations, want 0", c.Encoding(), n)
		}
	}
}

func TestDecodeTagFilter(t *testing.T) {
	msg := `{"id":2,"subscribe":{"channel":"odds:a","tf":{"op":"or","nodes":[{"key":"g","cmp":"in","vals":["a","b"]},{"key":"p","cmp":"gt","val":"1"}]}}}`
	var got *FilterNode
	if err := JSON.DecodeCommands([]byte(msg), func(c *Command) error { got = c.Subscribe.TF; return nil }); err != nil {
		t.Fatal(err)
	}
	want := &FilterNode{Op: "or", Nodes: []FilterNode{{Key: "g", Cmp: "in", Vals: []string{"a", "b"}}, {Key: "p", Cmp: "gt", Val: "1"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("JSON tf %+v, want %+v", got, want)
	}
}

// BenchmarkDecodePong: the empty command a client sends as a pong to each
// server ping (every connection, every websocket.ping_interval): the most
// frequent client message at rest.
func BenchmarkDecodePong(b *testing.B) {
	for _, tt := range []struct {
		name  string
		codec Codec
		msg   []byte
	}{{"json", JSON, []byte("{}")}, {"protobuf", Protobuf, []byte{0}}} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tt.codec.DecodeCommands(tt.msg, func(c *Command) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
