package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

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
	bin := buildRelay(t)
	kafka := startKafka(t, 3, "odds", "bets")
	brokers := kafka.ListenAddrs()

	const secret = "crash-test-secret-of-at-least-32-bytes"
	addr := freeAddr(t)
	relayProc := startRelayProcess(t, bin, addr, fmt.Sprintf(`listen: %q
node: crash-node
kafka: {brokers: [%q]}
ingest: {topics: [{name: odds}]}
auth: {hmac_secrets: [%q]}
bets: {rate_per_user: 1000000, burst_per_user: 1000000}
`, addr, brokers[0], secret), true)

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
				relayProc.kill()
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
