package sdkgo_test

// Small helpers copied and adapted from relay/helpers_test.go (that file is
// in another module's _test files, so it cannot be imported).

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/relay"
)

// waitFor bounds every poll and every wait for an SDK event. It is a
// deadline for "it never happened", not a speed assertion.
const waitFor = 30 * time.Second

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

// newKafka starts an in-process kfake cluster with the topics the relay
// reads (odds, scores) and the one the bet desk writes (bets).
func newKafka(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "odds", "scores", "bets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("EDGERELAY_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testSecret is the relay's HMAC key; the test mints HS256 tokens with it.
const testSecret = "edgerelay-tests-go-secret-of-32-bytes!"

func testConfig(brokers []string) relay.Config {
	cfg := relay.DefaultConfig()
	cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = 0, 0 // a test relay stops at once (drain_test.go times drains)
	cfg.Listen = "127.0.0.1:0"
	cfg.Node = "tests-go"
	cfg.Kafka.Brokers = brokers
	cfg.Ingest.ProbeInterval = 100 * time.Millisecond
	cfg.WebSocket.PingInterval = 0
	// Every update must arrive here; on a loaded machine (-race) the relay
	// could fall 20 ms behind and conflate by design (docs/protocol.md).
	cfg.Overload.ConflateAfter = time.Hour
	cfg.Auth.HMACSecrets = []string{testSecret}
	cfg.Channels.HistorySize = 200
	cfg.Bets.Enabled = true
	return cfg
}

// testRelay is a relay running in-process on an ephemeral port.
type testRelay struct {
	addr string
}

func startRelay(t testing.TB, cfg relay.Config) *testRelay {
	t.Helper()
	srv, err := relay.New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("relay did not shut down")
		}
	})
	r := &testRelay{addr: ln.Addr().String()}
	checkFor(t, waitFor, func() error {
		if code, body := r.get(t, "/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz %d %s", code, body)
		}
		return nil
	})
	return r
}

func (r *testRelay) url() string { return "ws://" + r.addr + "/connection/websocket" }

func (r *testRelay) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// cached is what GET /v1/channels/{name} answers.
type cached struct {
	Data   json.RawMessage `json:"data"`
	Offset uint64          `json:"offset"`
	Epoch  string          `json:"epoch"`
}

// waitCached polls GET /v1/channels/{channel} until the relay caches the
// record at Kafka offset off (protocol offset off+1) or later.
func (r *testRelay) waitCached(t testing.TB, channel string, off int64) cached {
	t.Helper()
	var c cached
	checkFor(t, waitFor, func() error {
		code, body := r.get(t, "/v1/channels/"+url.PathEscape(channel))
		if code != http.StatusOK {
			return fmt.Errorf("GET /v1/channels/%s: %d %s", channel, code, body)
		}
		c = cached{}
		if err := json.Unmarshal([]byte(body), &c); err != nil {
			return fmt.Errorf("GET /v1/channels/%s: %v: %s", channel, err, body)
		}
		if c.Offset < uint64(off)+1 {
			return fmt.Errorf("channel %s cached at offset %d, want %d", channel, c.Offset, off+1)
		}
		return nil
	})
	return c
}

// metricSum sums every series of metric name whose labels contain every
// one of labels (for example `variant="delta_patch"`) in a /metrics body;
// -1 if there is none.
func metricSum(body, name string, labels ...string) float64 {
	sum, found := 0.0, false
	for _, l := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(l, name+"{")
		if !ok {
			continue
		}
		have, value, ok := strings.Cut(rest, "} ")
		if !ok || !containsAll(have, labels) {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			sum, found = sum+f, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func grep(body, substr string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func newProducer(t testing.TB, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce writes one record to topic with the channel header (and the
// channel as key, so one channel stays on one partition) and returns its
// Kafka offset.
func produce(t testing.TB, cl *kgo.Client, topic, channel, value string) int64 {
	t.Helper()
	r := &kgo.Record{Topic: topic, Key: []byte(channel), Value: []byte(value), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(channel)}}}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return r.Offset
}

// mintHS256 signs claims as an HS256 JWT (RFC 7519) with the standard
// library only: an independent check of the relay's verifier.
func mintHS256(t testing.TB, secret string, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	header, err := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func userToken(t testing.TB, user string) string {
	now := time.Now()
	return mintHS256(t, testSecret, map[string]any{"sub": user, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
}

// sdkValue is an odds-like payload (as in relay/sdk_test.go): mostly
// stable, a few numbers move, so Fossil patches are much smaller than the
// value and the relay sends them.
func sdkValue(seq int) string {
	return fmt.Sprintf(`{"seq":%d,"market":"1x2","status":"open","selections":[{"id":"home","name":"Arsenal","odds":%.2f},{"id":"draw","name":"Draw","odds":3.40},{"id":"away","name":"Chelsea","odds":%.2f}],"note":"%s"}`,
		seq, 2.0+float64(seq%7)/100, 3.0-float64(seq%5)/100, strings.Repeat("stable text ", 20))
}
