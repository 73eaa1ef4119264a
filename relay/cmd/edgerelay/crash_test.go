package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/relay/auth"
)

// TestBetsCrashSafety kills the relay process (SIGKILL) in the middle of a
// stream of bets that the centrifuge SDK places from a separate process,
// 16 at a time. Every bet that got an accepted reply must be in Kafka
// exactly once, at the partition and offset the reply named. Bets that
// were in flight at the kill may or may not be there: the client got no
// reply for them and retries with the same bet id (docs/bets.md).
func TestBetsCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs Node")
	}
	jsDir, _ := filepath.Abs("../../../tests/js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "centrifuge")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tests/js/node_modules missing (scripts/test installs them): %v", err)
		}
		t.Skip("tests/js/node_modules missing; run scripts/test")
	}
	bin := filepath.Join(t.TempDir(), "edgerelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	kafka, err := kfake.NewCluster(kfake.SeedTopics(3, "odds", "bets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	brokers := kafka.ListenAddrs()

	const secret = "crash-test-secret-of-at-least-32-bytes"
	addr := freeAddr(t)
	cfgFile := filepath.Join(t.TempDir(), "relay.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, `listen: %q
node: crash-node
kafka: {brokers: [%q]}
ingest: {topics: [{name: odds}]}
auth: {hmac_secrets: [%q]}
bets: {rate_per_user: 1000000, burst_per_user: 1000000}
`, addr, brokers[0], secret), 0o644)
	relayCmd := exec.Command(bin, "serve", "--config", cfgFile, "--log-level", "warn")
	relayCmd.Stderr = os.Stderr
	if err := relayCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer relayCmd.Process.Kill()

	const market = "odds:football:epl:crash-1:1x2"
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	rec := &kgo.Record{Topic: "odds", Value: []byte(`{"status":"open"}`), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(market)}}}
	if err := prod.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, "http://"+addr+"/v1/channels?prefix=odds:", market)

	tok, _ := auth.SignHS256([]byte(secret), map[string]any{"sub": "carol", "exp": time.Now().Add(time.Hour).Unix()})
	node := exec.Command("node", "bets.mjs")
	node.Dir = jsDir
	node.Env = append(os.Environ(), "EDGERELAY_URL=ws://"+addr+"/connection/websocket", "TOKEN="+tok,
		"CHANNEL="+market, "COUNT=1000000", "PREFIX=crash", "CONCURRENCY=16")
	node.Stderr = os.Stderr
	stdout, _ := node.StdoutPipe()
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer node.Process.Kill()

	type reply struct {
		BetID     string `json:"bet_id"`
		Partition int32
		Offset    int64
	}
	accepted := map[string]reply{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Let a few hundred bets be accepted, then kill the relay with bets in
	// flight; replies already on the wire are read until the client has
	// seen the connection drop for a while.
	const killAfter = 300
	var killed bool
	grace := time.NewTimer(time.Minute)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				done = true
				break
			}
			var ev struct {
				Event string
				Reply reply
			}
			json.Unmarshal([]byte(l), &ev)
			if ev.Event == "accepted" {
				if _, dup := accepted[ev.Reply.BetID]; dup {
					t.Errorf("two accepted replies for %s", ev.Reply.BetID)
				}
				accepted[ev.Reply.BetID] = ev.Reply
			}
			if !killed && len(accepted) >= killAfter {
				relayCmd.Process.Signal(syscall.SIGKILL)
				relayCmd.Wait()
				killed = true
				grace.Reset(2 * time.Second)
			}
		case <-grace.C:
			done = true
		}
	}
	node.Process.Kill()
	node.Wait()
	if !killed {
		t.Fatalf("only %d bets accepted before the client stopped or a minute passed", len(accepted))
	}

	// Every record of the bets topic, up to the end offsets now.
	recs := readAll(t, brokers, "bets")
	count := map[string]int{}
	for _, r := range recs {
		id := ""
		for _, h := range r.Headers {
			if h.Key == "bet-id" {
				id = string(h.Value)
			}
		}
		count[id]++
		if rep, ok := accepted[id]; ok && (rep.Partition != r.Partition || rep.Offset != r.Offset) {
			t.Errorf("%s: reply named %d/%d, record is at %d/%d", id, rep.Partition, rep.Offset, r.Partition, r.Offset)
		}
	}
	for id := range accepted {
		if count[id] != 1 {
			t.Errorf("accepted bet %s is in Kafka %d times, want exactly once", id, count[id])
		}
	}
	for id, n := range count {
		if n > 1 {
			t.Errorf("bet %s is in Kafka %d times", id, n)
		}
	}
	t.Logf("killed after %d accepted replies; %d records in Kafka (%d were in flight at the kill, unanswered)",
		len(accepted), len(recs), len(recs)-len(accepted))
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHTTP polls url until its body contains want.
func waitHTTP(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q (last error %v)", url, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readAll consumes topic from the start up to its current end offsets.
func readAll(t *testing.T, brokers []string, topic string) []*kgo.Record {
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
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return recs
}
