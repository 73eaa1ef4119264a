package relay

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/engine"
)

// formSubscriber asks every update for one form, as a connection would.
type formSubscriber struct {
	form  fanout.Form
	bytes int
}

func (s *formSubscriber) Deliver(u *fanout.Update) {
	if f := u.Frame(s.form); f != nil {
		s.bytes += len(f.Bytes)
	}
}

// BenchmarkEncodeForms is the encoding cost of one update, per form (JSON,
// and Protobuf as pb/...), on
// odds messages of several sizes where a few prices change per update: what
// a publish costs once, however many subscribers share the form.
func BenchmarkEncodeForms(b *testing.B) {
	forms := []struct {
		name string
		form fanout.Form
	}{
		{"full", engine.FormPlain | formCompact},
		{"deflate", engine.FormPlain | formCompact | engine.FormDeflate},
		{"delta", engine.FormPatch | formCompact},
		{"delta+deflate", engine.FormPatch | formCompact | engine.FormDeflate},
		{"pb/full", formProtobuf | engine.FormPlain},
		{"pb/deflate", formProtobuf | engine.FormPlain | engine.FormDeflate},
		{"pb/delta", formProtobuf | engine.FormPatch},
		{"pb/delta+deflate", formProtobuf | engine.FormPatch | engine.FormDeflate},
	}
	for _, size := range []int{300, 1000, 2000} {
		for _, f := range forms {
			b.Run(fmt.Sprintf("size=%d/%s", size, f.name), func(b *testing.B) {
				cfg := DefaultConfig()
				if l, err := strconv.Atoi(os.Getenv("DEFLATE_LEVEL")); err == nil {
					cfg.WebSocket.Deflate.Level = l // to compare levels
				}
				s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					b.Fatal(err)
				}
				sub := &formSubscriber{form: f.form}
				s.hub.Subscribe("odds:bench", sub, nil)
				pubs := make([]*fanout.Publication, 64)
				for i := range pubs {
					pubs[i] = &fanout.Publication{Channel: "odds:bench", Data: oddsMessage(size, i), Pos: fanout.Position{Offset: int64(i)}}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s.hub.Publish(pubs[i%len(pubs)])
				}
				b.ReportMetric(float64(sub.bytes)/float64(b.N), "B/update")
			})
		}
	}
}

// oddsMessage is a market update of about size bytes: selections with
// names and prices, where two prices, seq and ts move with i.
func oddsMessage(size, i int) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"match":"match-123","market":"correct-score","status":"open","seq":%d,"ts":%d,"selections":[`, i, 1795340042190+int64(i)*137)
	for n := 0; sb.Len() < size-40; n++ {
		odds := 2.0 + float64(n%9)/4
		if n == i%5 || n == (i+2)%7 {
			odds += float64(i%11) / 100
		}
		if n > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"id":"s%d","name":"Selection %d","odds":%.2f}`, n, n, odds)
	}
	sb.WriteString("]}")
	return []byte(sb.String())
}
