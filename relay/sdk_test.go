package relay_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jsTestDir returns tests/js with its node_modules installed. Outside CI a
// machine without them skips; in CI (scripts/test runs npm ci first) their
// absence fails the test.
func jsTestDir(t *testing.T) string {
	t.Helper()
	dir, _ := filepath.Abs("../tests/js")
	_, errNode := exec.LookPath("node")
	_, errMods := os.Stat(filepath.Join(dir, "node_modules", "centrifuge"))
	if errNode != nil || errMods != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node or tests/js/node_modules missing (scripts/test installs them): %v %v", errNode, errMods)
		}
		t.Skip("node or tests/js/node_modules missing; run scripts/test")
	}
	return dir
}

// nodeScript is a tests/js script running under node (startNode).
type nodeScript[E any] struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events <-chan E // its stdout, one JSON object a line; closed when stdout ends
}

// startNode runs `node script` in dir with env added to the test's
// environment and its stderr on the test's, and decodes each line it
// prints as an E (a line that is not JSON fails the test); line, if not
// nil, is given each event with the line as printed. The script is killed
// at the end of the test.
func startNode[E any](t testing.TB, dir, script string, env []string, line func(e *E, text string)) *nodeScript[E] {
	t.Helper()
	cmd := exec.Command("node", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	events := make(chan E)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			var e E
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("%s printed %q", script, sc.Text())
				continue
			}
			if line != nil {
				line(&e, sc.Text())
			}
			events <- e
		}
	}()
	return &nodeScript[E]{cmd: cmd, stdin: stdin, events: events}
}

// wait waits for the script to exit, once its events are read.
func (s *nodeScript[E]) wait() error { return s.cmd.Wait() }

// TestCentrifugeSDK runs the unmodified npm centrifuge SDK against the
// relay, in both of its builds: JSON (`centrifuge`) and Protobuf
// (`centrifuge/build/protobuf`: subprotocol centrifuge-protobuf, binary
// frames, data as bytes). Each connects with a token, subscribes, gets the
// cached value then live updates produced into Kafka at their Kafka
// positions, places a bet by rpc and retries it, reads the history, loses
// its socket while records are produced and recovers them on reconnect,
// and sees documented error codes.
//
// With delta, the SDK negotiates fossil deltas and must rebuild every value
// from patches computed by the relay (the Protobuf build patches raw bytes).
func TestCentrifugeSDK(t *testing.T) {
	tests := []struct {
		name     string
		encoding string
		delta    bool
		tls      bool // wss://, through the relay's own TLS (tls.go)
	}{
		{"json", "json", false, false},
		{"json+delta", "json", true, false},
		{"protobuf", "protobuf", false, false},
		{"protobuf+delta", "protobuf", true, false},
		{"protobuf+wss", "protobuf", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testSDK(t, tt.encoding, tt.delta, tt.tls) })
	}
}

// sdkValue is an odds-like payload: mostly stable, a few numbers move.
func sdkValue(seq int) string {
	return fmt.Sprintf(`{"seq":%d,"market":"1x2","status":"open","selections":[{"id":"home","name":"Arsenal","odds":%.2f},{"id":"draw","name":"Draw","odds":3.40},{"id":"away","name":"Chelsea","odds":%.2f}],"note":"%s"}`,
		seq, 2.0+float64(seq%7)/100, 3.0-float64(seq%5)/100, strings.Repeat("stable text ", 20))
}

// sdkEvent is one line printed by tests/js/sdk.mjs.
type sdkEvent struct {
	Event    string         `json:"event"`
	Data     map[string]any `json:"data"`
	Offset   uint64         `json:"offset"`
	Epoch    string         `json:"epoch"`
	Code     int            `json:"code"`
	Msg      string         `json:"msg"`
	Message  string         `json:"message"`
	Offsets  []uint64       `json:"offsets"`
	Seqs     []float64      `json:"seqs"`
	Protocol string         `json:"protocol"`
	// subscribed
	Recoverable     bool `json:"recoverable"`
	Recovered       bool `json:"recovered"`
	WasRecovering   bool `json:"was_recovering"`
	HasRecoveredPub bool `json:"has_recovered_publications"`
	// bet
	Reply map[string]any `json:"reply"`
	Raw   string         `json:"raw"`
	Bytes bool           `json:"bytes"`
	// done
	Frames struct{ Text, Binary int } `json:"frames"`

	line string // as printed
}

func testSDK(t *testing.T, encoding string, withDelta, overTLS bool) {
	const (
		live        = 120 // live updates after the cached value
		recover     = 20  // produced while the SDK's socket is down
		historySize = 200
		betID       = "sdk-bet-1"
		user        = "sdk-user"
	)
	dir := jsTestDir(t)
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Channels.HistorySize = historySize
	var ca *testCA
	if overTLS {
		ca = withTLS(t, &cfg)
	}
	r := startRelay(t, cfg)
	if ca != nil {
		r.useTLS(ca)
	}
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:sdk-1:1x2"
	cached := produce(t, prod, "odds", ch, sdkValue(0))
	r.waitCached(t, ch, cached)

	env := []string{"EDGERELAY_URL=" + r.url(), "CHANNEL=" + ch, "ENCODING=" + encoding,
		"LIVE=" + strconv.Itoa(live), "RECOVER=" + strconv.Itoa(recover), "TOKEN=" + token(t, user, time.Hour), "BET_ID=" + betID}
	if withDelta {
		env = append(env, "DELTA=1")
	}
	if ca != nil {
		env = append(env, "NODE_EXTRA_CA_CERTS="+ca.file)
	}
	script := startNode(t, dir, "sdk.mjs", env, func(e *sdkEvent, line string) { e.line = line })
	stdin, events := script.stdin, script.events

	offsets := []uint64{uint64(cached) + 1} // of every publication produced, in order
	var (
		seqs       []float64
		gotOffsets []uint64
		subscribed []sdkEvent
		bets       []sdkEvent
		dropped    sdkEvent
		last       []string // the latest events, for failure messages
	)
	seen := map[string]sdkEvent{}
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("sdk.mjs exited early; last events:\n%s", strings.Join(last, "\n"))
			}
			seen[e.Event] = e
			if last = append(last, e.line); len(last) > 8 {
				last = last[1:]
			}
			switch e.Event {
			case "subscribed":
				subscribed = append(subscribed, e)
				if len(subscribed) == 1 {
					for i := 1; i <= live; i++ {
						offsets = append(offsets, uint64(produce(t, prod, "odds", ch, sdkValue(i)))+1)
					}
				}
			case "publication":
				seq, _ := e.Data["seq"].(float64)
				var want map[string]any
				json.Unmarshal([]byte(sdkValue(int(seq))), &want)
				if fmt.Sprint(want) != fmt.Sprint(e.Data) {
					t.Fatalf("publication %d (offset %d): value %v, want %v", len(seqs), e.Offset, e.Data, want)
				}
				seqs = append(seqs, seq)
				gotOffsets = append(gotOffsets, e.Offset)
			case "history":
				want := offsets[max(0, len(offsets)-historySize):]
				if fmt.Sprint(e.Offsets) != fmt.Sprint(want) || e.Offset != offsets[len(offsets)-1] || e.Data["seq"] != float64(live) {
					t.Fatalf("history: publications at %v, position %d, newest %v; want %v, %d, seq %d", e.Offsets, e.Offset, e.Data, want, offsets[len(offsets)-1], live)
				}
				for i, s := range e.Seqs {
					if s != float64(i) {
						t.Fatalf("history seqs %v, want 0..%d", e.Seqs, live)
					}
				}
			case "bet":
				bets = append(bets, e)
			case "bet_error":
				t.Fatalf("rpc bet: error %d %q", e.Code, e.Message)
			case "dropped":
				// The SDK's socket is gone and its reconnect held: what is
				// produced now must come back by recovery.
				dropped = e
				if e.Offset != offsets[len(offsets)-1] {
					t.Fatalf("dropped at offset %d, want %d (the last one produced)", e.Offset, offsets[len(offsets)-1])
				}
				for i := live + 1; i <= live+recover; i++ {
					offsets = append(offsets, uint64(produce(t, prod, "odds", ch, sdkValue(i)))+1)
				}
				r.waitCached(t, ch, int64(offsets[len(offsets)-1]-1))
				if _, err := io.WriteString(stdin, "resume\n"); err != nil {
					t.Fatal(err)
				}
			case "fail":
				t.Fatalf("sdk.mjs: %s; last events:\n%s", e.Msg, strings.Join(last, "\n"))
			case "done":
				done = true
			}
		case <-timeout:
			t.Fatalf("timed out; %d publications, last events:\n%s", len(seqs), strings.Join(last, "\n"))
		}
	}
	if err := script.wait(); err != nil {
		t.Fatalf("sdk.mjs: %v", err)
	}

	if seen["connected"].Event == "" {
		t.Error("sdk.mjs printed no connected")
	}
	wantProto := map[string]string{"json": "", "protobuf": "centrifuge-protobuf"}[encoding]
	if got := seen["connected"].Protocol; got != wantProto {
		t.Errorf("negotiated subprotocol %q, want %q", got, wantProto)
	}
	if f := seen["done"].Frames; encoding == "json" && f.Binary != 0 || encoding == "protobuf" && f.Text != 0 {
		t.Errorf("%s: the relay sent %d text and %d binary frames", encoding, f.Text, f.Binary)
	}
	if seen["history"].Event == "" {
		t.Error("sdk.mjs printed no history")
	}
	if dropped.Event == "" {
		t.Error("sdk.mjs never dropped its socket")
	}
	if len(seqs) != live+recover+1 || fmt.Sprint(gotOffsets) != fmt.Sprint(offsets) {
		t.Fatalf("publications seq %v offsets %v, want seq 0..%d at offsets %v", seqs, gotOffsets, live+recover, offsets)
	}
	for i, s := range seqs {
		if s != float64(i) {
			t.Fatalf("publications out of order: %v", seqs)
		}
	}

	// Subscribed once, then again after the dropped socket, recovered.
	if len(subscribed) != 2 {
		t.Fatalf("subscribed %d times, want 2 (subscribe, recovery): %+v", len(subscribed), subscribed)
	}
	if s := subscribed[0]; !s.Recoverable || s.Offset != uint64(cached)+1 || s.Epoch == "" {
		t.Errorf("subscribed %+v: want recoverable at offset %d with an epoch", s, cached+1)
	}
	if s := subscribed[1]; !s.WasRecovering || !s.Recovered || !s.HasRecoveredPub || s.Epoch != subscribed[0].Epoch {
		t.Errorf("after the dropped socket: subscribed %+v, want was_recovering, recovered, recovered publications, epoch %q", s, subscribed[0].Epoch)
	}

	// The bet: its reply names the record in Kafka; the retry gets the same
	// reply and makes no second record.
	if len(bets) != 2 {
		t.Fatalf("%d bet replies, want 2", len(bets))
	}
	if fmt.Sprint(bets[0].Reply) != fmt.Sprint(bets[1].Reply) || encoding == "protobuf" && bets[0].Raw != bets[1].Raw {
		t.Errorf("retry answered %s, first %s", bets[1].Raw, bets[0].Raw)
	}
	if bets[0].Bytes != (encoding == "protobuf") {
		t.Errorf("%s: rpc reply data as bytes: %v", encoding, bets[0].Bytes)
	}
	// The reply came after Kafka's ack: the topic's end offsets already
	// count every record the relay produced.
	recs := topicRecords(t, kafka.ListenAddrs(), "bets")
	if len(recs) != 1 {
		t.Fatalf("%d records in the bets topic, want 1", len(recs))
	}
	_, body := r.get(t, "/metrics")
	if a, d := metric(body, `edgerelay_bets_total{result="accepted"}`), metric(body, `edgerelay_bets_total{result="duplicate"}`); a != 1 || d != 1 {
		t.Errorf("bets counted accepted %v, duplicate %v; want 1 and 1:\n%s", a, d, grep(body, "edgerelay_bets_total"))
	}
	rep, rec := bets[0].Reply, recs[0]
	if rep["bet_id"] != betID || rep["topic"] != "bets" || rep["partition"] != float64(rec.Partition) || rep["offset"] != float64(rec.Offset) ||
		header(rec, "bet-id") != betID || header(rec, "user") != user {
		t.Errorf("bet reply %s; record at %s/%d/%d, headers %v", bets[0].Raw, rec.Topic, rec.Partition, rec.Offset, rec.Headers)
	}
	var v struct {
		Bet map[string]any
	}
	if json.Unmarshal(rec.Value, &v); v.Bet["note"] != "opaque to the relay" || v.Bet["channel"] != ch {
		t.Errorf("bet record value %s", rec.Value)
	}

	// The SDK runs on npm ws, which offers permessage-deflate: full
	// payloads (over 128 bytes) must have gone compressed.
	const written = "edgerelay_publication_bytes_written_total"
	want := written + `{compression="deflate",encoding="` + encoding + `",variant="full"}`
	if withDelta {
		want = written + `{compression="none",encoding="` + encoding + `",variant="delta_patch"}`
	}
	if metric(body, want) <= 0 {
		t.Errorf("no bytes counted for %s:\n%s", want, grep(body, written))
	}
	if got := seen["bad_unsubscribed"].Code; got != 107 {
		t.Errorf("invalid channel: unsubscribed with code %d, want 107", got)
	}
	if got := seen["rpc_error"].Code; got != 104 {
		t.Errorf("unknown rpc: code %d, want 104", got)
	}
}
