package relay_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// TestCentrifugeSDK runs the unmodified npm centrifuge SDK against the
// relay: it connects, subscribes, gets the cached value then live updates
// produced into Kafka, and sees documented error codes.
//
// With delta, the SDK negotiates fossil deltas and must rebuild every value
// from patches computed by the relay.
func TestCentrifugeSDK(t *testing.T) {
	tests := []struct {
		name  string
		delta bool
		live  int
	}{{"plain", false, 25}, {"delta", true, 120}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testSDK(t, tt.delta, tt.live) })
	}
}

// sdkValue is an odds-like payload: mostly stable, a few numbers move.
func sdkValue(seq int) string {
	return fmt.Sprintf(`{"seq":%d,"market":"1x2","status":"open","selections":[{"id":"home","name":"Arsenal","odds":%.2f},{"id":"draw","name":"Draw","odds":3.40},{"id":"away","name":"Chelsea","odds":%.2f}],"note":"%s"}`,
		seq, 2.0+float64(seq%7)/100, 3.0-float64(seq%5)/100, strings.Repeat("stable text ", 20))
}

func testSDK(t *testing.T, withDelta bool, live int) {
	dir := jsTestDir(t)
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	const historySize = 8
	cfg.Channels.HistorySize = historySize
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:sdk-1:1x2"
	cached := produce(t, prod, "odds", ch, sdkValue(0))
	r.waitCached(t, ch, cached)

	cmd := exec.Command("node", "sdk.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGERELAY_URL="+r.url(), "CHANNEL="+ch, fmt.Sprintf("LIVE=%d", live))
	if withDelta {
		cmd.Env = append(cmd.Env, "DELTA=1")
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	type event struct {
		Event   string         `json:"event"`
		Data    map[string]any `json:"data"`
		Offset  uint64         `json:"offset"`
		Code    int            `json:"code"`
		Recover bool           `json:"recoverable"`
		Msg     string         `json:"msg"`
		Offsets []uint64       `json:"offsets"`
	}
	events := make(chan event)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("sdk.mjs printed %q", sc.Text())
				continue
			}
			events <- e
		}
	}()

	offsets := []uint64{uint64(cached) + 1}
	var seqs []float64
	var gotOffsets []uint64
	seen := map[string]event{}
	timeout := time.After(40 * time.Second)
	for done := false; !done; {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("sdk.mjs exited early; seen %v", seen)
			}
			seen[e.Event] = e
			switch e.Event {
			case "subscribed":
				for i := 1; i <= live; i++ {
					offsets = append(offsets, uint64(produce(t, prod, "odds", ch, sdkValue(i)))+1)
				}
			case "publication":
				seqs = append(seqs, e.Data["seq"].(float64))
				var want map[string]any
				json.Unmarshal([]byte(sdkValue(int(e.Data["seq"].(float64)))), &want)
				if fmt.Sprint(want) != fmt.Sprint(e.Data) {
					t.Fatalf("value %v, want %v", e.Data, want)
				}
				gotOffsets = append(gotOffsets, e.Offset)
			case "history":
				if want := offsets[len(offsets)-historySize:]; fmt.Sprint(e.Offsets) != fmt.Sprint(want) || e.Offset != offsets[len(offsets)-1] || e.Data["seq"] != float64(live) {
					t.Fatalf("history: publications at %v, position %d, newest %v; want %v, %d, seq %d", e.Offsets, e.Offset, e.Data, want, offsets[len(offsets)-1], live)
				}
			case "fail":
				t.Fatalf("sdk.mjs: %s", e.Msg)
			case "done":
				done = true
			}
		case <-timeout:
			t.Fatalf("timed out; events seen: %v", seen)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sdk.mjs: %v", err)
	}
	if seen["history"].Event == "" {
		t.Fatal("sdk.mjs printed no history")
	}
	if len(seqs) != live+1 || fmt.Sprint(gotOffsets) != fmt.Sprint(offsets) {
		t.Fatalf("publications seq %v offsets %v, want seq 0..%d at offsets %v", seqs, gotOffsets, live, offsets)
	}
	for i, s := range seqs {
		if s != float64(i) {
			t.Fatalf("publications out of order: %v", seqs)
		}
	}
	// The SDK runs on npm ws, which offers permessage-deflate: full
	// payloads (over 128 bytes) must have gone compressed.
	_, body := r.get(t, "/metrics")
	const written = "edgerelay_publication_bytes_written_total"
	want := written + `{compression="deflate",encoding="json",variant="full"}`
	if withDelta {
		want = written + `{compression="none",encoding="json",variant="delta_patch"}`
	}
	if metric(body, want) <= 0 {
		t.Errorf("no bytes counted for %s:\n%s", want, grep(body, written))
	}
	if !seen["subscribed"].Recover {
		t.Error("subscription not recoverable")
	}
	if got := seen["bad_unsubscribed"].Code; got != 107 {
		t.Errorf("invalid channel: unsubscribed with code %d, want 107", got)
	}
	if got := seen["rpc_error"].Code; got != 104 {
		t.Errorf("unknown rpc: code %d, want 104", got)
	}
}
