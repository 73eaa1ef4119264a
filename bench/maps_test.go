package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"reflect"
	"testing"

	"github.com/gobwas/ws"

	"github.com/edgerelay/edgerelay/relay/protocol"
)

// TestMapsClientAgainstRelayCodecs: what the maps client sends is the
// map subscribe the relay reads (JSON and Protobuf), and it reads the
// relay's own encoding of map replies and pushes: a state page (phase,
// cursor, position, the entries' keys), the subscribing reply (phase 0),
// a map push with its key, the server ping, an error reply.
func TestMapsClientAgainstRelayCodecs(t *testing.T) {
	data := []byte(`{"seq":1,"t":123,"pad":"oo"}`)
	for _, tt := range []struct {
		name  string
		codec protocol.Codec
	}{{"json", protocol.JSON}, {"protobuf", protocol.Protobuf}} {
		t.Run(tt.name, func(t *testing.T) {
			pb := tt.name == "protobuf"
			// Commands.
			var cmd []byte
			if pb {
				cmd = pbAppendMapSubscribe(nil, 7, "bench:map:m", 2, "k0009", 10, "ep", 42)
			} else {
				cmd, _ = json.Marshal(map[string]any{"id": 7, "subscribe": mapCommand{Channel: "bench:map:m", Type: 1, Phase: 2,
					Cursor: "k0009", Limit: 10, Epoch: "ep", Offset: 42, Flag: 1}})
			}
			var got *protocol.SubscribeRequest
			if err := tt.codec.DecodeCommands(cmd, func(c *protocol.Command) error {
				if c.ID == 7 && c.Subscribe != nil {
					cp := *c.Subscribe
					got = &cp
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			want := protocol.SubscribeRequest{Channel: "bench:map:m", Type: protocol.SubscribeTypeMap, Phase: protocol.PhaseState, Cursor: "k0009",
				Limit: 10, Epoch: "ep", Offset: 42, Flag: protocol.FlagChannelCompaction}
			if got == nil || !reflect.DeepEqual(*got, want) {
				t.Fatalf("the relay reads %q as %+v, want %+v", cmd, got, want)
			}

			// Replies, one frame each but the first two in one frame.
			var frames [][]byte
			page := tt.codec.AppendReply(nil, &protocol.Reply{ID: 2, Subscribe: &protocol.SubscribeResult{Type: 1, Phase: protocol.PhaseState,
				Cursor: "k2", Epoch: "ep", Offset: 42, State: []protocol.Publication{{Key: "k0", Data: data, Offset: 3}, {Key: "k1", Data: data, Offset: 9}}}})
			live := tt.codec.AppendReply(nil, &protocol.Reply{ID: 3, Subscribe: &protocol.SubscribeResult{Type: 1, Phase: protocol.PhaseLive,
				Epoch: "ep", Offset: 44, Recoverable: true}})
			if pb {
				frames = append(frames, append(page, live...))
			} else {
				frames = append(frames, append(append(page, '\n'), live...))
			}
			frames = append(frames, tt.codec.Ping(),
				tt.codec.AppendReply(nil, &protocol.Reply{Push: &protocol.Push{Channel: "bench:map:m", Pub: &protocol.Publication{Key: "k1", Data: data, Offset: 45}}}),
				tt.codec.AppendReply(nil, &protocol.Reply{ID: 4, Error: &protocol.Error{Code: 106, Message: "limit exceeded"}}))
			var stream bytes.Buffer
			for _, f := range frames {
				op := ws.OpText
				if pb {
					op = ws.OpBinary
				}
				ws.WriteFrame(&stream, ws.NewFrame(op, true, f))
			}
			client, server := net.Pipe()
			defer client.Close()
			go func() { // the pong the client writes
				b := make([]byte, 64)
				for {
					if _, err := server.Read(b); err != nil {
						return
					}
				}
			}()
			total := int64(stream.Len())
			c := &mapConn{conn: client, br: bufio.NewReader(&stream), protobuf: pb}

			r, err := c.reply(2)
			if err != nil || r.phase != 2 || r.cursor != "k2" || r.epoch != "ep" || r.offset != 42 || !reflect.DeepEqual(r.keys, []string{"k0", "k1"}) {
				t.Fatalf("state page: %+v, %v", r, err)
			}
			if r, err = c.reply(3); err != nil || r.phase != 0 || r.epoch != "ep" || r.offset != 44 || len(r.keys) != 0 {
				t.Fatalf("subscribed: %+v, %v", r, err)
			}
			if _, r, err = c.read(); err != nil || !r.isPing {
				t.Fatalf("ping: %+v, %v", r, err)
			}
			if _, r, err = c.read(); err != nil || !r.isPush || !r.hasKey || !bytes.Contains(r.data, data) {
				t.Fatalf("map push: %+v, %v", r, err)
			}
			if ts, ok := intAfter(r.data, keyT); !ok || ts != 123 {
				t.Fatalf("push time %d, %v", ts, ok)
			}
			if _, err := c.reply(4); err == nil || !bytes.Contains([]byte(err.Error()), []byte("error 106")) {
				t.Fatalf("error reply: %v", err)
			}
			if c.in != total {
				t.Fatalf("wire bytes read: counted %d of %d", c.in, total)
			}
		})
	}
}
