package relay_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestEndToEnd(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:match-1:1x2"
	first := produce(t, prod, "odds", ch, `{"seq":0,"home":2.10}`)
	r.waitCached(t, ch, first)

	c := dial(t, r.url())
	// connect and subscribe in one frame, as the SDKs send them.
	c.send(`{"id":1,"connect":{"name":"test"}}`, fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q,"flag":1}}`, ch))
	if rep := c.mustNext(); rep["connect"] == nil || rep["connect"].(map[string]any)["client"] == "" {
		t.Fatalf("connect reply %v", rep)
	}
	sub := c.mustNext()["subscribe"].(map[string]any)
	pubs := sub["publications"].([]any)
	if len(pubs) != 1 || sub["recoverable"] != true || sub["epoch"] == "" || uint64(sub["offset"].(float64)) != uint64(first)+1 {
		t.Fatalf("subscribe reply %v", sub)
	}
	if d := pubs[0].(map[string]any)["data"].(map[string]any); d["seq"] != 0.0 {
		t.Fatalf("cached data %v", d)
	}

	// Channel compaction (flag 1): pushes carry the channel's id.
	id, _ := sub["id"].(float64)
	if id == 0 {
		t.Fatalf("subscribe with flag 1: no channel id in %v", sub)
	}
	ref := fmt.Sprintf("#%d", int(id))

	// Live updates arrive in Kafka order, with other channels in between.
	var offsets []int64
	for i := 1; i <= 20; i++ {
		offsets = append(offsets, produce(t, prod, "odds", ch, fmt.Sprintf(`{"seq":%d}`, i)))
		produce(t, prod, "odds", "odds:football:epl:match-2:1x2", `{"other":true}`)
	}
	for i := 1; i <= 20; i++ {
		channel, data, off, ok := pubOf(c.mustNext())
		if !ok || channel != ref || data["seq"] != float64(i) || off != uint64(offsets[i-1])+1 {
			t.Fatalf("update %d: channel %s data %v offset %d (want %d)", i, channel, data, off, offsets[i-1]+1)
		}
	}

	// Unsubscribe stops delivery; the reply carries an empty result.
	c.send(fmt.Sprintf(`{"id":3,"unsubscribe":{"channel":%q}}`, ch))
	if rep := c.mustNext(); rep["unsubscribe"] == nil {
		t.Fatalf("unsubscribe reply %v", rep)
	}
	produce(t, prod, "odds", ch, `{"seq":99}`)
	c.send(`{"id":4,"ping":{}}`)
	if rep := c.mustNext(); rep["id"] != 4.0 {
		t.Fatalf("got %v after unsubscribe, want only the ping reply", rep)
	}
}

func TestRecoverCachedPosition(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "scores:tennis:atp:m1"
	off := produce(t, prod, "scores", ch, `{"score":[1,0]}`)
	r.waitCached(t, ch, off)
	epoch := r.srv.Hub().Last(ch).Epoch

	tests := []struct {
		name          string
		req           string
		wantPubs      int
		wantRecovered bool
	}{
		{"fresh", fmt.Sprintf(`{"channel":%q}`, ch), 1, false},
		{"up to date", fmt.Sprintf(`{"channel":%q,"recover":true,"epoch":%q,"offset":%d}`, ch, epoch, off+1), 0, true},
		// History off: the relay cannot prove the gap empty, so the SDK
		// must not be told nothing was missed (the latest value comes).
		{"behind, history off", fmt.Sprintf(`{"channel":%q,"recover":true,"epoch":%q,"offset":%d}`, ch, epoch, off), 1, false},
		{"other epoch", fmt.Sprintf(`{"channel":%q,"recover":true,"epoch":"old","offset":%d}`, ch, off+1), 1, false},
		// Subscribed before the channel's first record: the reply had no
		// epoch, the client has the offset of what it received since.
		{"no epoch, up to date", fmt.Sprintf(`{"channel":%q,"recover":true,"offset":%d}`, ch, off+1), 0, true},
		{"no epoch, a position not of this channel", fmt.Sprintf(`{"channel":%q,"recover":true,"offset":%d}`, ch, off+7), 1, false},
		{"no epoch, nothing received", fmt.Sprintf(`{"channel":%q,"recover":true}`, ch), 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, r.url())
			c.connect()
			c.send(`{"id":2,"subscribe":` + tt.req + `}`)
			sub := c.mustNext()["subscribe"].(map[string]any)
			pubs, _ := sub["publications"].([]any)
			recovered, _ := sub["recovered"].(bool)
			if len(pubs) != tt.wantPubs || recovered != tt.wantRecovered || sub["epoch"] != epoch {
				t.Fatalf("reply %v: want %d publications, recovered=%v, epoch %q", sub, tt.wantPubs, tt.wantRecovered, epoch)
			}
		})
	}
}

func TestHTTPSurface(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	r.waitReady(t)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:basketball:nba:m7:moneyline"
	off := produce(t, prod, "odds", ch, `{"home":1.9,"away":1.9}`)
	r.waitCached(t, ch, off)

	tests := []struct {
		path     string
		status   int
		contains []string
	}{
		{"/healthz", 200, []string{`"ok"`}},
		{"/readyz", 200, []string{`"ready"`}},
		{"/v1/channels/" + ch, 200, []string{`"data":{"home":1.9,"away":1.9}`, `"topic":"odds"`, fmt.Sprintf(`"offset":%d`, off+1)}},
		{"/v1/channels/odds:nothing:here", 404, []string{"no cached value"}},
		{"/v1/channels/bad%20name", 400, []string{"invalid channel name"}},
		{"/v1/channels?prefix=odds:basketball", 200, []string{ch, `"subscribers":0`}},
		{"/v1/channels?limit=0", 400, []string{"limit"}},
		{"/metrics", 200, []string{
			"edgerelay_connections ", "edgerelay_subscriptions ", "edgerelay_channels ", "edgerelay_publications_total ",
			"edgerelay_deliveries_total ", "edgerelay_bytes_written_total ", `edgerelay_kafka_records_total{topic="odds"}`,
			"edgerelay_kafka_lag_records{", "edgerelay_delivery_latency_seconds_bucket", "edgerelay_ready 1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := r.get(t, tt.path)
			if code != tt.status {
				t.Fatalf("status %d, want %d: %s", code, tt.status, body)
			}
			for _, s := range tt.contains {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %q:\n%.2000s", s, body)
				}
			}
		})
	}
}

// TestBadInput sends each kind of hostile or malformed input and checks the
// documented reply or close code, and that the server carries on.
func TestBadInput(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.MaxMessageBytes = 4 << 10
	r := startRelay(t, cfg)
	const ch = "odds:football:epl:m9:1x2"
	prod := newProducer(t, kafka.ListenAddrs())
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"v":1}`))

	// A bystander that must keep receiving throughout.
	bystander := dial(t, r.url())
	bystander.connect()
	bystander.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch))
	bystander.mustNext()

	tests := []struct {
		name      string
		connect   bool
		op        ws.OpCode
		payload   string
		wantError int           // reply error code; the connection carries on
		wantClose ws.StatusCode // or: close code
	}{
		{name: "malformed JSON", connect: true, payload: `{"id":2,"subscribe":`, wantClose: 3501},
		{name: "not an object", connect: true, payload: `[1,2,3]`, wantClose: 3501},
		{name: "unknown command", connect: true, payload: `{"id":2,"frobnicate":{}}`, wantError: 104},
		{name: "command without id", connect: true, payload: `{"subscribe":{"channel":"odds:a"}}`, wantClose: 3501},
		{name: "subscribe before connect", payload: `{"id":1,"subscribe":{"channel":"odds:a"}}`, wantClose: 3501},
		{name: "connect twice", connect: true, payload: `{"id":2,"connect":{}}`, wantClose: 3501},
		{name: "invalid channel name", connect: true, payload: `{"id":2,"subscribe":{"channel":"odds:*"}}`, wantError: 107},
		{name: "empty channel name", connect: true, payload: `{"id":2,"subscribe":{"channel":""}}`, wantError: 107},
		{name: "duplicate subscribe", connect: true, payload: fmt.Sprintf("{\"id\":2,\"subscribe\":{\"channel\":%q}}\n{\"id\":3,\"subscribe\":{\"channel\":%q}}", ch, ch), wantError: 105},
		{name: "client publish", connect: true, payload: `{"id":2,"publish":{"channel":"odds:a","data":{}}}`, wantError: 103},
		{name: "unknown rpc", connect: true, payload: `{"id":2,"rpc":{"method":"nope"}}`, wantError: 104},
		{name: "history", connect: true, payload: `{"id":2,"history":{"channel":"odds:a"}}`, wantError: 108},
		{name: "message too big", connect: true, payload: `{"id":2,"rpc":{"method":"x","data":"` + strings.Repeat("a", 5000) + `"}}`, wantClose: ws.StatusMessageTooBig},
		{name: "invalid UTF-8", connect: true, payload: "{\"id\":2,\"rpc\":{\"method\":\"\xff\xfe\"}}", wantClose: ws.StatusInvalidFramePayloadData},
		{name: "binary frame", connect: true, op: ws.OpBinary, payload: `{"id":2,"ping":{}}`, wantClose: 3501},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, r.url())
			if tt.connect {
				c.connect()
			}
			op := tt.op
			if op == 0 {
				op = ws.OpText
			}
			c.sendRaw(op, []byte(tt.payload))
			if tt.wantClose != 0 {
				c.expectClose(tt.wantClose)
				return
			}
			var rep map[string]any
			for rep = c.mustNext(); errorCode(rep) == 0; rep = c.mustNext() {
				// skip successful replies (the first duplicate subscribe)
			}
			if got := errorCode(rep); got != tt.wantError {
				t.Fatalf("reply %v, want error %d", rep, tt.wantError)
			}
			// The connection carries on.
			c.send(`{"id":9,"ping":{}}`)
			if rep := c.mustNext(); rep["id"] != 9.0 || rep["ping"] == nil {
				t.Fatalf("after error: %v", rep)
			}
		})
	}

	// Kafka side: a non-JSON payload on a JSON channel is counted and
	// skipped; the next valid record goes through.
	produce(t, prod, "odds", ch, `not json {`)
	produce(t, prod, "odds", ch, `{"big":"`+strings.Repeat("b", 200<<10)+`"}`) // over ingest.max_value_bytes
	produce(t, prod, "odds", ch, `{"v":2}`)
	_, data, _, ok := pubOf(bystander.mustNext())
	if !ok || data["v"] != 2.0 {
		t.Fatalf("bystander got %v, want v=2 (the invalid record skipped)", data)
	}
	if _, body := r.get(t, "/metrics"); !strings.Contains(body, `edgerelay_kafka_records_skipped_total{reason="invalid_json",topic="odds"} 1`) ||
		!strings.Contains(body, `edgerelay_kafka_records_skipped_total{reason="too_large",topic="odds"} 1`) {
		t.Fatalf("skip not counted:\n%s", grep(body, "skipped"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestPayloadNewlinesCompacted(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:x:y"
	c := dial(t, r.url())
	c.connect()
	c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch))
	c.mustNext()
	produce(t, prod, "odds", ch, "{\n  \"a\": \"line\\nbreak\",\n  \"b\": [1,\n 2]\n}")
	_, data, _, ok := pubOf(c.mustNext())
	if !ok || data["a"] != "line\nbreak" || len(data["b"].([]any)) != 2 {
		t.Fatalf("got %v", data)
	}
}

func TestChannelFromKeyAndTemplate(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Ingest.Topics[1].ChannelTemplate = "scores:{key}"
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	for _, rec := range []struct{ topic, key, value string }{
		{"odds", "odds:from-key", `{"k":1}`},
		{"scores", "tennis:m5", `{"t":1}`},
		{"odds", "", `{"no":"channel"}`},
		{"odds", "bad key", `{"bad":1}`},
	} {
		res := prod.ProduceSync(t.Context(), &kgo.Record{Topic: rec.topic, Key: []byte(rec.key), Value: []byte(rec.value)})
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	r.waitCached(t, "odds:from-key", 0)
	r.waitCached(t, "scores:tennis:m5", 0)
	checkFor(t, 10*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		for _, want := range []string{`reason="no_channel",topic="odds"} 1`, `reason="invalid_channel",topic="odds"} 1`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("metrics lack %s", want)
			}
		}
		return nil
	})
}

func TestPingPong(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.PingInterval = time.Second
	cfg.WebSocket.PongTimeout = 500 * time.Millisecond
	r := startRelay(t, cfg)

	c := dial(t, r.url())
	c.send(`{"id":1,"connect":{}}`)
	rep := c.mustNext()["connect"].(map[string]any)
	if rep["ping"] != 1.0 || rep["pong"] != true {
		t.Fatalf("connect reply %v, want ping 1 and pong true", rep)
	}
	for i := 0; i < 2; i++ { // answered pings keep the connection
		if p := c.mustNext(); len(p) != 0 {
			t.Fatalf("want ping {}, got %v", p)
		}
		c.send(`{}`)
	}
	if p := c.mustNext(); len(p) != 0 { // the third ping goes unanswered
		t.Fatalf("want ping {}, got %v", p)
	}
	c.expectClose(3012)
}

func TestConnectTimeout(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.ConnectTimeout = 300 * time.Millisecond
	r := startRelay(t, cfg)
	c := dial(t, r.url())
	c.expectClose(3502)
}

func TestGracefulShutdown(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	c := dial(t, r.url())
	c.connect()
	r.stop()
	c.expectClose(3001)
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatal(err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestBrokerDownAtStart starts the relay before Kafka exists: it serves but
// is not ready; once a broker appears on the configured port it becomes
// ready and delivers.
func TestBrokerDownAtStart(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	r := startRelay(t, testConfig([]string{addr}))
	checkFor(t, 5*time.Second, func() error {
		if code, body := r.get(t, "/readyz"); code != 503 || !strings.Contains(body, "kafka") {
			return fmt.Errorf("readyz %d %s, want 503 naming kafka", code, body)
		}
		return nil
	})
	c := dial(t, r.url()) // clients are served meanwhile
	c.connect()
	c.send(`{"id":2,"subscribe":{"channel":"odds:late"}}`)
	c.mustNext()

	kafka := newKafka(t, kfake.Ports(port))
	r.waitReady(t)
	prod := newProducer(t, kafka.ListenAddrs())
	produce(t, prod, "odds", "odds:late", `{"arrived":true}`)
	if _, data, _, ok := pubOf(c.mustNext()); !ok || data["arrived"] != true {
		t.Fatalf("got %v", data)
	}
}

// TestBrokerOutage stops Kafka mid-stream: cached state stays served, the
// node reports not ready, and when the broker returns (same data dir)
// delivery resumes by itself.
func TestBrokerOutage(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	kafka := newKafka(t, kfake.Ports(port), kfake.DataDir(dir))
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:outage:1x2"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"n":1}`))
	r.waitReady(t)
	c := dial(t, r.url())
	c.connect()
	c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch))
	c.mustNext()

	kafka.Close()
	checkFor(t, 10*time.Second, func() error {
		if code, _ := r.get(t, "/readyz"); code != 503 {
			return fmt.Errorf("readyz %d, want 503", code)
		}
		return nil
	})
	if code, body := r.get(t, "/v1/channels/"+ch); code != 200 || !strings.Contains(body, `"n":1`) {
		t.Fatalf("cached value lost during outage: %d %s", code, body)
	}
	c.send(`{"id":3,"ping":{}}`)
	if rep := c.mustNext(); rep["id"] != 3.0 {
		t.Fatalf("client not served during outage: %v", rep)
	}

	kafka2 := newKafka(t, kfake.Ports(port), kfake.DataDir(dir))
	r.waitReady(t)
	produce(t, newProducer(t, kafka2.ListenAddrs()), "odds", ch, `{"n":2}`)
	if _, data, _, ok := pubOf(c.mustNext()); !ok || data["n"] != 2.0 {
		t.Fatalf("after restore got %v", data)
	}
}

// TestKcat produces with Debian's kcat, a Kafka client nobody here wrote.
func TestKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat not installed; .ci/run installs it")
		}
		t.Skip("kcat not installed (apt-get install kcat)")
	}
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	const ch = "scores:football:epl:kcat"
	c := dial(t, r.url())
	c.connect()
	c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch))
	c.mustNext()
	cmd := exec.Command(kcat, "-P", "-b", kafka.ListenAddrs()[0], "-t", "scores", "-k", "m1", "-H", "channel="+ch)
	cmd.Stdin = strings.NewReader(`{"from":"kcat","score":[2,1]}` + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	if _, data, _, ok := pubOf(c.mustNext()); !ok || data["from"] != "kcat" {
		t.Fatalf("got %v", data)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestHistory: with channels.history_size, "history" returns what a client
// missed and subscribe recovery fills the gap; past the history's reach
// the reply is 112, without history 108, and another user's personal
// channel is refused (103).
func TestHistory(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Channels.HistorySize = 3
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:m1:1x2"
	var off []int64 // Kafka offsets; the protocol's are +1
	for i := range 5 {
		off = append(off, produce(t, prod, "odds", ch, fmt.Sprintf(`{"seq":%d}`, i)))
	}
	r.waitCached(t, ch, off[4])
	epoch := r.srv.Hub().Last(ch).Epoch
	pos := func(i int) string { return fmt.Sprintf(`{"offset":%d,"epoch":%q}`, off[i]+1, epoch) }
	want := func(idx ...int) string {
		var o []uint64
		for _, i := range idx {
			o = append(o, uint64(off[i]+1))
		}
		return fmt.Sprint(o)
	}
	offsets := func(v any) string {
		var o []uint64
		pubs, _ := v.([]any)
		for _, p := range pubs {
			o = append(o, uint64(p.(map[string]any)["offset"].(float64)))
		}
		return fmt.Sprint(o)
	}
	c := dial(t, r.url())
	c.connect()
	for _, tt := range []struct {
		name    string
		req     string
		want    string // offsets
		errCode int
	}{
		{"all kept", fmt.Sprintf(`{"channel":%q,"limit":-1}`, ch), want(2, 3, 4), 0},
		{"since the one before last", fmt.Sprintf(`{"channel":%q,"limit":-1,"since":%s}`, ch, pos(3)), want(4), 0},
		{"since the newest dropped", fmt.Sprintf(`{"channel":%q,"limit":-1,"since":%s}`, ch, pos(1)), want(2, 3, 4), 0},
		{"beyond the history", fmt.Sprintf(`{"channel":%q,"limit":-1,"since":%s}`, ch, pos(0)), "", 112},
		{"other epoch", fmt.Sprintf(`{"channel":%q,"limit":-1,"since":{"offset":%d,"epoch":"old"}}`, ch, off[3]+1), "", 112},
		{"position only", fmt.Sprintf(`{"channel":%q}`, ch), want(), 0},
		{"newest two, reverse", fmt.Sprintf(`{"channel":%q,"limit":2,"reverse":true}`, ch), want(4, 3), 0},
		{"unknown channel", `{"channel":"odds:none","limit":-1}`, want(), 0},
		{"invalid channel", `{"channel":"","limit":-1}`, "", 107},
		{"personal channel of another user", `{"channel":"bets:#alice","limit":-1}`, "", 103},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c.send(`{"id":7,"history":` + tt.req + `}`)
			rep := c.mustNext()
			if tt.errCode != 0 {
				if errorCode(rep) != tt.errCode {
					t.Fatalf("reply %v, want error %d", rep, tt.errCode)
				}
				return
			}
			res, ok := rep["history"].(map[string]any)
			if !ok {
				t.Fatalf("reply %v, want a history result", rep)
			}
			if got := offsets(res["publications"]); got != tt.want {
				t.Fatalf("publications at %s, want %s", got, tt.want)
			}
			if tt.req != `{"channel":"odds:none","limit":-1}` && (res["epoch"] != epoch || uint64(res["offset"].(float64)) != uint64(off[4]+1)) {
				t.Fatalf("position %v/%v, want %s/%d", res["epoch"], res["offset"], epoch, off[4]+1)
			}
		})
	}
	for _, tt := range []struct {
		name          string
		since         int
		want          string
		wantRecovered bool
	}{
		{"gap filled from the history", 2, want(3, 4), true},
		{"beyond the history: latest value, not recovered", 0, want(4), false},
	} {
		t.Run("subscribe "+tt.name, func(t *testing.T) {
			c := dial(t, r.url())
			c.connect()
			c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q,"recover":true,"epoch":%q,"offset":%d}}`, ch, epoch, off[tt.since]+1))
			sub := c.mustNext()["subscribe"].(map[string]any)
			if got := offsets(sub["publications"]); got != tt.want || (sub["recovered"] == true) != tt.wantRecovered {
				t.Fatalf("reply %v: want publications at %s, recovered %v", sub, tt.want, tt.wantRecovered)
			}
		})
	}

	off2 := startRelay(t, testConfig(kafka.ListenAddrs())) // history_size 0
	c2 := dial(t, off2.url())
	c2.connect()
	c2.send(fmt.Sprintf(`{"id":3,"history":{"channel":%q,"limit":-1}}`, ch))
	if rep := c2.mustNext(); errorCode(rep) != 108 {
		t.Fatalf("without history: %v, want error 108", rep)
	}
}

// TestChannelListBounded: GET /v1/channels stops at half of
// websocket.max_queue_bytes of values, saying so, however many channels
// the limit asks for; a narrower prefix gets the rest.
func TestChannelListBounded(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	r.waitReady(t)
	prod := newProducer(t, kafka.ListenAddrs())
	big := `{"pad":"` + strings.Repeat("x", 64<<10) + `"}`
	var last string
	for i := range 12 { // 12 × 64 KiB: past the 512 KiB of the default 1 MiB queue
		last = fmt.Sprintf("odds:big:m%02d", i)
		r.waitCached(t, last, produce(t, prod, "odds", last, big))
	}
	code, body := r.get(t, "/v1/channels?prefix=odds:big:&limit=10000")
	if code != 200 || !strings.Contains(body, `"truncated":true`) || len(body) > 600<<10 || strings.Count(body, `"channel":`) < 1 {
		t.Fatalf("status %d, %d bytes, %d channels, truncated %v", code, len(body), strings.Count(body, `"channel":`), strings.Contains(body, `"truncated"`))
	}
	code, body = r.get(t, "/v1/channels?prefix="+last)
	if code != 200 || strings.Contains(body, "truncated") || !strings.Contains(body, last) {
		t.Fatalf("narrower prefix: status %d, truncated %v", code, strings.Contains(body, "truncated"))
	}
}
