package relay_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/relay"
)

// checkFor polls cond every 10ms until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newKafka(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, "odds", "scores")}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testRelay is a relay running in-process on an ephemeral port.
type testRelay struct {
	srv  *relay.Server
	addr string
	stop context.CancelFunc
	done chan error
	// tls is the client side of a relay with tls on (useTLS): the CA it
	// trusts. nil: plain ws:// and http://.
	tls *tls.Config
}

// useTLS makes the helpers speak wss:// and https:// to r, trusting ca.
func (r *testRelay) useTLS(ca *testCA) { r.tls = &tls.Config{RootCAs: ca.pool} }

func testConfig(brokers []string) relay.Config {
	cfg := relay.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = 0, 0 // a test relay stops at once (drain_test.go times drains)
	cfg.ShutdownTimeout = 10 * time.Second                     // within startRelay's 15 s, with a client that never reads
	cfg.Node = "test-node"
	cfg.Kafka.Brokers = brokers
	cfg.Ingest.ProbeInterval = 100 * time.Millisecond
	cfg.WebSocket.PingInterval = 0 // tests that need pings turn them on
	// Tests here check that every update arrives; on a loaded machine the
	// relay may fall 20 ms behind and conflate by design. Conflation under
	// overload has its own tests (TestOverloadConflation, bench).
	cfg.Overload.ConflateAfter = time.Hour
	return cfg
}

func startRelay(t testing.TB, cfg relay.Config) *testRelay {
	t.Helper()
	return startRelayLog(t, cfg, testLogger(t))
}

// startRelayLog is startRelay with the relay's log sent to log.
func startRelayLog(t testing.TB, cfg relay.Config, log *slog.Logger) *testRelay {
	t.Helper()
	srv, err := relay.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &testRelay{srv: srv, addr: ln.Addr().String(), stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Error("relay did not shut down")
		}
	})
	return r
}

func (r *testRelay) url() string {
	if r.tls != nil {
		return "wss://" + r.addr + "/connection/websocket"
	}
	return "ws://" + r.addr + "/connection/websocket"
}

func (r *testRelay) get(t testing.TB, path string) (int, string) {
	t.Helper()
	scheme, cl := "http://", http.DefaultClient
	if r.tls != nil {
		scheme, cl = "https://", &http.Client{Transport: &http.Transport{TLSClientConfig: r.tls}}
	}
	resp, err := cl.Get(scheme + r.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// request sends method path with the Authorization header authorization
// ("": none).
func (r *testRelay) request(t testing.TB, method, path, authorization string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.addr+path, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *testRelay) waitReady(t testing.TB) {
	t.Helper()
	checkFor(t, 20*time.Second, func() error {
		if code, body := r.get(t, "/readyz"); code != 200 {
			return fmt.Errorf("readyz %d %s", code, body)
		}
		return nil
	})
}

// waitCached waits until the relay caches channel at Kafka offset >= off.
func (r *testRelay) waitCached(t testing.TB, channel string, off int64) {
	t.Helper()
	checkFor(t, 20*time.Second, func() error {
		p := r.srv.Hub().Last(channel)
		if p == nil || p.Pos.Offset < off {
			if p == nil {
				return fmt.Errorf("channel %s not cached", channel)
			}
			return fmt.Errorf("channel %s cached at offset %d, want %d", channel, p.Pos.Offset, off)
		}
		return nil
	})
}

func newProducer(t testing.TB, brokers []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce writes one record to topic with the channel header and returns
// its offset.
func produce(t testing.TB, cl *kgo.Client, topic, channel, value string) int64 {
	t.Helper()
	r := &kgo.Record{Topic: topic, Key: []byte(channel), Value: []byte(value), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(channel)}}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return r.Offset
}

// wsClient is a raw protocol client over gobwas/ws.
type wsClient struct {
	t     testing.TB
	conn  net.Conn
	lines []json.RawMessage
}

func dial(t testing.TB, url string) *wsClient {
	t.Helper()
	return dialWith(t, ws.Dialer{}, url)
}

// dial connects to r's WebSocket endpoint, over TLS if r has it on.
func (r *testRelay) dial(t testing.TB) *wsClient {
	t.Helper()
	return dialWith(t, ws.Dialer{TLSConfig: r.tls}, r.url())
}

func dialWith(t testing.TB, d ws.Dialer, url string) *wsClient {
	t.Helper()
	conn, _, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

func (c *wsClient) sendRaw(op ws.OpCode, payload []byte) {
	c.t.Helper()
	if err := wsutil.WriteClientMessage(c.conn, op, payload); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) send(cmds ...string) { c.sendRaw(ws.OpText, []byte(strings.Join(cmds, "\n"))) }

// closeError is returned by next when the server closed the connection.
type closeError struct {
	code   ws.StatusCode
	reason string
}

func (e closeError) Error() string { return fmt.Sprintf("closed %d %s", e.code, e.reason) }

// next returns the next JSON line from the server.
func (c *wsClient) next() (map[string]any, error) {
	for len(c.lines) == 0 {
		c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		msgs, err := wsutil.ReadServerMessage(c.conn, nil)
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				return nil, closeError{ce.Code, ce.Reason}
			}
			return nil, err
		}
		for _, m := range msgs {
			if m.OpCode == ws.OpClose {
				code, reason := ws.ParseCloseFrameData(m.Payload)
				return nil, closeError{code, reason}
			}
			if m.OpCode != ws.OpText {
				continue
			}
			for _, l := range strings.Split(string(m.Payload), "\n") {
				if strings.TrimSpace(l) != "" {
					c.lines = append(c.lines, json.RawMessage(l))
				}
			}
		}
	}
	l := c.lines[0]
	c.lines = c.lines[1:]
	var v map[string]any
	if err := json.Unmarshal(l, &v); err != nil {
		c.t.Fatalf("server sent invalid JSON %s: %v", l, err)
	}
	return v, nil
}

func (c *wsClient) mustNext() map[string]any {
	c.t.Helper()
	v, err := c.next()
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

// expectClose reads until the server closes and checks the close code.
func (c *wsClient) expectClose(code ws.StatusCode) {
	c.t.Helper()
	for {
		v, err := c.next()
		if err == nil {
			continue // replies sent before the close
		}
		var ce closeError
		if !errors.As(err, &ce) {
			c.t.Fatalf("want close %d, got error %v", code, err)
		}
		if ce.code != code || ce.reason == "" {
			c.t.Fatalf("want close %d with a reason, got %d %q", code, ce.code, ce.reason)
		}
		_ = v
		return
	}
}

func (c *wsClient) connect() {
	c.t.Helper()
	c.send(`{"id":1,"connect":{"name":"test"}}`)
	if r := c.mustNext(); r["connect"] == nil {
		c.t.Fatalf("connect reply %v", r)
	}
}

// errorCode returns the error code of a reply, or 0.
func errorCode(r map[string]any) int {
	e, ok := r["error"].(map[string]any)
	if !ok {
		return 0
	}
	return int(e["code"].(float64))
}

// pubOf returns the channel, data and offset of a publication push, or
// ok=false. With channel compaction the push names no channel: channel is
// then "#<id>".
func pubOf(r map[string]any) (channel string, data map[string]any, offset uint64, ok bool) {
	push, _ := r["push"].(map[string]any)
	pub, _ := push["pub"].(map[string]any)
	if pub == nil {
		return "", nil, 0, false
	}
	data, _ = pub["data"].(map[string]any)
	off, _ := pub["offset"].(float64)
	if id, ok := push["id"].(float64); ok {
		return fmt.Sprintf("#%d", int(id)), data, uint64(off), true
	}
	return push["channel"].(string), data, uint64(off), true
}

// metric returns the value of one series (name and labels, as the
// exposition prints them) in a /metrics body, or -1 if it is absent.
func metric(body, series string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// topicRecords returns every record of topic, read up to the end offsets
// listed when it is called.
func topicRecords(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	var recs []*kgo.Record
	for len(left) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v; partitions not read to the end: %v", topic, ctx.Err(), left)
		}
		f.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return recs
}
