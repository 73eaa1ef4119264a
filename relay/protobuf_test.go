package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/encoding/protowire"
)

// A raw Protobuf client: commands are built field by field with protowire
// (field numbers of client.proto), replies decoded into pbReply. The SDK
// tests (tests/go, tests/js) check the same wire against the generated
// code and the stock clients; these tests aim at the edges.

type netConn interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
	SetReadDeadline(time.Time) error
}

// pbReply is the part of a Reply the tests look at.
type pbReply struct {
	ID        uint64
	ErrCode   uint64
	Connect   bool
	Subscribe *pbSubscribe
	Push      *pbPush
	Ping      bool
	RPCData   []byte
	Empty     bool // a server ping
}

type pbSubscribe struct {
	Epoch  string
	Offset uint64
	Pubs   []pbPub
	Delta  bool
}

type pbPush struct {
	Channel string
	ID      uint64
	Pub     pbPub
}

type pbPub struct {
	Data   []byte
	Offset uint64
	Delta  bool
}

func dialProtobuf(t testing.TB, url string) *wsClientPB {
	t.Helper()
	d := ws.Dialer{Protocols: []string{"centrifuge-protobuf"}}
	conn, _, hs, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if hs.Protocol != "centrifuge-protobuf" {
		t.Fatalf("101 echoed subprotocol %q", hs.Protocol)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClientPB{t: t, conn: conn}
}

type wsClientPB struct {
	t       testing.TB
	conn    netConn
	replies []pbReply
}

// command builds one Command: id, then method field num holding body.
func command(id uint32, method protowire.Number, body []byte) []byte {
	var b []byte
	if id != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), uint64(id))
	}
	if method != 0 {
		b = protowire.AppendBytes(protowire.AppendTag(b, method, protowire.BytesType), body)
	}
	return b
}

func pbStr(b []byte, num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func pbVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

// delimited joins commands as one Protobuf message.
func delimited(cmds ...[]byte) []byte {
	var b []byte
	for _, c := range cmds {
		b = protowire.AppendBytes(b, c)
	}
	return b
}

func (c *wsClientPB) sendRaw(op ws.OpCode, payload []byte) {
	c.t.Helper()
	if err := wsutil.WriteClientMessage(c.conn, op, payload); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClientPB) send(cmds ...[]byte) { c.sendRaw(ws.OpBinary, delimited(cmds...)) }

func (c *wsClientPB) next() (pbReply, error) {
	for len(c.replies) == 0 {
		c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		msgs, err := wsutil.ReadServerMessage(c.conn, nil)
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				return pbReply{}, closeError{ce.Code, ce.Reason}
			}
			return pbReply{}, err
		}
		for _, m := range msgs {
			switch m.OpCode {
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(m.Payload)
				return pbReply{}, closeError{code, reason}
			case ws.OpText:
				c.t.Fatalf("text frame on a Protobuf connection: %q", m.Payload)
			case ws.OpBinary:
				rs, err := decodePBReplies(m.Payload)
				if err != nil {
					c.t.Fatalf("server sent bad Protobuf %x: %v", m.Payload, err)
				}
				c.replies = append(c.replies, rs...)
			}
		}
	}
	r := c.replies[0]
	c.replies = c.replies[1:]
	return r, nil
}

func (c *wsClientPB) mustNext() pbReply {
	c.t.Helper()
	r, err := c.next()
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

func (c *wsClientPB) expectClose(code ws.StatusCode) {
	c.t.Helper()
	for {
		_, err := c.next()
		if err == nil {
			continue
		}
		var ce closeError
		if !errors.As(err, &ce) || ce.code != code || ce.reason == "" {
			c.t.Fatalf("want close %d with a reason, got %v", code, err)
		}
		return
	}
}

func (c *wsClientPB) connect() {
	c.t.Helper()
	c.send(command(1, 4, pbStr(nil, 4, "test")))
	if r := c.mustNext(); !r.Connect {
		c.t.Fatalf("connect reply %+v", r)
	}
}

// walkPB calls fn for each field of b.
func walkPB(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		var bs []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			bs, n = protowire.ConsumeBytes(b)
		default:
			return fmt.Errorf("unexpected wire type %d", typ)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, bs); err != nil {
			return err
		}
	}
	return nil
}

func decodePBPub(b []byte) (p pbPub, err error) {
	err = walkPB(b, func(num protowire.Number, _ protowire.Type, v uint64, bs []byte) error {
		switch num {
		case 4:
			p.Data = append([]byte(nil), bs...)
		case 6:
			p.Offset = v
		case 8:
			p.Delta = v != 0
		}
		return nil
	})
	return p, err
}

func decodePBReplies(msg []byte) ([]pbReply, error) {
	var out []pbReply
	for len(msg) > 0 {
		body, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		msg = msg[n:]
		r := pbReply{Empty: len(body) == 0}
		err := walkPB(body, func(num protowire.Number, _ protowire.Type, v uint64, bs []byte) error {
			switch num {
			case 1:
				r.ID = v
			case 2:
				return walkPB(bs, func(num protowire.Number, _ protowire.Type, v uint64, _ []byte) error {
					if num == 1 {
						r.ErrCode = v
					}
					return nil
				})
			case 4:
				r.Push = &pbPush{}
				return walkPB(bs, func(num protowire.Number, _ protowire.Type, v uint64, bs []byte) (err error) {
					switch num {
					case 1:
						r.Push.ID = v
					case 2:
						r.Push.Channel = string(bs)
					case 4:
						r.Push.Pub, err = decodePBPub(bs)
					}
					return err
				})
			case 5:
				r.Connect = true
			case 6:
				r.Subscribe = &pbSubscribe{}
				return walkPB(bs, func(num protowire.Number, _ protowire.Type, v uint64, bs []byte) error {
					switch num {
					case 6:
						r.Subscribe.Epoch = string(bs)
					case 7:
						p, err := decodePBPub(bs)
						r.Subscribe.Pubs = append(r.Subscribe.Pubs, p)
						return err
					case 9:
						r.Subscribe.Offset = v
					case 13:
						r.Subscribe.Delta = v != 0
					}
					return nil
				})
			case 12:
				r.Ping = true
			case 13:
				return walkPB(bs, func(num protowire.Number, _ protowire.Type, _ uint64, bs []byte) error {
					if num == 1 {
						r.RPCData = append([]byte(nil), bs...)
					}
					return nil
				})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// TestProtobufSession: connect, subscribe with the cached value, a live
// push, ping and an error reply, over the centrifuge-protobuf subprotocol
// and over ?format=protobuf.
func TestProtobufSession(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:pb-1:1x2"
	off := produce(t, prod, "odds", ch, `{"home":2.1}`)
	r.waitCached(t, ch, off)

	cached := `{"home":2.1}`
	for _, how := range []string{"subprotocol", "format"} {
		t.Run(how, func(t *testing.T) {
			var c *wsClientPB
			if how == "subprotocol" {
				c = dialProtobuf(t, r.url())
			} else {
				conn, _, _, err := ws.Dial(context.Background(), r.url()+"?format=protobuf")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				c = &wsClientPB{t: t, conn: conn}
			}
			c.connect()
			c.send(command(2, 5, pbStr(nil, 1, ch)), command(3, 11, nil))
			sub := c.mustNext()
			if sub.ID != 2 || sub.Subscribe == nil || len(sub.Subscribe.Pubs) != 1 || string(sub.Subscribe.Pubs[0].Data) != cached || sub.Subscribe.Offset != uint64(off)+1 {
				t.Fatalf("subscribe reply %+v", sub)
			}
			if p := c.mustNext(); p.ID != 3 || !p.Ping {
				t.Fatalf("ping reply %+v", p)
			}
			value := fmt.Sprintf(`{"home":2.%d,"how":%q}`, len(how), how)
			off2 := produce(t, prod, "odds", ch, value)
			cached, off = value, off2
			push := c.mustNext()
			if push.Push == nil || push.Push.Channel != ch || string(push.Push.Pub.Data) != value || push.Push.Pub.Offset != uint64(off2)+1 {
				t.Fatalf("push %+v", push)
			}
			c.send(command(4, 13, pbStr(nil, 2, "nope")))
			if e := c.mustNext(); e.ID != 4 || e.ErrCode != 104 {
				t.Fatalf("rpc reply %+v", e)
			}
		})
	}
}

// TestProtobufBadInput: each bad input on a Protobuf connection gets its
// documented reply or close code, while a bystander (JSON and Protobuf)
// keeps receiving.
func TestProtobufBadInput(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.MaxMessageBytes = 4096
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:pb-bad"

	bystander := dialProtobuf(t, r.url())
	bystander.connect()
	bystander.send(command(2, 5, pbStr(nil, 1, ch)))
	bystander.mustNext()

	id := func(n uint64) []byte { return pbVarint(nil, 1, n) }
	tests := []struct {
		name      string
		op        ws.OpCode
		payload   []byte
		wantError uint64        // reply error code; the connection carries on
		wantClose ws.StatusCode // or: close code
	}{
		{name: "text frame", op: ws.OpText, payload: []byte(`{"id":2,"ping":{}}`), wantClose: 3501},
		{name: "truncated length varint", payload: []byte{0xff, 0xff}, wantClose: 3501},
		{name: "length past the frame", payload: []byte{0x7f, 0x08, 0x02}, wantClose: 3501},
		{name: "length over max_message_bytes", payload: protowire.AppendVarint(nil, 1<<30), wantClose: 3501},
		{name: "message over max_message_bytes", payload: delimited(command(2, 13, pbStr(nil, 2, strings.Repeat("a", 5000)))), wantClose: ws.StatusMessageTooBig},
		{name: "wrong wire type", payload: delimited(pbStr(nil, 1, "two")), wantClose: 3501},
		{name: "wrong wire type in subscribe", payload: delimited(command(2, 5, pbVarint(nil, 1, 5))), wantClose: 3501},
		{name: "invalid UTF-8 channel", payload: delimited(command(2, 5, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xc3, 0x28}))), wantClose: 3501},
		{name: "command without id", payload: delimited(command(0, 5, pbStr(nil, 1, ch))), wantClose: 3501},
		{name: "unknown fields", payload: delimited(append(pbStr(command(2, 11, nil), 77, "x"), pbVarint(nil, 500, 1)...)), wantError: 0},
		{name: "unknown method field", payload: delimited(pbStr(id(2), 40, "x")), wantError: 104},
		{name: "invalid channel", payload: delimited(command(2, 5, pbStr(nil, 1, "odds:*"))), wantError: 107},
		{name: "client publish", payload: delimited(command(2, 7, pbStr(nil, 1, ch))), wantError: 103},
		{name: "history off", payload: delimited(command(2, 10, pbStr(nil, 1, ch))), wantError: 108},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialProtobuf(t, r.url())
			c.connect()
			op := tt.op
			if op == 0 {
				op = ws.OpBinary
			}
			c.sendRaw(op, tt.payload)
			if tt.wantClose != 0 {
				c.expectClose(tt.wantClose)
			} else {
				if rep := c.mustNext(); rep.ID != 2 || rep.ErrCode != tt.wantError {
					t.Fatalf("reply %+v, want id 2 error %d", rep, tt.wantError)
				}
				c.send(command(9, 11, nil))
				if rep := c.mustNext(); rep.ID != 9 || !rep.Ping {
					t.Fatalf("after the reply: %+v", rep)
				}
			}
			// The bystander still gets every update.
			value := fmt.Sprintf(`{"v":%d}`, i)
			produce(t, prod, "odds", ch, value)
			if p := bystander.mustNext(); p.Push == nil || string(p.Push.Pub.Data) != value {
				t.Fatalf("bystander got %+v, want %s", p, value)
			}
		})
	}

	// A JSON client speaking binary frames is closed with the terminal
	// 3501 too (tested in TestBadInput); a format the relay does not know
	// is refused at the handshake.
	if _, _, _, err := ws.Dial(context.Background(), r.url()+"?format=msgpack"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("?format=msgpack: %v, want a 400", err)
	}
}
