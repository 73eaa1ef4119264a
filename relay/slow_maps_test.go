package relay_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/delta"
)

// mapConn follows the map subscriptions of a raw JSON client: for each
// map it applies every push (a value, a Fossil patch to the key's
// previous value when the subscription negotiated deltas, a removal) to
// its copy of the map, and records the changes it read.
type mapConn struct {
	t    testing.TB
	c    *wsClient
	maps map[string]*mapCopy
	id   int
}

// mapCopy is a client's copy of one map.
type mapCopy struct {
	fossil  bool
	state   map[string]string
	changes []mapChange
	patches int
	top     uint64 // offset of the newest change read
}

func newMapConn(t testing.TB, c *wsClient) *mapConn {
	return &mapConn{t: t, c: c, maps: map[string]*mapCopy{}, id: 100}
}

// subscribe subscribes to the map from its start (the stream phase from
// offset 0: every entry, then live), with fossil deltas or not, and
// returns its copy holding the entries of the reply.
func (mc *mapConn) subscribe(name string, fossil bool) *mapCopy {
	mc.t.Helper()
	d := ""
	if fossil {
		d = `,"delta":"fossil"`
	}
	mc.id++
	mc.c.send(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q,"type":1,"phase":1%s}}`, mc.id, name, d))
	r := mc.c.mustNext()
	res, _ := r["subscribe"].(map[string]any)
	if res == nil || res["phase"] != nil || (res["delta"] == true) != fossil {
		mc.t.Fatalf("map subscribe reply %v: want live (no phase), delta %v", r, fossil)
	}
	m := &mapCopy{fossil: fossil, state: map[string]string{}}
	pubs, _ := res["publications"].([]any)
	for _, p := range pubs {
		mc.apply(m, p.(map[string]any))
	}
	m.changes, m.patches = nil, 0 // the reply's entries are the start, not changes
	mc.maps[name] = m
	return m
}

// apply applies one publication to m.
func (mc *mapConn) apply(m *mapCopy, pub map[string]any) {
	mc.t.Helper()
	key, _ := pub["key"].(string)
	off, _ := pub["offset"].(float64)
	c := mapChange{key: key, offset: uint64(off), removed: pub["removed"] == true}
	switch {
	case c.removed:
		delete(m.state, key)
	case m.fossil:
		s, ok := pub["data"].(string)
		if !ok {
			mc.t.Fatalf("delta subscription: data %v is not a string", pub["data"])
		}
		if pub["delta"] == true {
			prev, held := m.state[key]
			if !held {
				mc.t.Fatalf("a patch for %s, whose value the client does not hold", key)
			}
			v, err := delta.Decode(nil, []byte(prev), []byte(s))
			if err != nil {
				mc.t.Fatalf("patch for %s at %d does not apply to the value held: %v", key, c.offset, err)
			}
			s = string(v)
			m.patches++
		}
		c.value = s
		m.state[key] = s
	default:
		b, _ := json.Marshal(pub["data"])
		c.value = string(b)
		m.state[key] = c.value
	}
	m.changes = append(m.changes, c)
	m.top = c.offset
}

// readThrough reads pushes until map name has the change at protocol
// offset top.
func (mc *mapConn) readThrough(name string, top uint64) {
	mc.t.Helper()
	for mc.maps[name].top < top {
		r := mc.c.mustNext()
		push, _ := r["push"].(map[string]any)
		pub, _ := push["pub"].(map[string]any)
		if m := mc.maps[fmt.Sprint(push["channel"])]; m != nil && pub != nil {
			mc.apply(m, pub)
		}
	}
}

// equalState checks that a client's copy of a map is the map's state.
func equalState(t *testing.T, who string, got map[string]string, want map[string]mapChange) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s holds %d entries, want %d", who, len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !jsonEqual([]byte(g), []byte(w.value)) {
			t.Fatalf("%s: entry %s = %.80s, want %.80s", who, k, g, w.value)
		}
	}
}

// mapModel is a map's state as produced, and the changes made.
type mapModel struct {
	name    string
	state   map[string]mapChange
	changes []mapChange
}

func (m *mapModel) apply(cs []mapChange) {
	for _, c := range cs {
		if c.removed {
			delete(m.state, c.key)
		} else {
			m.state[c.key] = c
		}
	}
	m.changes = append(m.changes, cs...)
}

// TestSlowMapConflation: per-key conflation of maps for a slow client.
// A client with a 4 KiB receive buffer subscribes to two maps of a match
// — "bulk", 20 keys whose 8 KB values change whole, and "delta", 5 keys
// with fossil deltas, one key's changes priority — and stops reading
// while each key changes 63 times (10 MB: more than the kernel's buffers,
// so its queue passes websocket.soft_queue_bytes); keys are removed and
// added again meanwhile, one removed at the end. A bystander subscribed
// to the same maps reads each round before the next is produced and gets
// every change in order. The slow client then reads again and must end
// with exactly each map's state, each key's newest value, having
// received every removal and every priority change, fewer changes than
// were made, and each map's changes in offset order (a conflated change
// goes last: a client dropped in between resumes from a position that
// misses nothing). One more change of each delta key then reaches it as
// a patch to the value conflation left it with, but the one of the key
// removed at the end, which comes in full.
func TestSlowMapConflation(t *testing.T) {
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), 100)
	cfg.WebSocket.SoftQueueBytes = 256 << 10
	cfg.WebSocket.MaxQueueBytes = 16 << 20
	cfg.WebSocket.StallTimeout = time.Minute
	cfg.Overload.ConflateAfter = time.Minute // the node never counts as behind
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())

	bulk := &mapModel{name: "odds:slow:match-1-bulk", state: map[string]mapChange{}}
	deltas := &mapModel{name: "odds:slow:match-1-delta", state: map[string]mapChange{}}
	round := func(m *mapModel, n int) []mapChange {
		var cs []mapChange
		for i := range map[*mapModel]int{bulk: 20, deltas: 5}[m] {
			k := fmt.Sprintf("k%02d", i)
			c := mapChange{key: k, value: deltaValue(k, n), priority: m == deltas && i == 0}
			if m == bulk {
				c.value = fmt.Sprintf(`{"k":%q,"r":%d,"pad":%q}`, k, n, strings.Repeat(fmt.Sprintf("%s-%04d.", k, n), 800))
			}
			switch {
			case i == 1 && n == 20, i == 2 && n == 63:
				c = mapChange{key: k, removed: true}
			case i == 1 && n > 20 && n < 40:
				continue // removed until round 40
			}
			cs = append(cs, c)
		}
		produceEntries(t, prod, m.name, cs)
		return cs
	}
	for _, m := range []*mapModel{bulk, deltas} {
		cs := round(m, 0)
		m.apply(cs)
		waitMap(t, r, m.name, len(cs), cs[len(cs)-1].offset)
		m.changes = nil
	}

	slow := newMapConn(t, stalledClient(t, r))
	slowBulk, slowDelta := slow.subscribe(bulk.name, false), slow.subscribe(deltas.name, true)
	byConn := r.dial(t)
	byConn.connect()
	by := newMapConn(t, byConn)
	by.subscribe(bulk.name, false)
	by.subscribe(deltas.name, true)
	for _, m := range []*mapModel{bulk, deltas} {
		equalState(t, "slow client", slow.maps[m.name].state, m.state)
		equalState(t, "bystander", by.maps[m.name].state, m.state)
	}

	for n := 1; n < 64; n++ {
		for _, m := range []*mapModel{bulk, deltas} {
			m.apply(round(m, n))
		}
		for _, m := range []*mapModel{bulk, deltas} {
			by.readThrough(m.name, m.changes[len(m.changes)-1].offset)
		}
	}
	checkFor(t, 20*time.Second, func() error {
		if _, body := r.get(t, "/metrics"); metric(body, "edgerelay_conflated_total") <= 0 {
			return fmt.Errorf("nothing conflated yet")
		}
		return nil
	})
	for _, m := range []*mapModel{bulk, deltas} {
		got := by.maps[m.name]
		if len(got.changes) != len(m.changes) {
			t.Fatalf("bystander: %d changes of %s, want all %d", len(got.changes), m.name, len(m.changes))
		}
		for i, c := range got.changes {
			if w := m.changes[i]; c.key != w.key || c.offset != w.offset || c.removed != w.removed {
				t.Fatalf("bystander's change %d of %s: %s at %d, want %s at %d", i, m.name, c.key, c.offset, w.key, w.offset)
			}
		}
		equalState(t, "bystander", got.state, m.state)
	}

	for _, m := range []*mapModel{bulk, deltas} {
		slow.readThrough(m.name, m.changes[len(m.changes)-1].offset)
	}
	for _, m := range []*mapModel{bulk, deltas} {
		got := slow.maps[m.name]
		equalState(t, "slow client", got.state, m.state)
		want, seen := map[string]int{}, map[string]int{} // removals and priority changes
		for _, c := range m.changes {
			if c.removed || c.priority {
				want[fmt.Sprint(c.key, c.removed)]++
			}
		}
		for i, c := range got.changes {
			if c.removed || m == deltas && c.key == "k00" {
				seen[fmt.Sprint(c.key, c.removed)]++
			}
			if i > 0 && c.offset <= got.changes[i-1].offset {
				t.Fatalf("slow client: %s's change of %s at offset %d after offset %d", m.name, c.key, c.offset, got.changes[i-1].offset)
			}
		}
		if !maps.Equal(seen, want) {
			t.Fatalf("slow client got removals and priority changes %v of %s, want %v", seen, m.name, want)
		}
		t.Logf("slow client: %d of %d changes of %s, %d patches", len(got.changes), len(m.changes), m.name, got.patches)
	}
	if len(slowBulk.changes) >= len(bulk.changes) {
		t.Fatalf("the slow client got all %d changes: nothing was conflated", len(bulk.changes))
	}

	// Reading again, the slow client gets patches to what it holds (k02,
	// removed at the end, comes back in full).
	patches := slowDelta.patches
	again := round(deltas, 100)
	held := 0
	for _, c := range again {
		if _, ok := deltas.state[c.key]; ok {
			held++
		}
	}
	deltas.apply(again)
	slow.readThrough(deltas.name, again[len(again)-1].offset)
	equalState(t, "slow client", slowDelta.state, deltas.state)
	if slowDelta.patches-patches != held || held != len(again)-1 {
		t.Fatalf("%d of the last %d changes came as patches, want %d", slowDelta.patches-patches, len(again), held)
	}
}

// TestSDKMapBehind: the node falls behind (overload.conflate_after: Kafka
// batches spanning seconds of record timestamps, so ingest publishes only
// each channel's, so each key's, last record of a batch) while an npm
// centrifuge SDK map subscription stops reading its socket. A map
// subscription is not held for conflation as a channel is: its queue
// grows with 1,500 keys changing (past what per-key conflation can keep
// under websocket.max_queue_bytes) and the relay closes it with 3008.
// Reading again, the SDK gets the close, reconnects, recovers from the
// position of the last change it read, and catches up compacted per key.
// It must end with exactly the map's state (nothing missing), its changes
// in offset order with none twice (nothing repeated across the close),
// and each key at most once in the catch-up. The JSON build only: what
// is tested is the relay's queue and the map's catch-up, the same for
// both encodings (TestSDKMaps runs both), and 6 MB through the SDK takes
// a while under -race.
func TestSDKMapBehind(t *testing.T) {
	const encoding = "json"
	const mapName = "odds:behind:match-1"
	dir := jsTestDir(t)
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), 100)
	cfg.WebSocket.SoftQueueBytes = 64 << 10
	cfg.WebSocket.MaxQueueBytes = 512 << 10
	cfg.WebSocket.StallTimeout = time.Minute // closed for its queue, not for stalling
	cfg.WebSocket.WriteTimeout = time.Minute // the close frame waits for the client to read
	cfg.Overload.ConflateAfter = 20 * time.Millisecond
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())

	m := &mapModel{name: mapName, state: map[string]mapChange{}}
	first := make([]mapChange, 10)
	for i := range first {
		k := fmt.Sprintf("a%d", i)
		first[i] = mapChange{key: k, value: marketValue(k, 0)}
	}
	produceEntries(t, prod, mapName, first)
	m.apply(first)
	waitMap(t, r, mapName, len(first), first[len(first)-1].offset)
	live := []mapChange{{key: "a1", value: marketValue("a1", 1)}, {key: "a2", removed: true}}

	// 1,500 keys of 4 KB (6 MB: more than the kernel's buffers and the
	// queue), each set twice in a row first (ingest keeps only the last),
	// a1 removed and added again, a3 removed; timestamps 2 ms apart.
	var load []mapChange
	rng := rand.New(rand.NewPCG(1, 2))
	pad := make([]byte, 3000) // random, base64: permessage-deflate cannot shrink it much
	for i := 0; i < 1500; i++ {
		k := fmt.Sprintf("k%04d", i)
		for v := 1; v <= 3; v++ {
			value := fmt.Sprintf(`{"k":%q,"v":%d}`, k, v)
			if v == 3 {
				for j := range pad {
					pad[j] = byte(rng.Uint32())
				}
				value = fmt.Sprintf(`{"k":%q,"v":%d,"pad":%q}`, k, v, base64.StdEncoding.EncodeToString(pad))
			}
			load = append(load, mapChange{key: k, value: value})
		}
		switch i {
		case 500:
			load = append(load, mapChange{key: "a1", removed: true})
		case 900:
			load = append(load, mapChange{key: "a1", value: marketValue("a1", 9)}, mapChange{key: "a3", removed: true})
		}
	}

	script := startNode(t, dir, "maps.mjs", []string{"EDGERELAY_URL=" + r.url(), "MAP=" + mapName, "PAGE=100", "ENCODING=" + encoding,
		"LIVE=" + fmt.Sprint(len(live)), "RECOVER=1000000000", "PAUSE=1"}, func(e *mapEvent, line string) {
		e.line = line
		if e.Event != "update" {
			t.Log(line)
		}
	})
	var updates []mapEvent
	var subscribed []int // index in updates of each subscribe
	var codes []int
	held := map[string]string{}
	timeout := time.After(90 * time.Second)
	for done := false; !done; {
		var e mapEvent
		var ok bool
		select {
		case e, ok = <-script.events:
			if !ok {
				t.Fatal("maps.mjs exited early")
			}
		case <-timeout:
			t.Fatalf("timed out; %d updates", len(updates))
		}
		switch e.Event {
		case "sync":
			for _, en := range e.Entries {
				held[en.Key] = string(en.Value)
			}
			produceEntries(t, prod, mapName, live)
			m.apply(live)
		case "subscribed":
			subscribed = append(subscribed, len(updates))
		case "connecting":
			codes = append(codes, e.Code)
		case "paused":
			stamp := time.Now().Add(-time.Minute)
			for i := range load {
				load[i].at = stamp.Add(time.Duration(i) * 2 * time.Millisecond)
			}
			produceEntries(t, prod, mapName, load)
			m.apply(load)
			checkFor(t, 60*time.Second, func() error {
				_, body := r.get(t, "/metrics")
				if metric(body, `edgerelay_disconnects_total{code="3008"}`) != 1 {
					return fmt.Errorf("not closed as slow yet:\n%s", grep(body, "edgerelay_"))
				}
				if hub := sumMetric(body, "edgerelay_updates_conflated_total", `stage="hub"`); hub <= 0 {
					return fmt.Errorf("ingest never fell behind")
				}
				return nil
			})
			if _, err := io.WriteString(script.stdin, "resume\n"); err != nil {
				t.Fatal(err)
			}
		case "update":
			updates = append(updates, e)
			if e.Offset == load[len(load)-1].offset {
				io.WriteString(script.stdin, "stop\n")
			}
		case "fail":
			t.Fatalf("maps.mjs: %s", e.Msg)
		case "done":
			done = true
		}
	}
	if !slices.Contains(codes, 3008) {
		t.Errorf("the SDK reconnected after codes %v, want 3008 among them", codes)
	}
	if len(subscribed) != 2 {
		t.Fatalf("subscribed %d times, want 2", len(subscribed))
	}
	catchUp := map[string]bool{}
	for i, u := range updates {
		if i > 0 && u.Offset <= updates[i-1].Offset {
			t.Fatalf("update %s after offset %d: out of order or twice", u.line, updates[i-1].Offset)
		}
		if i >= subscribed[1] {
			if catchUp[u.Key] {
				t.Fatalf("key %s twice in the catch-up", u.Key)
			}
			catchUp[u.Key] = true
		}
		if u.Removed {
			delete(held, u.Key)
		} else {
			held[u.Key] = string(u.Value)
		}
	}
	equalState(t, "SDK", held, m.state)
	t.Logf("%d updates before the close, %d in the catch-up, for %d changes", subscribed[1], len(updates)-subscribed[1], len(live)+len(load))
}

// sumMetric sums the series of a metric whose labels contain label.
func sumMetric(body, name, label string) float64 {
	var sum float64
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+"{") && strings.Contains(l, label) {
			if i := strings.LastIndexByte(l, ' '); i > 0 {
				if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
					sum += v
				}
			}
		}
	}
	return sum
}
