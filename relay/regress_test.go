package relay_test

// Regression tests for defects found in review: each failed before its fix.

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Conflation moves a newer publication in front of an unsubscribe/subscribe
// pair: the client ends with the older cached value from the subscribe reply.
func TestConflationKeepsResubscribeOrder(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.SoftQueueBytes = 64 << 10
	cfg.WebSocket.MaxQueueBytes = 64 << 20
	cfg.WebSocket.StallTimeout = time.Minute
	r := startRelay(t, cfg)
	const ch = "odds:resub:1x2"
	c := stalledClient(t, r, ch)
	prod := newProducer(t, kafka.ListenAddrs())
	const n = 1500
	r.waitCached(t, ch, produceSequence(t, prod, ch, n, 0))
	// what the SDK does on sub.unsubscribe(); sub.subscribe()
	c.send(`{"id":100,"unsubscribe":{"channel":"`+ch+`"}}`, `{"id":101,"subscribe":{"channel":"`+ch+`"}}`)
	time.Sleep(300 * time.Millisecond) // ordering setup, not a timing check: the commands are handled before the final record
	final := produce(t, prod, "odds", ch, fmt.Sprintf(`{"seq":%d}`, n+1))
	r.waitCached(t, ch, final)
	// Read like the SDK: pushes between sending unsubscribe and the
	// subscribe reply are dropped; afterwards the last value wins.
	view, subscribed, seen := 0, true, []string{}
	// A 4 KiB receive window can stall TCP for seconds (zero-window
	// probes back off), so read until the final value, with next's 15 s.
	for gotFinal := false; !gotFinal; {
		v, err := c.next()
		if err != nil {
			t.Logf("stream ended: %v", err)
			break
		}
		if _, data, _, ok := pubOf(v); ok && int(data["seq"].(float64)) == n+1 {
			gotFinal = true
		}
		if _, data, _, ok := pubOf(v); ok {
			seq := int(data["seq"].(float64))
			if seq > n-3 {
				seen = append(seen, fmt.Sprintf("push %d", seq))
			}
			if subscribed {
				view = seq
			}
			continue
		}
		switch id := v["id"]; id {
		case float64(100):
			seen = append(seen, "unsubscribe reply")
			subscribed = false // in fact the SDK drops from the moment it sends
		case float64(101):
			pubs, _ := v["subscribe"].(map[string]any)["publications"].([]any)
			if len(pubs) > 0 {
				view = int(pubs[0].(map[string]any)["data"].(map[string]any)["seq"].(float64))
			}
			seen = append(seen, fmt.Sprintf("subscribe reply (cached seq %d)", view))
			subscribed = true
		}
	}
	t.Logf("tail of stream: %v", seen)
	if view != n+1 {
		t.Errorf("client ends with seq %d, latest is %d", view, n+1)
	}
}

// Replies are not bounded by max_queue_bytes: a client that reads slowly
// and sends subscribe/unsubscribe for a channel with a big cached value makes
// the relay queue far more than max_queue_bytes, with no 3008.
func TestRepliesBoundedByQueueLimit(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.SoftQueueBytes = 64 << 10
	cfg.WebSocket.MaxQueueBytes = 1 << 20
	r := startRelay(t, cfg)
	const ch = "odds:big"
	prod := newProducer(t, kafka.ListenAddrs())
	off := produce(t, prod, "odds", ch, fmt.Sprintf(`{"pad":%q}`, strings.Repeat("z", 60000)))
	r.waitCached(t, ch, off)
	c := stalledClient(t, r)
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	id := 10
	for k := 0; k < 20; k++ {
		var cmds []string
		for j := 0; j < 100; j++ {
			cmds = append(cmds, fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, id, ch), fmt.Sprintf(`{"id":%d,"unsubscribe":{"channel":%q}}`, id+1, ch))
			id += 2
		}
		c.send(cmds...)
	}
	checkFor(t, 10*time.Second, func() error {
		if _, body := r.get(t, "/metrics"); !strings.Contains(body, `edgerelay_disconnects_total{code="3008"} 1`) {
			return fmt.Errorf("no slow disconnect yet")
		}
		return nil
	})
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	_, body := r.get(t, "/metrics")
	t.Logf("client sent ~%d KiB; heap grew %d MiB; disconnects: %s", 20*100*80/1024, (int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))>>20, grep(body, "edgerelay_disconnects_total"))
	if int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc) > 10*int64(cfg.WebSocket.MaxQueueBytes) {
		t.Errorf("queue grew far past max_queue_bytes=%d without a slow disconnect", cfg.WebSocket.MaxQueueBytes)
	}
	// Its hang-up, not the close deadline (websocket.write_timeout, as
	// its close frame usually waits behind unread replies), ends the
	// session: the
	// engine no longer handles the commands of a closing connection
	// (they kept its poller busy for seconds, past the shutdown timeout
	// on a loaded machine; relay/engine TestNoMessageAfterEngineClose).
	c.conn.Close()
	checkFor(t, cfg.WebSocket.WriteTimeout/2, func() error {
		if _, body := r.get(t, "/metrics"); metric(body, "edgerelay_connections") != 0 {
			return fmt.Errorf("the closed client's session is still there")
		}
		return nil
	})
}

// A short HTTP/1.0 request (HAProxy-style health check) is shorter than the
// acceptor's Peek and waits for the 10 s handshake timeout.
func TestShortHTTPRequestAnsweredAtOnce(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	nc, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	fmt.Fprint(nc, "GET /healthz HTTP/1.0\r\n\r\n")
	buf := make([]byte, 512)
	nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, err := nc.Read(buf)
	took := time.Since(start)
	t.Logf("answer after %v: %q %v", took, buf[:min(n, 20)], err)
	if took > 2*time.Second {
		t.Errorf("25-byte request answered after %v", took)
	}
}

// Readiness is only "a broker answered a ping": the node reports ready and
// serves subscribes while it is still replaying ingest.start.last_records.
func TestReadyOnlyAfterStartWindow(t *testing.T) {
	kafka := newKafka(t)
	prod := newProducer(t, kafka.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	const ch = "odds:catchup"
	const n = 3000
	pad := strings.Repeat("p", 1000)
	var recs []*kgo.Record
	for i := 1; i <= n; i++ {
		recs = append(recs, &kgo.Record{Topic: "odds", Value: []byte(fmt.Sprintf(`{"seq":%d,"pad":%q}`, i, pad)), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}}})
	}
	if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(kafka.ListenAddrs())
	r := startRelay(t, cfg)
	r.waitReady(t)
	c := dial(t, r.url())
	c.connect()
	c.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	first := -1
	v := c.mustNext()
	if pubs, _ := v["subscribe"].(map[string]any)["publications"].([]any); len(pubs) > 0 {
		first = int(pubs[0].(map[string]any)["data"].(map[string]any)["seq"].(float64))
	}
	// Anything queued before the ping reply would be replayed history.
	c.send(`{"id":3,"ping":{}}`)
	pushes := 0
	for v := c.mustNext(); v["id"] != 3.0; v = c.mustNext() {
		if _, _, _, ok := pubOf(v); ok {
			pushes++
		}
	}
	t.Logf("ready node: subscribe reply seq=%d (latest %d, -1 = none), then %d historical pushes", first, n, pushes)
	if first != n {
		t.Errorf("node was ready but served seq %d instead of the latest %d and replayed %d old updates live", first, n, pushes)
	}
}

// read_uncommitted: records of an aborted transaction are published.
func TestAbortedTransactionsSkipped(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	r.waitReady(t)
	tx, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.TransactionalID("review"), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	rec := &kgo.Record{Topic: "odds", Value: []byte(`{"aborted":true}`), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:tx")}}}
	if err := tx.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := tx.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	// and a committed one on the same partition
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	rec2 := &kgo.Record{Topic: "odds", Partition: rec.Partition, Value: []byte(`{"committed":true}`), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:tx2")}}}
	if err := tx.ProduceSync(ctx, rec2).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	r.waitCached(t, "odds:tx2", rec2.Offset) // committed after the aborted one, same partition
	if p := r.srv.Hub().Last("odds:tx"); p != nil {
		t.Errorf("aborted record cached and pushed: %s", p.Data)
	}
	_, body := r.get(t, "/metrics")
	t.Logf("lag after abort marker: %s", grep(body, "edgerelay_kafka_lag_records{"))
}
