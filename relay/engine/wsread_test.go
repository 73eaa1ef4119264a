package engine

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"
)

// FuzzParseHeader checks our incremental header parser against gobwas/ws's
// reader on arbitrary input, including every truncation.
func FuzzParseHeader(f *testing.F) {
	for _, h := range []ws.Header{
		{Fin: true, OpCode: ws.OpText, Length: 5, Masked: true, Mask: [4]byte{1, 2, 3, 4}},
		{OpCode: ws.OpContinuation, Length: 300, Masked: true},
		{Fin: true, OpCode: ws.OpBinary, Length: 70000},
		{Fin: true, OpCode: ws.OpClose, Rsv: 4, Length: 2, Masked: true},
	} {
		var b bytes.Buffer
		ws.WriteHeader(&b, h)
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, ok := parseHeader(b)
		r := bytes.NewReader(b)
		want, err := ws.ReadHeader(r)
		consumed := len(b) - r.Len()
		if !ok {
			if err == nil {
				t.Fatalf("parseHeader needs more than %d bytes; ws.ReadHeader read %+v", len(b), want)
			}
			return
		}
		if n > len(b) {
			t.Fatalf("header size %d > input %d", n, len(b))
		}
		if err != nil {
			return // gobwas rejects some headers (e.g. huge lengths) that we reject later
		}
		if h != want || n != consumed {
			t.Fatalf("parseHeader = %+v (%d bytes), ws.ReadHeader = %+v (%d bytes)", h, n, want, consumed)
		}
	})
}

// recorder is a Handler that keeps what the engine tells it.
type recorder struct {
	msgs       []string
	binary     []bool
	violations []uint16
	wrongType  bool
}

func (r *recorder) Message(msg []byte, binary bool) bool {
	r.msgs = append(r.msgs, string(msg)) // msg is valid only during the call
	r.binary = append(r.binary, binary)
	return true
}

func (r *recorder) Violation(code uint16, err error) {
	r.violations = append(r.violations, code)
	r.wrongType = r.wrongType || errors.Is(err, ErrWrongFrameType)
}

func (r *recorder) Closed() {}

// TestReadMessages: the frame reader hands the Handler whole messages
// (reassembled, inflated) and closes on violations with the WebSocket code,
// or, for the other frame type, with the connection's own close.
func TestReadMessages(t *testing.T) {
	masked := func(op ws.OpCode, fin bool, rsv byte, p string) []byte {
		f := ws.NewFrame(op, fin, []byte(p))
		f.Header.Rsv = rsv
		return ws.MustCompileFrame(ws.MaskFrameInPlace(f))
	}
	unmasked := ws.MustCompileFrame(ws.NewTextFrame([]byte("hi")))
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, flate.BestSpeed)
	fw.Write([]byte(`{"id":1}`))
	fw.Flush()
	compressed := string(bytes.TrimSuffix(z.Bytes(), []byte{0, 0, 0xff, 0xff}))
	wrong := Close{Code: 3501, Reason: "binary message on a text connection"}
	for _, tt := range []struct {
		name      string
		binary    bool
		deflate   bool
		input     [][]byte
		want      []string
		close     uint16 // 0: none
		wrongType bool
	}{
		{"text", false, false, [][]byte{masked(ws.OpText, true, 0, "hello")}, []string{"hello"}, 0, false},
		{"binary", true, false, [][]byte{masked(ws.OpBinary, true, 0, "\x00\xff")}, []string{"\x00\xff"}, 0, false},
		{"fragments", false, false, [][]byte{masked(ws.OpText, false, 0, "hel"), masked(ws.OpContinuation, true, 0, "lo")}, []string{"hello"}, 0, false},
		{"split across reads", false, false, func() [][]byte { f := masked(ws.OpText, true, 0, "hello"); return [][]byte{f[:3], f[3:]} }(), []string{"hello"}, 0, false},
		{"compressed", false, true, [][]byte{masked(ws.OpText, true, 4, compressed)}, []string{`{"id":1}`}, 0, false},
		{"wrong frame type", false, false, [][]byte{masked(ws.OpBinary, true, 0, "x")}, nil, 3501, true},
		{"text on a binary connection", true, false, [][]byte{masked(ws.OpText, true, 0, "x")}, nil, 3501, true},
		{"unmasked", false, false, [][]byte{unmasked}, nil, 1002, false},
		{"invalid UTF-8", false, false, [][]byte{masked(ws.OpText, true, 0, "\xff\xfe")}, nil, 1007, false},
		{"RSV1 without deflate", false, false, [][]byte{masked(ws.OpText, true, 4, compressed)}, nil, 1002, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, DefaultConfig())
			rec := &recorder{}
			c := env.conn(ConnConfig{Binary: tt.binary, WrongFrameType: wrong, Deflate: DeflateNegotiation{Accepted: tt.deflate}})
			c.h, c.fd = rec, 1<<20 // a descriptor no writer touches: its writer does not run
			for _, in := range tt.input {
				c.consume(append([]byte(nil), in...))
			}
			if fmt.Sprint(rec.msgs) != fmt.Sprint(tt.want) {
				t.Fatalf("messages %q, want %q", rec.msgs, tt.want)
			}
			for _, b := range rec.binary {
				if b != tt.binary {
					t.Fatalf("a message reported binary=%v on a binary=%v connection", b, tt.binary)
				}
			}
			if tt.close == 0 {
				if len(rec.violations) > 0 || len(c.queue) > 0 {
					t.Fatalf("violations %v, %d frames queued", rec.violations, len(c.queue))
				}
				return
			}
			if fmt.Sprint(rec.violations) != fmt.Sprint([]uint16{tt.close}) || rec.wrongType != tt.wrongType {
				t.Fatalf("violations %v (wrong type %v), want [%d] (%v)", rec.violations, rec.wrongType, tt.close, tt.wrongType)
			}
			if len(c.queue) != 1 {
				t.Fatalf("%d frames queued, want the close frame", len(c.queue))
			}
			f, err := ws.ReadFrame(bytes.NewReader(c.queue[0].Bytes))
			if err != nil {
				t.Fatal(err)
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if f.Header.OpCode != ws.OpClose || uint16(code) != tt.close || tt.wrongType && reason != wrong.Reason {
				t.Fatalf("queued %v %d %q, want a close %d", f.Header.OpCode, code, reason, tt.close)
			}
		})
	}
}
