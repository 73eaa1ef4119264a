package relay_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestHistoryAmplification: one small message of many history commands
// must not make the node build replies far past websocket.max_queue_bytes
// before it notices; a history reply that could never be queued is
// refused with 106. A bystander keeps receiving.
func TestHistoryAmplification(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Channels.HistorySize = 1000
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:amp:1"
	pad := strings.Repeat("p", 2000)
	var last int64
	for i := 0; i < 300; i++ { // ~600 KB of history: over half the 1 MiB queue
		last = produce(t, prod, "odds", ch, fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
	}
	r.waitCached(t, ch, last)

	bystander := dial(t, r.url())
	bystander.connect()
	bystander.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	bystander.mustNext()

	c := dial(t, r.url())
	c.connect()
	c.send(`{"id":2,"history":{"channel":"` + ch + `","limit":-1}}`)
	if rep := c.mustNext(); errorCode(rep) != 106 {
		t.Fatalf("history of 600 KB: %v, want error 106", rep)
	}

	// 200 history commands of ~400 KB replies each in one 12 KB message:
	// unbounded, the node would build ~80 MB of replies (more in
	// encoding garbage) before the queue limit closed the client.
	var cmds []string
	for i := 0; i < 200; i++ {
		cmds = append(cmds, fmt.Sprintf(`{"id":%d,"history":{"channel":%q,"limit":200}}`, 10+i, ch))
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c.send(cmds...)
	c.expectClose(3008)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 48<<20 {
		t.Errorf("the node allocated %d MB answering one 12 KB message, want under 48", alloc>>20)
	}

	produce(t, prod, "odds", ch, `{"after":1}`)
	if _, data, _, ok := pubOf(bystander.mustNext()); !ok || data["after"] != 1.0 {
		t.Fatalf("bystander got %v", data)
	}
}

// TestCommandRate: past websocket.commands_per_second a connection's
// commands are refused with 111; one that goes on by another burst is
// closed with 3013. A bystander keeps receiving.
func TestCommandRate(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.WebSocket.MaxSubscriptions = 8
	cfg.WebSocket.CommandsPerSecond, cfg.WebSocket.CommandsBurst = 0.001, 10 // no refill during the test
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:rate:1"
	bystander := dial(t, r.url())
	bystander.connect()
	bystander.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	bystander.mustNext()

	c := dial(t, r.url())
	c.connect() // 1 of the burst of 10
	var pings []string
	for i := 0; i < 10; i++ {
		pings = append(pings, fmt.Sprintf(`{"id":%d,"ping":{}}`, 10+i))
	}
	c.send(pings...)
	for i := 0; i < 10; i++ {
		rep := c.mustNext()
		want := 0
		if i == 9 {
			want = 111 // the 11th command
		}
		if errorCode(rep) != want {
			t.Fatalf("reply %d: %v, want error %d", i, rep, want)
		}
	}
	c.send(pings...) // another burst's worth without slowing down
	c.expectClose(3013)

	produce(t, prod, "odds", ch, `{"after":1}`)
	if _, data, _, ok := pubOf(bystander.mustNext()); !ok || data["after"] != 1.0 {
		t.Fatalf("bystander got %v", data)
	}
	if _, body := r.get(t, "/metrics"); metric(body, "edgerelay_commands_refused_total") < 2 {
		t.Errorf("refusals not counted:\n%s", grep(body, "refused"))
	}
}
