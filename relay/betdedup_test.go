package relay_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// shutdown stops r and waits for Serve to return (leaving its result for
// the cleanup).
func (r *testRelay) shutdown(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(15 * time.Second):
		t.Fatal("relay did not shut down")
	}
}

// betReply sends rpc bet on c and returns the reply.
func betReply(c *wsClient, id int, body string) map[string]any {
	c.send(fmt.Sprintf(`{"id":%d,"rpc":{"method":"bet","data":%s}}`, id, body))
	return c.mustNext()
}

// TestBetRetryAcrossNodes: a bet Kafka acknowledged on node A, which died
// before its reply was read, retried through node B gets A's record's
// position and no second record; the same bet id for another bet gets
// 1006 on B; and a node started after the bet recognises it too.
func TestBetRetryAcrossNodes(t *testing.T) {
	kafka := newBetsKafka(t)
	const ch = "odds:football:epl:dedup-1:1x2"
	prod := newProducer(t, kafka.ListenAddrs())
	off := produce(t, prod, "odds", ch, `{"status":"open"}`)
	start := func(node string) *testRelay {
		cfg := betsConfig(kafka.ListenAddrs())
		cfg.Node = node
		cfg.Bets.DedupSyncTimeout = cfg.Bets.Timeout // a loaded machine must not turn a wait into a second record
		r := startRelay(t, cfg)
		r.waitCached(t, ch, off)
		return r
	}
	connect := func(r *testRelay) *wsClient {
		c := dial(t, r.url())
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, "dave", time.Hour)))
		if rep := c.mustNext(); rep["connect"] == nil {
			t.Fatalf("connect: %v", rep)
		}
		return c
	}
	bet := fmt.Sprintf(`{"bet_id":"x1","channel":%q,"selection":"home","odds":2.1,"stake":5}`, ch)

	a, b := start("node-a"), start("node-b")
	onA := connect(a)
	onA.send(fmt.Sprintf(`{"id":2,"rpc":{"method":"bet","data":%s}}`, bet)) // the reply is never read
	checkFor(t, 10*time.Second, func() error {
		if n := len(topicRecords(t, kafka.ListenAddrs(), "bets")); n != 1 {
			return fmt.Errorf("%d records in the bets topic, want the bet's", n)
		}
		return nil
	})
	onA.conn.Close()
	a.shutdown(t)
	rec := topicRecords(t, kafka.ListenAddrs(), "bets")[0]
	if header(rec, "node") != "node-a" || len(header(rec, "bet-sha256")) != 64 {
		t.Fatalf("record headers %v: want node-a's, with bet-sha256", rec.Headers)
	}
	checkReply := func(where string, rep map[string]any) {
		t.Helper()
		rpc, _ := rep["rpc"].(map[string]any)
		data, _ := rpc["data"].(map[string]any)
		if data == nil || data["partition"] != float64(rec.Partition) || data["offset"] != float64(rec.Offset) || data["bet_id"] != "x1" {
			t.Fatalf("retry on %s: %v, want node a's record at %d/%d", where, rep, rec.Partition, rec.Offset)
		}
	}

	onB := connect(b)
	checkReply("node b", betReply(onB, 2, bet))
	if _, body := b.get(t, "/metrics"); metric(body, `edgerelay_bets_total{result="duplicate_remote"}`) != 1 {
		t.Errorf("node b counted no retry answered from a remote record")
	}
	t.Run("same id, another bet", func(t *testing.T) {
		other := strings.Replace(bet, `"stake":5`, `"stake":6`, 1)
		if got := errorCode(betReply(onB, 3, other)); got != 1006 {
			t.Fatalf("error code %d, want 1006", got)
		}
	})
	t.Run("node started after the bet", func(t *testing.T) {
		c := start("node-c")
		checkReply("node c", betReply(connect(c), 2, bet))
	})
	if n := len(topicRecords(t, kafka.ListenAddrs(), "bets")); n != 1 {
		t.Fatalf("%d records in the bets topic, want 1", n)
	}
}
