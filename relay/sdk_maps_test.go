package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay"
)

// mapsConfig is testConfig with the match maps of docs/protocol.md: every
// channel under "odds:" is a map of the channels one segment below it.
func mapsConfig(brokers []string, page int) relay.Config {
	cfg := testConfig(brokers)
	cfg.Channels.Maps.Rules = []relay.MapRuleConfig{{Prefix: "odds:", Depth: 1}}
	cfg.Channels.Maps.PageSize = page
	return cfg
}

// mapChange is one record produced for a map entry: a value, or a
// tombstone (removed).
type mapChange struct {
	key      string
	value    string
	removed  bool
	priority bool      // the record has the header priority: 1
	at       time.Time // the record's timestamp (zero: now)
	offset   uint64    // protocol offset: Kafka offset + 1
}

// produceEntries writes one record per change, keyed by the map (so that
// a map's channels share a partition and its positions are Kafka's), the
// channel in the header; a removal is a tombstone (null value). It fills
// in each change's offset.
func produceEntries(t testing.TB, cl *kgo.Client, mapName string, changes []mapChange) {
	t.Helper()
	recs := make([]*kgo.Record, len(changes))
	for i, c := range changes {
		ch := mapName + ":" + c.key
		recs[i] = &kgo.Record{Topic: "odds", Key: []byte(mapName), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}}}
		if !c.removed {
			recs[i].Value = []byte(c.value)
		}
		recs[i].Timestamp = c.at
		if c.priority {
			recs[i].Headers = append(recs[i].Headers, kgo.RecordHeader{Key: "priority", Value: []byte("1")})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		changes[i].offset = uint64(r.Offset) + 1
	}
}

// waitMap waits until r's map has n live entries and its newest change is
// at protocol offset top (or later).
func waitMap(t testing.TB, r *testRelay, name string, n int, top uint64) {
	t.Helper()
	checkFor(t, 20*time.Second, func() error {
		var l int
		var got uint64
		if err := r.srv.Hub().ViewMap(name, func(v *fanout.MapView) { l, got = v.Len(), v.Top() }); err != nil {
			return err
		}
		if l != n || got < top {
			return fmt.Errorf("map %s: %d entries up to offset %d, want %d up to %d", name, l, got, n, top)
		}
		return nil
	})
}

func marketValue(key string, v int) string { return fmt.Sprintf(`{"market":%q,"v":%d}`, key, v) }

// mapEvent is one line printed by tests/js/maps.mjs.
type mapEvent struct {
	Event   string `json:"event"`
	Msg     string `json:"msg"`
	Entries []struct {
		Key    string          `json:"key"`
		Value  json.RawMessage `json:"value"`
		Offset uint64          `json:"offset"`
	} `json:"entries"`
	Key           string          `json:"key"`
	Removed       bool            `json:"removed"`
	Value         json.RawMessage `json:"value"`
	Offset        uint64          `json:"offset"`
	Epoch         string          `json:"epoch"`
	Recovered     bool            `json:"recovered"`
	WasRecovering bool            `json:"was_recovering"`
	Recoverable   bool            `json:"recoverable"`
	Code          int             `json:"code"`
	Delta         struct {
		NumDeltaPayloads int `json:"numDeltaPayloads"`
	} `json:"delta"`
	line string
}

// TestSDKMaps runs the npm centrifuge SDK's map subscription
// (client.newMapSubscription) against the relay, in both builds, and
// with the reconnect to the same node or to another one. The map of a
// match holds 2,000 markets, produced into Kafka; the relay's page size
// (channels.maps.page_size) is 100, so the SDK's snapshot ("sync") can
// only be complete if it paged by cursor. Then live: updates of existing
// markets, a market added (a new key) and one removed by a Kafka
// tombstone, each an "update" with its key and Kafka-derived offset.
// Then the socket drops; meanwhile 150 markets change (updated, added,
// removed: more than a stream page); the SDK reconnects (to the same or
// to a second relay reading the same Kafka), catches up from its
// position, recovered, and gets each change once, in offset order:
// nothing missing, nothing twice; then more live changes.
//
// With delta, the SDK subscribes with delta: 'fossil' (per-entry deltas)
// and must rebuild every value: a removed key added again comes in
// full, and after the reconnect keys it held from before the drop and
// from the catch-up are patched; the test checks how many patches the SDK
// decoded (sub.deltaStats()) against the changes that had a base.
func TestSDKMaps(t *testing.T) {
	for _, tt := range []struct {
		name, encoding   string
		otherNode, delta bool
	}{
		{"json", "json", false, false},
		{"protobuf", "protobuf", false, false},
		{"json+other-node", "json", true, false},
		{"protobuf+other-node", "protobuf", true, false},
		{"json+delta", "json", false, true},
		{"protobuf+delta+other-node", "protobuf", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) { testSDKMaps(t, tt.encoding, tt.otherNode, tt.delta) })
	}
}

// deltaValue is a market's value for the delta runs: large next to what
// changes, so that a patch pays.
func deltaValue(key string, v int) string {
	return fmt.Sprintf(`{"market":%q,"v":%d,"names":%q}`, key, v, strings.Repeat("home draw away ", 20))
}

func testSDKMaps(t *testing.T, encoding string, otherNode, delta bool) {
	const (
		markets = 2000
		page    = 100
		mapName = "odds:football:epl:match-123"
	)
	dir := jsTestDir(t)
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), page)
	r := startRelay(t, cfg)
	r2 := r
	if otherNode {
		r2 = startRelay(t, cfg)
	}
	prod := newProducer(t, kafka.ListenAddrs())

	state := map[string]mapChange{}
	apply := func(cs []mapChange) {
		for _, c := range cs {
			if c.removed {
				delete(state, c.key)
			} else {
				state[c.key] = c
			}
		}
	}
	value := marketValue
	if delta {
		value = deltaValue
	}
	snapshot := make([]mapChange, markets)
	for i := range snapshot {
		k := fmt.Sprintf("m%04d", i)
		snapshot[i] = mapChange{key: k, value: value(k, 0)}
	}
	produceEntries(t, prod, mapName, snapshot)
	apply(snapshot)
	top := snapshot[markets-1].offset
	waitMap(t, r, mapName, markets, top)

	// Live: two updates, a new market, a removal (tombstone), one more
	// update, the removed market added again and updated.
	liveChanges := []mapChange{
		{key: "m0005", value: value("m0005", 1)},
		{key: "m1999", value: value("m1999", 1)},
		{key: "new-1", value: value("new-1", 1)},
		{key: "m0007", removed: true},
		{key: "m0005", value: value("m0005", 2)},
		{key: "m0007", value: value("m0007", 5)},
		{key: "m0007", value: value("m0007", 6)},
	}
	// While the socket is down: 150 distinct markets (two stream pages).
	var downChanges []mapChange
	for i := 0; i < 150; i++ {
		k := fmt.Sprintf("m%04d", 100+i)
		switch {
		case i%10 == 3:
			downChanges = append(downChanges, mapChange{key: k, removed: true})
		case i%10 == 4:
			k = fmt.Sprintf("new-down-%03d", i)
			downChanges = append(downChanges, mapChange{key: k, value: value(k, 1)})
		default:
			downChanges = append(downChanges, mapChange{key: k, value: value(k, 3)})
		}
	}

	// After the catch-up: markets unchanged meanwhile (their delta base
	// is from before the reconnect), changed meanwhile (from the
	// catch-up), added meanwhile, removed meanwhile and added again.
	afterChanges := []mapChange{
		{key: "m0001", value: value("m0001", 7)},
		{key: "m0100", value: value("m0100", 7)},
		{key: "new-down-004", value: value("new-down-004", 7)},
		{key: "m0103", value: value("m0103", 7)},
		{key: "m0103", value: value("m0103", 8)},
		{key: "new-1", value: value("new-1", 7)},
	}
	// expectPatches is how many changes a delta subscriber gets as
	// patches: the live ones (not a catch-up's) of a key it holds.
	expectPatches := 0
	if delta {
		held := maps.Clone(state)
		for phase, cs := range [][]mapChange{liveChanges, downChanges, afterChanges} {
			catchUp := phase == 1
			for _, c := range cs {
				if _, ok := held[c.key]; ok && !c.removed && !catchUp {
					expectPatches++
				}
				if c.removed {
					delete(held, c.key)
				} else {
					held[c.key] = c
				}
			}
		}
	}

	env := []string{"EDGERELAY_URL=" + r.url(), "MAP=" + mapName, "PAGE=" + strconv.Itoa(page), "ENCODING=" + encoding,
		"LIVE=" + strconv.Itoa(len(liveChanges)), "RECOVER=" + strconv.Itoa(len(downChanges)), "AFTER=" + strconv.Itoa(len(afterChanges))}
	if delta {
		env = append(env, "DELTA=1")
	}
	if otherNode {
		env = append(env, "EDGERELAY_URL2="+r2.url())
	}
	script := startNode(t, dir, "maps.mjs", env, func(e *mapEvent, line string) { e.line = line })
	stdin, events := script.stdin, script.events

	var subscribed []mapEvent
	var updates []mapEvent
	var syncs int
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		var e mapEvent
		var ok bool
		select {
		case e, ok = <-events:
			if !ok {
				t.Fatalf("maps.mjs exited early")
			}
		case <-timeout:
			t.Fatalf("timed out; %d updates", len(updates))
		}
		switch e.Event {
		case "subscribed":
			subscribed = append(subscribed, e)
		case "sync":
			syncs++
			if len(e.Entries) != len(state) {
				t.Fatalf("sync: %d entries, want %d", len(e.Entries), len(state))
			}
			for _, got := range e.Entries {
				want, ok := state[got.Key]
				if !ok || !jsonEqual(got.Value, []byte(want.value)) || got.Offset != want.offset {
					t.Fatalf("sync: entry %s = %s at %d, want %+v", got.Key, got.Value, got.Offset, want)
				}
			}
			produceEntries(t, prod, mapName, liveChanges)
		case "update":
			updates = append(updates, e)
		case "dropped":
			produceEntries(t, prod, mapName, downChanges)
			apply(liveChanges)
			apply(downChanges)
			waitMap(t, r2, mapName, len(state), downChanges[len(downChanges)-1].offset)
			if _, err := io.WriteString(stdin, "resume\n"); err != nil {
				t.Fatal(err)
			}
		case "recovered":
			produceEntries(t, prod, mapName, afterChanges)
		case "fail":
			t.Fatalf("maps.mjs: %s", e.Msg)
		case "done":
			done = true
			if e.Delta.NumDeltaPayloads != expectPatches {
				t.Errorf("the SDK decoded %d patches (%s), want %d", e.Delta.NumDeltaPayloads, e.line, expectPatches)
			}
		}
	}
	if syncs != 1 {
		t.Errorf("%d syncs, want 1 (the reconnect recovers, no new snapshot)", syncs)
	}
	want := slices.Concat(liveChanges, downChanges, afterChanges)
	if len(updates) != len(want) {
		t.Fatalf("%d updates, want %d", len(updates), len(want))
	}
	for i, u := range updates {
		w := want[i]
		if u.Key != w.key || u.Removed != w.removed || u.Offset != w.offset || !w.removed && !jsonEqual(u.Value, []byte(w.value)) {
			t.Fatalf("update %d: %s, want %+v", i, u.line, w)
		}
	}
	if len(subscribed) != 2 {
		t.Fatalf("subscribed %d times, want 2: %+v", len(subscribed), subscribed)
	}
	if s := subscribed[0]; !s.Recoverable || s.Recovered || s.Offset != top || s.Epoch == "" || strings.HasPrefix(s.Epoch, "local-") {
		t.Errorf("first subscribe %s: want recoverable, not recovered, at offset %d of a Kafka epoch", s.line, top)
	}
	if s := subscribed[1]; !s.Recovered || !s.WasRecovering || s.Epoch != subscribed[0].Epoch {
		t.Errorf("after the reconnect: %s, want recovered in epoch %q", s.line, subscribed[0].Epoch)
	}
}

// TestSDKMapFull: a map passing channels.maps.max_entries while the SDK is
// subscribed ends the subscription with the documented unsubscribe code
// 2100 (the SDK's "unsubscribed" event, no resubscribe), and subscribing
// again is refused with 106. Both builds.
func TestSDKMapFull(t *testing.T) {
	for _, encoding := range []string{"json", "protobuf"} {
		t.Run(encoding, func(t *testing.T) {
			const mapName = "odds:football:epl:match-full"
			dir := jsTestDir(t)
			kafka := newKafka(t)
			cfg := mapsConfig(kafka.ListenAddrs(), 4)
			cfg.Channels.Maps.MaxEntries = 10
			r := startRelay(t, cfg)
			prod := newProducer(t, kafka.ListenAddrs())
			entries := make([]mapChange, 10)
			for i := range entries {
				k := fmt.Sprintf("m%d", i)
				entries[i] = mapChange{key: k, value: marketValue(k, 0)}
			}
			produceEntries(t, prod, mapName, entries)
			waitMap(t, r, mapName, 10, entries[9].offset)

			script := startNode[mapEvent](t, dir, "maps.mjs", []string{"EDGERELAY_URL=" + r.url(), "MAP=" + mapName, "PAGE=4", "ENCODING=" + encoding,
				"LIVE=1000", "RECOVER=0", "EXPECT_FULL=1"}, nil)
			var codes []int
			for e := range script.events {
				switch e.Event {
				case "sync":
					if len(e.Entries) != 10 {
						t.Fatalf("sync of %d entries, want 10", len(e.Entries))
					}
					produceEntries(t, prod, mapName, []mapChange{{key: "one-too-many", value: "{}"}})
				case "unsubscribed":
					codes = append(codes, e.Code)
				case "fail":
					t.Fatalf("maps.mjs: %s", e.Msg)
				}
			}
			if err := script.wait(); err != nil {
				t.Fatalf("maps.mjs: %v", err)
			}
			if fmt.Sprint(codes) != "[2100 106]" {
				t.Fatalf("unsubscribed with codes %v, want [2100 106]", codes)
			}
		})
	}
}
