package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

var rpcLines = []string{
	`{"id":7,"rpc":{"method":"bet","data":{"bet_id":"b-1","channel":"odds:a:b","selection":"home","odds":2.1,"stake":5}}}`,
	`{"rpc":{"data":{"x":[1,{"y":"}\"]"}]},"method":"bet"},"id":4294967295}`,
	`{"id":1,"rpc":{"method":"m"}}`,
	`{"id":1,"rpc":{"method":"","data":{}}}`,
	`{"id":0,"rpc":{"method":"bet","data":{"a":"b c"}}}`,
}

// Lines the fast path leaves to encoding/json (each decodes there, or fails).
var rpcLinesSlow = []string{
	`{"id":4294967296,"rpc":{"method":"bet"}}`,
	`{"id":-1,"rpc":{"method":"bet"}}`,
	`{"id":1.0,"rpc":{"method":"bet"}}`,
	`{"id":1e2,"rpc":{"method":"bet"}}`,
	`{"id":null,"rpc":{"method":"bet"}}`,
	`{"id":"1","rpc":{"method":"bet"}}`,
	`{"id": 1,"rpc":{"method":"bet"}}`,
	`{"id":1 ,"rpc":{"method":"bet"}}`,
	`{"ID":1,"rpc":{"method":"bet"}}`,
	`{"id":1,"id":2,"rpc":{"method":"bet"}}`,
	`{"id":1,"rpc":{"method":"bet"},"rpc":{"method":"other"}}`,
	`{"id":1,"rpc":{"method":"b\u0065t"}}`,
	`{"id":1,"rpc":{"method":"bet","Method":"x"}}`,
	`{"id":1,"rpc":{"method":"bet","data":null}}`,
	`{"id":1,"rpc":{"method":"bet","data":[1]}}`,
	`{"id":1,"rpc":{"method":null}}`,
	`{"id":1,"rpc":null}`,
	`{"id":1,"rpc":{"method":"bet"},"subscribe":{"channel":"x"}}`,
	`{"id":1}`,
	`{}`,
}

// fastMatchesUnmarshal fails t if decodeRPCFast takes line and decodes it
// otherwise than json.Unmarshal.
func fastMatchesUnmarshal(t *testing.T, line []byte) bool {
	t.Helper()
	if !json.Valid(line) {
		return false
	}
	var fast, slow Command
	if !decodeRPCFast(line, &fast) {
		return false
	}
	if err := json.Unmarshal(line, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%s: fast %+v %+v, json.Unmarshal %+v %+v (%v)", line, fast, fast.RPC, slow, slow.RPC, err)
	}
	return true
}

// TestDecodeRPCFast: the rpc commands the SDKs send are decoded without
// encoding/json's reflection, to what json.Unmarshal gives; everything
// else is left to it.
func TestDecodeRPCFast(t *testing.T) {
	for _, l := range rpcLines {
		if !fastMatchesUnmarshal(t, []byte(l)) {
			t.Errorf("not taken by the fast path: %s", l)
		}
	}
	for _, l := range rpcLinesSlow {
		if fastMatchesUnmarshal(t, []byte(l)) {
			t.Errorf("taken by the fast path: %s", l)
		}
	}
	// Through the codec, the data is the caller's copy.
	msg := []byte(rpcLines[0] + "\n" + rpcLinesSlow[8])
	var got []*Command
	if err := (jsonCodec{}).DecodeCommands(msg, func(c *Command) error { got = append(got, c); return nil }); err != nil || len(got) != 2 {
		t.Fatalf("DecodeCommands: %v, %d commands", err, len(got))
	}
	clear(msg)
	if got[0].ID != 7 || got[0].RPC.Method != "bet" || !json.Valid(got[0].RPC.Data) || got[1].RPC.Method != "bet" {
		t.Errorf("decoded %+v %+v", got[0].RPC, got[1].RPC)
	}
}

func FuzzDecodeRPCFast(f *testing.F) {
	for _, l := range append(rpcLines, rpcLinesSlow...) {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, line []byte) { fastMatchesUnmarshal(t, line) })
}

// TestAppendRPCReplyFast: rpc replies (a result's data, or an error) built
// without reflection are byte for byte json.Marshal's; the others are
// left to it.
func TestAppendRPCReplyFast(t *testing.T) {
	for i, tt := range []struct {
		r    Reply
		fast bool
	}{
		{Reply{ID: 9, RPC: &RPCResult{Data: json.RawMessage(`{"bet_id":"b-1","topic":"bets","partition":2,"offset":1043,"received_at":"2026-11-22T10:01:02.345Z"}`)}}, true},
		{Reply{ID: 1, RPC: &RPCResult{}}, true},
		{Reply{ID: 4294967295, Error: &Error{Code: 1003, Message: "too many bets, slow down", Temporary: true}}, true},
		{Reply{ID: 2, Error: &Error{Code: 1000, Message: "bet_id: required, 1 to 64 of A-Z a-z 0-9 . _ : -"}}, true},
		{Reply{ID: 2, Error: &Error{Code: 1000, Message: `odds: "x" <b>`}}, false},
		{Reply{ID: 2, Error: &Error{Code: 1000, Message: "é"}}, false},
		{Reply{ID: 3, RPC: &RPCResult{Data: json.RawMessage(`{"a": "<b>"}`)}}, false},
		{Reply{ID: 3, RPC: &RPCResult{Data: json.RawMessage("{\"a\":\"\u2028\"}")}}, false},
		{Reply{ID: 0, RPC: &RPCResult{Data: json.RawMessage(`{}`)}}, false},
		{Reply{ID: 4, RPC: &RPCResult{}, Error: &Error{Code: 1}}, false},
		{Reply{ID: 4, RPC: &RPCResult{}, Ping: &struct{}{}}, false},
		{Reply{ID: 4, Subscribe: &SubscribeResult{}}, false},
	} {
		want, err := json.Marshal(&tt.r)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendRPCReplyFast([]byte("x\n"), &tt.r)
		if ok != tt.fast {
			t.Errorf("%d: fast path %v, want %v", i, ok, tt.fast)
		}
		if ok && !bytes.Equal(got, append([]byte("x\n"), want...)) {
			t.Errorf("%d:\n got %s\nwant x\n%s", i, got, want)
		}
		if !ok && string(got) != "x\n" {
			t.Errorf("%d: left %q behind", i, got)
		}
		if full := (jsonCodec{}).AppendReply(nil, &tt.r); !bytes.Equal(full, want) {
			t.Errorf("%d: AppendReply %s, want %s", i, full, want)
		}
	}
}

// FuzzAppendRPCReplyFast: whatever the data or message, a reply the fast
// path builds is json.Marshal's, byte for byte.
func FuzzAppendRPCReplyFast(f *testing.F) {
	f.Add(uint32(9), []byte(`{"bet_id":"b-1","offset":1043}`), "", uint32(0), false)
	f.Add(uint32(2), []byte(nil), "too many bets, slow down", uint32(1003), true)
	f.Add(uint32(3), []byte("{\"a\":\"\u2028<\"}"), "", uint32(0), false)
	f.Fuzz(func(t *testing.T, id uint32, data []byte, message string, code uint32, temporary bool) {
		r := Reply{ID: id, RPC: &RPCResult{Data: data}}
		if message != "" {
			r = Reply{ID: id, Error: &Error{Code: code, Message: message, Temporary: temporary}}
		}
		got, ok := appendRPCReplyFast(nil, &r)
		if !ok {
			return
		}
		want, err := json.Marshal(&r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("fast path %s, json.Marshal %s (%v)", got, want, err)
		}
	})
}
