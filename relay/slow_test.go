package relay_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/relay"
)

// stalledClient connects with a tiny receive buffer and subscribes; it then
// reads nothing until the test says so.
func stalledClient(t *testing.T, r *testRelay, channels ...string) *wsClient {
	t.Helper()
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	conn, _, _, err := d.Dial(t.Context(), r.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &wsClient{t: t, conn: conn}
	c.connect()
	for i, ch := range channels {
		c.send(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, i+2, ch))
		c.mustNext()
	}
	return c
}

// produceSequence produces records {"seq":1..n,"pad":8 KB} to ch, every
// priorityEvery-th one marked priority (0: none), and returns the last
// offset.
func produceSequence(t *testing.T, prod *kgo.Client, ch string, n, priorityEvery int) int64 {
	t.Helper()
	pad := strings.Repeat("x", 8000)
	var recs []*kgo.Record
	for i := 1; i <= n; i++ {
		rec := &kgo.Record{Topic: "odds", Key: []byte(ch), Value: []byte(fmt.Sprintf(`{"seq":%d,"pad":%q}`, i, pad)), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}}}
		if priorityEvery > 0 && i%priorityEvery == 0 {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "priority", Value: []byte("1")})
		}
		recs = append(recs, rec)
	}
	if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return recs[n-1].Offset
}

// TestSlowConsumerConflation stops reading while a channel updates fast:
// past the soft limit the relay keeps only the latest value per channel,
// never drops priority publications, and when the client reads again it
// ends with the final value, in order.
func TestSlowConsumerConflation(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.SoftQueueBytes = 64 << 10
	cfg.WebSocket.MaxQueueBytes = 8 << 20
	cfg.WebSocket.StallTimeout = time.Minute
	r := startRelay(t, cfg)
	const ch = "odds:slow:1x2"
	c := stalledClient(t, r, ch)

	prod := newProducer(t, kafka.ListenAddrs())
	const n = 1500
	r.waitCached(t, ch, produceSequence(t, prod, ch, n, 50))
	checkFor(t, 10*time.Second, func() error {
		if _, body := r.get(t, "/metrics"); !strings.Contains(body, "edgerelay_conflated_total") || strings.Contains(body, "edgerelay_conflated_total 0\n") {
			return fmt.Errorf("nothing conflated yet:\n%s", grep(body, "conflated"))
		}
		return nil
	})

	// Read again: ascending seqs, every priority one, ending at n.
	last, got := 0, 0
	priority := map[int]bool{}
	for last != n {
		_, data, _, ok := pubOf(c.mustNext())
		if !ok {
			continue
		}
		seq := int(data["seq"].(float64))
		if seq <= last {
			t.Fatalf("seq %d after %d", seq, last)
		}
		last, got = seq, got+1
		if seq%50 == 0 {
			priority[seq] = true
		}
	}
	if len(priority) != n/50 {
		t.Fatalf("got %d of %d priority publications", len(priority), n/50)
	}
	if got >= n {
		t.Fatalf("received all %d publications: nothing was conflated", got)
	}
	t.Logf("received %d of %d publications, all %d priority ones, ending with the last", got, n, n/50)
}

// TestSlowConsumerDisconnect: a client that reads nothing is disconnected
// with 3008 (slow) when its queue passes the hard limit or stalls, while a
// healthy client on the same channel keeps receiving.
func TestSlowConsumerDisconnect(t *testing.T) {
	tests := []struct {
		name  string
		hard  int
		stall time.Duration
	}{
		{"hard limit", 256 << 10, time.Minute},
		{"stall timeout", 64 << 20, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kafka := newKafka(t)
			cfg := testConfig(kafka.ListenAddrs())
			cfg.WebSocket.SoftQueueBytes = 64 << 10
			cfg.WebSocket.MaxQueueBytes = relay.ByteSize(tt.hard)
			cfg.WebSocket.StallTimeout = tt.stall
			r := startRelay(t, cfg)
			healthy := dial(t, r.url())
			healthy.connect()
			// Every record on its own channel, all priority: nothing can be
			// conflated, so the stalled queue only grows.
			prod := newProducer(t, kafka.ListenAddrs())
			pad := strings.Repeat("y", 8000)
			chans := []string{}
			for i := 0; i < 40; i++ {
				chans = append(chans, fmt.Sprintf("odds:stall:%d", i))
			}
			slow := stalledClient(t, r, chans...)
			for i, ch := range chans {
				healthy.send(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, i+2, ch))
				healthy.mustNext()
			}
			// The kernel absorbs megabytes first (the relay's send buffer
			// grows to net.ipv4.tcp_wmem's maximum): on a loaded machine that
			// takes a while, so the deadline is generous and /metrics is read
			// only every 25 records.
			deadline := time.Now().Add(90 * time.Second)
			for i := 0; ; i++ {
				ch := chans[i%len(chans)]
				rec := &kgo.Record{Topic: "odds", Value: []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad)),
					Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}, {Key: "priority", Value: []byte("1")}}}
				if err := prod.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
					t.Fatal(err)
				}
				if _, data, _, ok := pubOf(healthy.mustNext()); !ok || int(data["i"].(float64)) != i {
					t.Fatalf("healthy client got %v, want i=%d", data, i)
				}
				if i%25 != 0 {
					continue
				}
				if _, body := r.get(t, "/metrics"); strings.Contains(body, `edgerelay_disconnects_total{code="3008"} 1`) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("slow client never disconnected")
				}
			}
			slow.expectClose(3008)
		})
	}
}
