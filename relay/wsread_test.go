package relay

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
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
