package sdkgo_test

// Interop of the relay's hand-written Protobuf codec (relay/protocol) with
// the generated code of github.com/centrifugal/protocol, the package the
// Go SDK encodes and decodes with (client.proto, vtprotobuf): the relay's
// replies and pushes decode with (*cp.Reply).UnmarshalVT to exactly the
// messages meant, and Commands marshalled by the generated code decode
// with protocol.Protobuf.DecodeCommands to the same fields.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	cp "github.com/centrifugal/protocol"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/edgerelay/edgerelay/relay/protocol"
)

// splitDelimited splits a server message into its varint-length-delimited
// messages; it fails on a truncated length or one past the end.
func splitDelimited(t *testing.T, msg []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(msg) > 0 {
		n, l := protowire.ConsumeVarint(msg)
		if l < 0 {
			t.Fatalf("truncated length varint: % x", msg)
		}
		msg = msg[l:]
		if n > uint64(len(msg)) {
			t.Fatalf("length %d past the end of the message (%d bytes left)", n, len(msg))
		}
		out = append(out, msg[:n])
		msg = msg[n:]
	}
	return out
}

// decodeReplies decodes every delimited Reply of msg with the generated
// code.
func decodeReplies(t *testing.T, msg []byte) []*cp.Reply {
	t.Helper()
	var out []*cp.Reply
	for i, b := range splitDelimited(t, msg) {
		r := new(cp.Reply)
		if err := r.UnmarshalVT(b); err != nil {
			t.Fatalf("reply %d: UnmarshalVT: %v (% x)", i, err, b)
		}
		out = append(out, r)
	}
	return out
}

// checkReply checks that the single delimited Reply in msg decodes to
// want, field for field; if canonical, also that its bytes are exactly
// what the generated code writes for want (field order; no map with two
// entries, whose order Go leaves open).
func checkReply(t *testing.T, msg []byte, want *cp.Reply, canonical bool) {
	t.Helper()
	parts := splitDelimited(t, msg)
	if len(parts) != 1 {
		t.Fatalf("%d delimited messages, want 1: % x", len(parts), msg)
	}
	got := new(cp.Reply)
	if err := got.UnmarshalVT(parts[0]); err != nil {
		t.Fatalf("UnmarshalVT: %v (% x)", err, parts[0])
	}
	if !proto.Equal(got, want) {
		t.Fatalf("decoded\n\t%v\nwant\n\t%v", got, want)
	}
	if len(got.ProtoReflect().GetUnknown()) > 0 {
		t.Errorf("unknown fields in the reply: % x", got.ProtoReflect().GetUnknown())
	}
	if canonical {
		gen, err := want.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(parts[0], gen) {
			t.Errorf("relay bytes\n\t% x\ngenerated code's\n\t% x", parts[0], gen)
		}
	}
}

const wireChannel = "odds:football:epl:match-123:1x2"

func TestProtobufPushesDecodeWithGeneratedCode(t *testing.T) {
	odds := []byte(sdkValue(7))
	big := []byte(`{"note":"` + strings.Repeat("x", 70000) + `"}`) // lengths of three varint bytes
	binary := []byte{0x00, 0xff, 0x0a, 0x80, '"', '\\'}            // raw bytes, no escaping
	patch := []byte("2S\n1b@0,2V:\"odds\":2.07,1N@2m,4R;")

	tests := []struct {
		name string
		msg  []byte
		want *cp.Reply
	}{
		{"named", protocol.Protobuf.AppendPublicationPush(nil, wireChannel, 0, odds, 1043),
			&cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: odds, Offset: 1043}}}},
		{"compact id", protocol.Protobuf.AppendPublicationPush(nil, wireChannel, 17, odds, 1043),
			&cp.Reply{Push: &cp.Push{Id: 17, Pub: &cp.Publication{Data: odds, Offset: 1043}}}},
		{"largest id and offset", protocol.Protobuf.AppendPublicationPush(nil, "", 1<<32-1, odds, 1<<64-1),
			&cp.Reply{Push: &cp.Push{Id: 1<<32 - 1, Pub: &cp.Publication{Data: odds, Offset: 1<<64 - 1}}}},
		{"no offset", protocol.Protobuf.AppendPublicationPush(nil, wireChannel, 0, odds, 0),
			&cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: odds}}}},
		{"empty data", protocol.Protobuf.AppendPublicationPush(nil, wireChannel, 3, nil, 9),
			&cp.Reply{Push: &cp.Push{Id: 3, Pub: &cp.Publication{Offset: 9}}}},
		{"empty publication", protocol.Protobuf.AppendPublicationPush(nil, "", 0, nil, 0),
			&cp.Reply{Push: &cp.Push{Pub: &cp.Publication{}}}},
		{"70 KB data", protocol.Protobuf.AppendPublicationPush(nil, wireChannel, 0, big, 1<<21),
			&cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: big, Offset: 1 << 21}}}},
		{"binary data", protocol.Protobuf.AppendPublicationPush(nil, wireChannel, 200, binary, 128),
			&cp.Reply{Push: &cp.Push{Id: 200, Pub: &cp.Publication{Data: binary, Offset: 128}}}},
		{"delta patch named", protocol.Protobuf.AppendDeltaPush(nil, wireChannel, 0, patch, 1044, true),
			&cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: patch, Offset: 1044, Delta: true}}}},
		{"delta patch compact", protocol.Protobuf.AppendDeltaPush(nil, "", 17, patch, 1044, true),
			&cp.Reply{Push: &cp.Push{Id: 17, Pub: &cp.Publication{Data: patch, Offset: 1044, Delta: true}}}},
		{"delta full", protocol.Protobuf.AppendDeltaPush(nil, wireChannel, 17, odds, 1045, false),
			&cp.Reply{Push: &cp.Push{Id: 17, Pub: &cp.Publication{Data: odds, Offset: 1045}}}},
		{"server ping", append([]byte(nil), protocol.Protobuf.Ping()...), &cp.Reply{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkReply(t, tt.msg, tt.want, true) })
	}
	// With tags (map order varies: not canonical).
	tags := map[string]string{"group": "main", "empty": "", "ünï": "\"quoted\""}
	for _, tt := range []struct {
		name string
		push protocol.PubPush
		want *cp.Publication
	}{
		{"tags", protocol.PubPush{Channel: wireChannel, Data: odds, Offset: 1043, Tags: tags},
			&cp.Publication{Data: odds, Offset: 1043, Tags: tags}},
		{"tags on a patch", protocol.PubPush{ID: 17, Data: patch, Offset: 1044, Tags: map[string]string{"k": "v"}, Delta: true, Patch: true},
			&cp.Publication{Data: patch, Offset: 1044, Tags: map[string]string{"k": "v"}, Delta: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := &cp.Reply{Push: &cp.Push{Channel: tt.push.Channel, Id: int64(tt.push.ID), Pub: tt.want}}
			checkReply(t, protocol.Protobuf.AppendPush(nil, tt.push), want, len(tt.push.Tags) < 2)
		})
	}

	// Appended after other bytes (a reused buffer): the push is a message
	// of its own.
	msg := protocol.Protobuf.AppendPublicationPush([]byte{0x00}, wireChannel, 5, odds, 6)
	got := decodeReplies(t, msg)
	if len(got) != 2 || !proto.Equal(got[0], &cp.Reply{}) ||
		!proto.Equal(got[1], &cp.Reply{Push: &cp.Push{Id: 5, Pub: &cp.Publication{Data: odds, Offset: 6}}}) {
		t.Errorf("ping then push: decoded %v", got)
	}
}

func TestProtobufRepliesDecodeWithGeneratedCode(t *testing.T) {
	odds1, odds2 := []byte(sdkValue(1)), []byte(sdkValue(2))
	bet := []byte(`{"bet_id":"b-1","topic":"bets","partition":2,"offset":40,"received_at":"2026-01-02T03:04:05Z"}`)

	tests := []struct {
		name      string
		reply     *protocol.Reply
		want      *cp.Reply
		canonical bool
	}{
		{"connect", &protocol.Reply{ID: 1, Connect: &protocol.ConnectResult{
			Client: "5b1f3b9e-2d5c-4a8e-9c1e-3f1c2b7d8e90", Version: "0.9.0", Expires: true, TTL: 3600,
			Data: json.RawMessage(`{"user":"gopher"}`), Ping: 25, Pong: true, Node: "edge-1"}},
			&cp.Reply{Id: 1, Connect: &cp.ConnectResult{
				Client: "5b1f3b9e-2d5c-4a8e-9c1e-3f1c2b7d8e90", Version: "0.9.0", Expires: true, Ttl: 3600,
				Data: cp.Raw(`{"user":"gopher"}`), Ping: 25, Pong: true, Node: "edge-1"}}, true},
		{"connect minimal", &protocol.Reply{ID: 1, Connect: &protocol.ConnectResult{Client: "c"}},
			&cp.Reply{Id: 1, Connect: &cp.ConnectResult{Client: "c"}}, true},
		{"subscribe", &protocol.Reply{ID: 2, Subscribe: &protocol.SubscribeResult{
			Recoverable: true, Epoch: "e1e21a88-4", Offset: 1043, Positioned: true, Recovered: true, WasRecovering: true,
			Delta: true, ID: 17, Publications: []protocol.Publication{
				{Data: odds1, Offset: 1042, Tags: map[string]string{"priority": "1"}},
				{Data: odds2, Offset: 1043},
				{Offset: 1044},
			}}},
			&cp.Reply{Id: 2, Subscribe: &cp.SubscribeResult{
				Recoverable: true, Epoch: "e1e21a88-4", Offset: 1043, Positioned: true, Recovered: true, WasRecovering: true,
				Delta: true, Id: 17, Publications: []*cp.Publication{
					{Data: odds1, Offset: 1042, Tags: map[string]string{"priority": "1"}},
					{Data: odds2, Offset: 1043},
					{Offset: 1044},
				}}}, true},
		{"subscribe two tags", &protocol.Reply{ID: 3, Subscribe: &protocol.SubscribeResult{
			Publications: []protocol.Publication{{Data: odds1, Offset: 7, Tags: map[string]string{"a": "1", "b": ""}}}}},
			&cp.Reply{Id: 3, Subscribe: &cp.SubscribeResult{
				Publications: []*cp.Publication{{Data: odds1, Offset: 7, Tags: map[string]string{"a": "1", "b": ""}}}}}, false},
		{"subscribe empty", &protocol.Reply{ID: 4, Subscribe: &protocol.SubscribeResult{}},
			&cp.Reply{Id: 4, Subscribe: &cp.SubscribeResult{}}, true},
		{"history", &protocol.Reply{ID: 5, History: &protocol.HistoryResult{
			Publications: []protocol.Publication{{Data: odds1, Offset: 1 << 40}, {Data: odds2, Offset: 1<<40 + 3}},
			Epoch:        "odds-4", Offset: 1<<40 + 3}},
			&cp.Reply{Id: 5, History: &cp.HistoryResult{
				Publications: []*cp.Publication{{Data: odds1, Offset: 1 << 40}, {Data: odds2, Offset: 1<<40 + 3}},
				Epoch:        "odds-4", Offset: 1<<40 + 3}}, true},
		{"history position only", &protocol.Reply{ID: 6, History: &protocol.HistoryResult{Epoch: "odds-4", Offset: 9}},
			&cp.Reply{Id: 6, History: &cp.HistoryResult{Epoch: "odds-4", Offset: 9}}, true},
		{"history empty", &protocol.Reply{ID: 6, History: &protocol.HistoryResult{}},
			&cp.Reply{Id: 6, History: &cp.HistoryResult{}}, true},
		{"rpc", &protocol.Reply{ID: 7, RPC: &protocol.RPCResult{Data: bet}},
			&cp.Reply{Id: 7, Rpc: &cp.RPCResult{Data: bet}}, true},
		{"rpc no data", &protocol.Reply{ID: 7, RPC: &protocol.RPCResult{}},
			&cp.Reply{Id: 7, Rpc: &cp.RPCResult{}}, true},
		{"error", &protocol.Reply{ID: 8, Error: protocol.ErrMethodNotFound},
			&cp.Reply{Id: 8, Error: &cp.Error{Code: 104, Message: "method not found"}}, true},
		{"error temporary", &protocol.Reply{ID: 9, Error: protocol.ErrInternal},
			&cp.Reply{Id: 9, Error: &cp.Error{Code: 100, Message: "internal server error", Temporary: true}}, true},
		{"error with detail", &protocol.Reply{ID: 1<<32 - 1, Error: protocol.ErrBadRequest.WithMessage("channel: empty segment")},
			&cp.Reply{Id: 1<<32 - 1, Error: &cp.Error{Code: 107, Message: "bad request: channel: empty segment"}}, true},
		{"ping", &protocol.Reply{ID: 10, Ping: &struct{}{}},
			&cp.Reply{Id: 10, Ping: &cp.PingResult{}}, true},
		{"unsubscribe", &protocol.Reply{ID: 11, Unsubscribe: &struct{}{}},
			&cp.Reply{Id: 11, Unsubscribe: &cp.UnsubscribeResult{}}, true},
		{"subscribe push", &protocol.Reply{Push: &protocol.Push{Channel: wireChannel, Subscribe: &protocol.SubscribePush{Recoverable: true, Epoch: "e-1", Offset: 9}}},
			&cp.Reply{Push: &cp.Push{Channel: wireChannel, Subscribe: &cp.Subscribe{Recoverable: true, Epoch: "e-1", Offset: 9}}}, true},
		{"publication push in a reply batch", &protocol.Reply{Push: &protocol.Push{Channel: wireChannel, Pub: &protocol.Publication{Data: []byte(`{"v":1}`), Offset: 9}}},
			&cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: cp.Raw(`{"v":1}`), Offset: 9}}}, true},
		{"map state page", &protocol.Reply{ID: 20, Subscribe: &protocol.SubscribeResult{
			Epoch: "e-1", Offset: 44, Type: 1, Phase: 2, Cursor: "ou", State: []protocol.Publication{
				{Data: odds1, Offset: 40, Key: "1x2"}, {Data: odds2, Offset: 44, Key: "ou"}}}},
			&cp.Reply{Id: 20, Subscribe: &cp.SubscribeResult{
				Epoch: "e-1", Offset: 44, Type: 1, Phase: 2, Cursor: "ou", State: []*cp.Publication{
					{Data: odds1, Offset: 40, Key: "1x2"}, {Data: odds2, Offset: 44, Key: "ou"}}}}, true},
		{"map live", &protocol.Reply{ID: 21, Subscribe: &protocol.SubscribeResult{
			Recoverable: true, Recovered: true, WasRecovering: true, Epoch: "e-1", Offset: 46, Type: 1, Phase: 0,
			Publications: []protocol.Publication{{Offset: 45, Key: "btts", Removed: true}, {Data: odds1, Offset: 46, Key: "1x2"}}}},
			&cp.Reply{Id: 21, Subscribe: &cp.SubscribeResult{
				Recoverable: true, Recovered: true, WasRecovering: true, Epoch: "e-1", Offset: 46, Type: 1,
				Publications: []*cp.Publication{{Offset: 45, Key: "btts", Removed: true}, {Data: odds1, Offset: 46, Key: "1x2"}}}}, true},
		{"map entry push", &protocol.Reply{Push: &protocol.Push{Channel: "odds:football:epl:match-123", Pub: &protocol.Publication{Data: odds1, Offset: 47, Key: "1x2"}}},
			&cp.Reply{Push: &cp.Push{Channel: "odds:football:epl:match-123", Pub: &cp.Publication{Data: odds1, Offset: 47, Key: "1x2"}}}, true},
		{"map removal push", &protocol.Reply{Push: &protocol.Push{Channel: "odds:football:epl:match-123", Pub: &protocol.Publication{Offset: 48, Key: "1x2", Removed: true}}},
			&cp.Reply{Push: &cp.Push{Channel: "odds:football:epl:match-123", Pub: &cp.Publication{Offset: 48, Key: "1x2", Removed: true}}}, true},
		{"unsubscribe push", &protocol.Reply{Push: &protocol.Push{Channel: "odds:football:epl:match-123", Unsubscribe: &protocol.UnsubscribePush{Code: 2100, Reason: "map over its limit"}}},
			&cp.Reply{Push: &cp.Push{Channel: "odds:football:epl:match-123", Unsubscribe: &cp.Unsubscribe{Code: 2100, Reason: "map over its limit"}}}, true},
		{"presence", &protocol.Reply{ID: 13, Presence: &protocol.PresenceResult{Presence: map[string]protocol.ClientInfo{
			"c-1": {User: "alice", Client: "c-1"}, "c-2": {User: "", Client: "c-2"}}}},
			&cp.Reply{Id: 13, Presence: &cp.PresenceResult{Presence: map[string]*cp.ClientInfo{
				"c-1": {User: "alice", Client: "c-1"}, "c-2": {Client: "c-2"}}}}, false},
		{"presence empty", &protocol.Reply{ID: 14, Presence: &protocol.PresenceResult{}},
			&cp.Reply{Id: 14, Presence: &cp.PresenceResult{}}, true},
		{"presence stats", &protocol.Reply{ID: 15, PresenceStats: &protocol.PresenceStatsResult{NumClients: 70000, NumUsers: 3}},
			&cp.Reply{Id: 15, PresenceStats: &cp.PresenceStatsResult{NumClients: 70000, NumUsers: 3}}, true},
		{"refresh", &protocol.Reply{ID: 12, Refresh: &protocol.RefreshResult{Client: "c-1", Version: "v1", Expires: true, TTL: 3600}},
			&cp.Reply{Id: 12, Refresh: &cp.RefreshResult{Client: "c-1", Version: "v1", Expires: true, Ttl: 3600}}, true},
	}
	var all []byte
	var allWant []*cp.Reply
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkReply(t, protocol.Protobuf.AppendReply(nil, tt.reply), tt.want, tt.canonical)
		})
		all = protocol.Protobuf.AppendReply(all, tt.reply)
		allWant = append(allWant, tt.want)
	}

	// Several replies in one message (replies to the commands of one
	// client message), then a push after them.
	all = protocol.Protobuf.AppendPublicationPush(all, "", 17, odds2, 1043)
	allWant = append(allWant, &cp.Reply{Push: &cp.Push{Id: 17, Pub: &cp.Publication{Data: odds2, Offset: 1043}}})
	got := decodeReplies(t, all)
	if len(got) != len(allWant) {
		t.Fatalf("one message of %d replies and a push: decoded %d", len(allWant)-1, len(got))
	}
	for i := range got {
		if !proto.Equal(got[i], allWant[i]) {
			t.Errorf("message %d: decoded\n\t%v\nwant\n\t%v", i, got[i], allWant[i])
		}
	}
}

func TestProtobufCommandsFromGeneratedCode(t *testing.T) {
	token := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJnb3BoZXIifQ.c2ln"
	betData := []byte(`{"bet_id":"b-1","channel":"odds:a","selection":"home","odds":2.05,"stake":5}`)

	tests := []struct {
		name string
		cmd  *cp.Command
		want *protocol.Command
	}{
		{"connect", &cp.Command{Id: 1, Connect: &cp.ConnectRequest{Token: token, Name: "go", Version: "0.12.1"}},
			&protocol.Command{ID: 1, Connect: &protocol.ConnectRequest{Token: token, Name: "go", Version: "0.12.1"}}},
		{"connect with data and fields the relay skips", &cp.Command{Id: 1, Connect: &cp.ConnectRequest{
			Token: token, Data: cp.Raw(`{"app":"web"}`), Name: "js", Version: "5.0.0",
			Subs:    map[string]*cp.SubscribeRequest{"odds:a": {Recover: true, Epoch: "e", Offset: 4}},
			Headers: map[string]string{"Authorization": "x"}, Flag: 3, Dict: "d1", Profile: "p"}},
			&protocol.Command{ID: 1, Connect: &protocol.ConnectRequest{Token: token, Data: json.RawMessage(`{"app":"web"}`), Name: "js", Version: "5.0.0"}}},
		{"connect empty", &cp.Command{Id: 1, Connect: &cp.ConnectRequest{}},
			&protocol.Command{ID: 1, Connect: &protocol.ConnectRequest{}}},
		{"subscribe", &cp.Command{Id: 2, Subscribe: &cp.SubscribeRequest{Channel: wireChannel, Flag: 1}},
			&protocol.Command{ID: 2, Subscribe: &protocol.SubscribeRequest{Channel: wireChannel, Flag: protocol.FlagChannelCompaction}}},
		{"subscribe recover delta", &cp.Command{Id: 3, Subscribe: &cp.SubscribeRequest{
			Channel: wireChannel, Token: "sub-token", Recover: true, Epoch: "e1e21a88-4", Offset: 1<<64 - 1,
			Data: cp.Raw(`{}`), Positioned: true, Recoverable: true, JoinLeave: true, Delta: "fossil", Flag: 1,
			Tf: &cp.FilterNode{Op: "", Key: "k", Cmp: "eq", Val: "v"}, Type: 1, Limit: 5, Asc: true}},
			&protocol.Command{ID: 3, Subscribe: &protocol.SubscribeRequest{
				Channel: wireChannel, Token: "sub-token", Recover: true, Epoch: "e1e21a88-4", Offset: 1<<64 - 1,
				Data: json.RawMessage(`{}`), Positioned: true, Recoverable: true, JoinLeave: true, Delta: "fossil", Flag: 1,
				TF: &protocol.FilterNode{Key: "k", Cmp: "eq", Val: "v"}, Type: 1, Limit: 5}}},
		{"subscribe tag filter tree", &cp.Command{Id: 3, Subscribe: &cp.SubscribeRequest{Channel: wireChannel, Tf: &cp.FilterNode{
			Op: "and", Nodes: []*cp.FilterNode{
				{Key: "group", Cmp: "in", Vals: []string{"main", "top", ""}},
				{Op: "not", Nodes: []*cp.FilterNode{{Key: "suspended", Cmp: "ex"}}},
				{Key: "price", Cmp: "gte", Val: "1.5"},
			}}}},
			&protocol.Command{ID: 3, Subscribe: &protocol.SubscribeRequest{Channel: wireChannel, TF: &protocol.FilterNode{
				Op: "and", Nodes: []protocol.FilterNode{
					{Key: "group", Cmp: "in", Vals: []string{"main", "top", ""}},
					{Op: "not", Nodes: []protocol.FilterNode{{Key: "suspended", Cmp: "ex"}}},
					{Key: "price", Cmp: "gte", Val: "1.5"},
				}}}}},
		{"subscribe map state page", &cp.Command{Id: 3, Subscribe: &cp.SubscribeRequest{
			Channel: "odds:football:epl:match-123", Type: 1, Phase: 2, Cursor: "1x2", Limit: 100, Epoch: "e-1", Offset: 9}},
			&protocol.Command{ID: 3, Subscribe: &protocol.SubscribeRequest{
				Channel: "odds:football:epl:match-123", Type: 1, Phase: 2, Cursor: "1x2", Limit: 100, Epoch: "e-1", Offset: 9}}},
		{"subscribe negative flag", &cp.Command{Id: 4, Subscribe: &cp.SubscribeRequest{Channel: "odds:a", Flag: -2}},
			&protocol.Command{ID: 4, Subscribe: &protocol.SubscribeRequest{Channel: "odds:a", Flag: -2}}},
		{"unsubscribe", &cp.Command{Id: 5, Unsubscribe: &cp.UnsubscribeRequest{Channel: wireChannel}},
			&protocol.Command{ID: 5, Unsubscribe: &protocol.UnsubscribeRequest{Channel: wireChannel}}},
		{"history since, all, reverse", &cp.Command{Id: 6, History: &cp.HistoryRequest{
			Channel: wireChannel, Limit: -1, Since: &cp.StreamPosition{Offset: 1 << 40, Epoch: "e1e21a88-4"}, Reverse: true}},
			&protocol.Command{ID: 6, History: &protocol.HistoryRequest{
				Channel: wireChannel, Limit: -1, Since: &protocol.StreamPosition{Offset: 1 << 40, Epoch: "e1e21a88-4"}, Reverse: true}}},
		{"history limit", &cp.Command{Id: 7, History: &cp.HistoryRequest{Channel: wireChannel, Limit: 10}},
			&protocol.Command{ID: 7, History: &protocol.HistoryRequest{Channel: wireChannel, Limit: 10}}},
		{"history since the start", &cp.Command{Id: 8, History: &cp.HistoryRequest{Channel: wireChannel, Limit: -2147483648, Since: &cp.StreamPosition{}}},
			&protocol.Command{ID: 8, History: &protocol.HistoryRequest{Channel: wireChannel, Limit: -2147483648, Since: &protocol.StreamPosition{}}}},
		{"rpc", &cp.Command{Id: 9, Rpc: &cp.RPCRequest{Method: "bet", Data: betData}},
			&protocol.Command{ID: 9, RPC: &protocol.RPCRequest{Method: "bet", Data: betData}}},
		{"rpc no data", &cp.Command{Id: 10, Rpc: &cp.RPCRequest{Method: "nope"}},
			&protocol.Command{ID: 10, RPC: &protocol.RPCRequest{Method: "nope"}}},
		{"ping", &cp.Command{Id: 11, Ping: &cp.PingRequest{}},
			&protocol.Command{ID: 11, Ping: &struct{}{}}},
		{"publish", &cp.Command{Id: 12, Publish: &cp.PublishRequest{Channel: wireChannel, Data: cp.Raw(`{"odds":1}`)}},
			&protocol.Command{ID: 12, Publish: &struct{}{}}},
		{"presence", &cp.Command{Id: 13, Presence: &cp.PresenceRequest{Channel: wireChannel}},
			&protocol.Command{ID: 13, Presence: &protocol.ChannelRequest{Channel: wireChannel}}},
		{"presence stats", &cp.Command{Id: 14, PresenceStats: &cp.PresenceStatsRequest{Channel: wireChannel}},
			&protocol.Command{ID: 14, PresenceStats: &protocol.ChannelRequest{Channel: wireChannel}}},
		{"refresh", &cp.Command{Id: 15, Refresh: &cp.RefreshRequest{Token: token}},
			&protocol.Command{ID: 15, Refresh: &protocol.RefreshRequest{Token: token}}},
		{"sub refresh", &cp.Command{Id: 16, SubRefresh: &cp.SubRefreshRequest{Channel: wireChannel, Token: token}},
			&protocol.Command{ID: 16, SubRefresh: &protocol.SubRefreshRequest{Channel: wireChannel, Token: token}}},
		{"send", &cp.Command{Send: &cp.SendRequest{Data: cp.Raw(`"hi"`)}},
			&protocol.Command{Send: &struct{}{}}},
		{"largest id", &cp.Command{Id: 1<<32 - 1, Ping: &cp.PingRequest{}},
			&protocol.Command{ID: 1<<32 - 1, Ping: &struct{}{}}},
		{"pong (empty command)", &cp.Command{}, &protocol.Command{}},
	}

	decode := func(t *testing.T, msg []byte) []*protocol.Command {
		t.Helper()
		var got []*protocol.Command
		if err := protocol.Protobuf.DecodeCommands(msg, func(c *protocol.Command) error {
			got = append(got, c)
			return nil
		}); err != nil {
			t.Fatalf("DecodeCommands: %v (% x)", err, msg)
		}
		return got
	}
	marshal := func(t *testing.T, c *cp.Command) []byte {
		t.Helper()
		b, err := c.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	var all []byte
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := protowire.AppendBytes(nil, marshal(t, tt.cmd))
			got := decode(t, msg)
			if len(got) != 1 {
				t.Fatalf("%d commands, want 1", len(got))
			}
			if !reflect.DeepEqual(got[0], tt.want) {
				t.Fatalf("decoded %s, want %s", fmtCommand(got[0]), fmtCommand(tt.want))
			}
			if got[0].IsPong() != (tt.cmd.Id == 0 && tt.cmd.Send == nil) {
				t.Errorf("IsPong %v for %v", got[0].IsPong(), tt.cmd)
			}
		})
		all = protowire.AppendBytes(all, marshal(t, tt.cmd))
	}

	// Every command, delimited, in one client message (as the SDKs batch
	// connect and their subscribes).
	got := decode(t, all)
	if len(got) != len(tests) {
		t.Fatalf("one message of %d commands: decoded %d", len(tests), len(got))
	}
	for i, tt := range tests {
		if !reflect.DeepEqual(got[i], tt.want) {
			t.Errorf("command %d (%s) in one message: decoded %s, want %s", i, tt.name, fmtCommand(got[i]), fmtCommand(tt.want))
		}
	}
}

// fmtCommand shows a command with its method's fields.
func fmtCommand(c *protocol.Command) string {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Sprintf("%+v", *c)
	}
	return string(b)
}

// benchSink keeps the benchmarks' results alive.
var benchSink []byte

// benchPayload is an odds-like JSON value of exactly size bytes.
func benchPayload(size int) []byte {
	v := []byte(sdkValue(1))
	head := v[:bytes.LastIndex(v, []byte(`"note":"`))+len(`"note":"`)]
	if len(head)+2 > size {
		return bytes.Repeat([]byte("x"), size)
	}
	out := append([]byte(nil), head...)
	out = append(out, bytes.Repeat([]byte("y"), size-len(head)-2)...)
	return append(out, '"', '}')
}

// BenchmarkPushProtobuf compares, per payload size, encoding one
// publication push (a named push with an offset, delimited as sent):
//
//	relay         protocol.Protobuf.AppendPublicationPush into a reused buffer
//	vtproto       generated code: build cp.Reply{Push{Channel, Pub{Data, Offset}}}, MarshalVT
//	vtproto-reuse the same, but SizeVT and MarshalToSizedBufferVT into a reused buffer
//	proto.Marshal the same Reply with google.golang.org/protobuf (reflection)
//
// The generated variants write the bare Reply (no length prefix): a
// little less work than the relay does.
func BenchmarkPushProtobuf(b *testing.B) {
	const offset = 1_234_567
	for _, size := range []int{300, 1000, 2000} {
		data := benchPayload(size)
		if len(data) != size || !json.Valid(data) {
			b.Fatalf("payload of %d bytes, want %d valid JSON", len(data), size)
		}
		// The encoders agree.
		want, err := (&cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: data, Offset: offset}}}).MarshalVT()
		if err != nil {
			b.Fatal(err)
		}
		if got := protocol.Protobuf.AppendPublicationPush(nil, wireChannel, 0, data, offset); !bytes.Equal(got, protowire.AppendBytes(nil, want)) {
			b.Fatalf("relay and generated encodings differ:\n% x\n% x", got, want)
		}

		b.Run(fmt.Sprintf("size=%d/relay", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var buf []byte
			for b.Loop() {
				buf = protocol.Protobuf.AppendPublicationPush(buf[:0], wireChannel, 0, data, offset)
			}
			benchSink = buf
		})
		b.Run(fmt.Sprintf("size=%d/vtproto", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				r := &cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: data, Offset: offset}}}
				out, err := r.MarshalVT()
				if err != nil {
					b.Fatal(err)
				}
				benchSink = out
			}
		})
		b.Run(fmt.Sprintf("size=%d/vtproto-reuse", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var buf []byte
			for b.Loop() {
				r := &cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: data, Offset: offset}}}
				n := r.SizeVT()
				if cap(buf) < n {
					buf = make([]byte, n)
				}
				buf = buf[:n]
				if _, err := r.MarshalToSizedBufferVT(buf); err != nil {
					b.Fatal(err)
				}
			}
			benchSink = buf
		})
		b.Run(fmt.Sprintf("size=%d/proto.Marshal", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				r := &cp.Reply{Push: &cp.Push{Channel: wireChannel, Pub: &cp.Publication{Data: data, Offset: offset}}}
				out, err := proto.Marshal(r)
				if err != nil {
					b.Fatal(err)
				}
				benchSink = out
			}
		})
	}
}
