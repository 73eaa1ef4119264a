package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// tagEvent is one line printed by tests/js/tagfilter.mjs.
type tagEvent struct {
	Event         string            `json:"event"`
	Recovered     bool              `json:"recovered"`
	WasRecovering bool              `json:"was_recovering"`
	Msg           string            `json:"msg"`
	Sub           string            `json:"sub"`
	Seq           *int              `json:"seq"`
	Tags          map[string]string `json:"tags"`
	Key           string            `json:"key"`
	Removed       bool              `json:"removed"`
	Code          int               `json:"code"`
	Entries       []struct {
		Key  string            `json:"key"`
		Tags map[string]string `json:"tags"`
		Seq  int               `json:"seq"`
	} `json:"entries"`
}

// tagRecord is one record TestSDKTagFilter produces: seq in the value,
// its tags as headers.
type tagRecord struct {
	channel string
	seq     int
	tags    map[string]string
}

func produceTagged(t testing.TB, cl *kgo.Client, recs []tagRecord, key string) {
	t.Helper()
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		hs := []kgo.RecordHeader{{Key: "channel", Value: []byte(r.channel)}}
		for _, k := range slices.Sorted(maps.Keys(r.tags)) {
			hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(r.tags[k])})
		}
		krs[i] = &kgo.Record{Topic: "odds", Key: []byte(key), Value: []byte(fmt.Sprintf(`{"seq":%d}`, r.seq)), Headers: hs}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// deepFilter is a chain of n "not" nodes around one comparison.
func deepFilter(n int) map[string]any {
	f := map[string]any{"key": "group", "cmp": "eq", "val": "main"}
	for range n {
		f = map[string]any{"op": "not", "nodes": []any{f}}
	}
	return f
}

// TestSDKTagFilter: publication filtering by tags (docs/protocol.md, "Tag
// filters") through the npm centrifuge SDK's `tagsFilter`, in both
// builds. Records carry the tag headers of ingest.tag_headers (group,
// suspended; a header not listed, "secret", is no tag). A subscription
// whose filter is "group is main and not suspended" gets exactly the
// matching publications of its channel, with their tags, in order; a
// bystander on another connection without a filter gets every one. A map
// subscription with the same filter gets a snapshot of only the matching
// entries, then only the matching updates, and the removal of an entry
// (a tombstone) whatever its tags. Filters past the bounds (9 levels
// deep, 34 nodes, 33 values, a numeric comparison with a word) are
// refused with 107 on the same connection, which keeps receiving. Then
// the filtered client disconnects, records are produced, and it connects
// again: its subscription recovers (recovered:true) with exactly the
// matching publications it missed, none twice.
func TestSDKTagFilter(t *testing.T) {
	for _, encoding := range []string{"json", "protobuf"} {
		t.Run(encoding, func(t *testing.T) { testSDKTagFilter(t, encoding) })
	}
}

func testSDKTagFilter(t *testing.T, encoding string) {
	const (
		channel = "odds:football:epl:match-8:live"
		mapName = "odds:football:epl:match-7"
		n       = 30
	)
	dir := jsTestDir(t)
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), 100)
	cfg.Ingest.TagHeaders = []string{"group", "suspended"}
	cfg.Channels.HistorySize = 100
	r := startRelay(t, cfg)
	r.waitReady(t)
	prod := newProducer(t, kafka.ListenAddrs())

	matches := func(tags map[string]string) bool { _, s := tags["suspended"]; return tags["group"] == "main" && !s }
	tagsFor := func(i int) map[string]string {
		switch i % 4 {
		case 0:
			return map[string]string{"group": "main", "secret": "x"}
		case 1:
			return map[string]string{"group": "side"}
		case 2:
			return map[string]string{"group": "main", "suspended": "1"}
		}
		return nil
	}
	// The map's entries before the subscription: m0..m9.
	var entries []tagRecord
	for i := range 10 {
		entries = append(entries, tagRecord{channel: fmt.Sprintf("%s:m%d", mapName, i), seq: 1000 + i, tags: tagsFor(i)})
	}
	produceTagged(t, prod, entries, mapName)
	r.waitCached(t, entries[9].channel, -1)

	filter := `{"op":"and","nodes":[{"key":"group","cmp":"eq","val":"main"},{"op":"not","nodes":[{"key":"suspended","cmp":"ex"}]}]}`
	wide := map[string]any{"op": "or", "nodes": []any{}}
	for i := range 33 {
		wide["nodes"] = append(wide["nodes"].([]any), map[string]any{"key": "group", "cmp": "eq", "val": strconv.Itoa(i)})
	}
	vals := make([]string, 33)
	for i := range vals {
		vals[i] = strconv.Itoa(i)
	}
	hostile, _ := json.Marshal([]any{
		deepFilter(8), // 9 levels
		wide,          // 34 nodes
		map[string]any{"key": "group", "cmp": "in", "vals": vals},
		map[string]any{"key": "price", "cmp": "gt", "val": "cheap"},
	})
	env := []string{"EDGERELAY_URL=" + r.url(), "ENCODING=" + encoding, "CHANNEL=" + channel, "MAP=" + mapName,
		"FILTER=" + filter, "LAST=" + strconv.Itoa(n), "HOSTILE=" + string(hostile), "HOSTILE_CHANNEL=odds:hostile:",
		"RECOVER_LAST=" + strconv.Itoa(2*n+1)}
	script := startNode[tagEvent](t, dir, "tagfilter.mjs", env, nil)

	// One record before the subscriptions: the subscribe replies carry it
	// (it matches) and the channel's epoch, which the recovery needs (a
	// channel Kafka never wrote to has none yet).
	first := []tagRecord{{channel: channel, seq: -1, tags: map[string]string{"group": "main"}}}
	produceTagged(t, prod, first, channel)
	r.waitCached(t, channel, -1)
	stream := first
	for i := range n {
		stream = append(stream, tagRecord{channel: channel, seq: i, tags: tagsFor(i)})
	}
	stream = append(stream, tagRecord{channel: channel, seq: n, tags: map[string]string{"group": "main"}})
	// Produced while "filtered" is disconnected: n+1..2n+1, recovered.
	var missed []tagRecord
	for i := n + 1; i <= 2*n; i++ {
		missed = append(missed, tagRecord{channel: channel, seq: i, tags: tagsFor(i)})
	}
	missed = append(missed, tagRecord{channel: channel, seq: 2*n + 1, tags: map[string]string{"group": "main"}})
	mapLive := []tagRecord{
		{channel: mapName + ":m0", seq: 2000, tags: tagsFor(0)}, // matches
		{channel: mapName + ":m1", seq: 2001, tags: tagsFor(1)}, // does not
		{channel: mapName + ":m4", seq: n, tags: tagsFor(0)},    // matches: the map's last
	}

	got := map[string][]tagEvent{}
	var refused, subscribed []tagEvent
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		var e tagEvent
		var ok bool
		select {
		case e, ok = <-script.events:
			if !ok {
				t.Fatalf("tagfilter.mjs exited early; got %v", got)
			}
		case <-timeout:
			t.Fatalf("timed out; got %v", got)
		}
		switch e.Event {
		case "fail":
			t.Fatalf("tagfilter.mjs: %s", e.Msg)
		case "disconnected", "client_error", "sub_error":
			t.Fatalf("tagfilter.mjs: %+v", e)
		case "ready":
			produceTagged(t, prod, stream[len(first):], channel)
			produceTagged(t, prod, mapLive[:2], mapName)
			// A tombstone of a side entry: a removal passes every filter.
			produceEntries(t, prod, mapName, []mapChange{{key: "m5", removed: true}})
			produceTagged(t, prod, mapLive[2:], mapName)
		case "unsubscribed":
			refused = append(refused, e)
		case "subscribed":
			subscribed = append(subscribed, e)
		case "dropped":
			produceTagged(t, prod, missed, channel)
			r.waitCached(t, channel, -1) // (the cache only moves forward; the next line waits for the last)
			checkFor(t, 20*time.Second, func() error {
				if p := r.srv.Hub().Last(channel); p == nil || string(p.Data) != fmt.Sprintf(`{"seq":%d}`, 2*n+1) {
					return fmt.Errorf("relay has not read the missed records yet")
				}
				return nil
			})
			fmt.Fprintln(script.stdin, "resume")
		case "pub", "update", "sync":
			got[e.Sub] = append(got[e.Sub], e)
		case "done":
			done = true
		}
	}
	if err := script.wait(); err != nil {
		t.Fatalf("tagfilter.mjs: %v", err)
	}

	if len(refused) != 4 {
		t.Fatalf("refused: %+v, want 4", refused)
	}
	for _, e := range refused {
		if e.Code != 107 {
			t.Errorf("%s refused with %d, want 107", e.Sub, e.Code)
		}
	}
	seqs := func(evs []tagEvent) (out []int) {
		for _, e := range evs {
			if e.Seq != nil {
				out = append(out, *e.Seq)
			}
		}
		return out
	}
	var want, all []int
	for _, r := range stream {
		all = append(all, r.seq)
		if matches(r.tags) {
			want = append(want, r.seq)
		}
	}
	for _, r := range missed {
		if matches(r.tags) {
			want = append(want, r.seq) // recovered: the matching ones, once each
		}
	}
	var resubscribed bool
	for _, e := range subscribed {
		if e.Sub == "filtered" && e.WasRecovering {
			resubscribed = true
			if !e.Recovered {
				t.Errorf("filtered subscription not recovered after the reconnect: %+v", e)
			}
		}
	}
	if !resubscribed {
		t.Errorf("filtered subscription did not resubscribe recovering: %+v", subscribed)
	}
	if g := seqs(got["filtered"]); !slices.Equal(g, want) {
		t.Errorf("filtered subscription got %v, want %v", g, want)
	}
	// The bystander stays connected: it has every record of the first
	// batch, then some of the second (the script ends when the filtered
	// subscription has recovered).
	g := seqs(got["bystander"])
	for _, r := range missed {
		all = append(all, r.seq)
	}
	if len(g) < len(stream) || !slices.Equal(g, all[:len(g)]) {
		t.Errorf("bystander got %v, want %v or more of %v", g, all[:len(stream)], all)
	}
	for _, e := range got["filtered"] {
		if e.Tags["group"] != "main" || e.Tags["secret"] != "" || len(e.Tags) != 1 {
			t.Errorf("filtered publication %d has tags %v, want only group=main", *e.Seq, e.Tags)
		}
	}
	for _, e := range got["bystander"] {
		if w := tagsFor(*e.Seq); *e.Seq >= 0 && *e.Seq < n && (e.Tags["group"] != w["group"] || e.Tags["suspended"] != w["suspended"]) {
			t.Errorf("bystander publication %d has tags %v, want %v", *e.Seq, e.Tags, w)
		}
	}

	var syncKeys, updates []string
	for _, e := range got["map"] {
		switch e.Event {
		case "sync":
			for _, en := range e.Entries {
				syncKeys = append(syncKeys, en.Key)
				if en.Tags["group"] != "main" {
					t.Errorf("map snapshot entry %s has tags %v", en.Key, en.Tags)
				}
			}
		case "update":
			u := e.Key
			if e.Removed {
				u += " removed"
			}
			updates = append(updates, u)
		}
	}
	slices.Sort(syncKeys)
	if w := []string{"m0", "m4", "m8"}; !slices.Equal(syncKeys, w) {
		t.Errorf("map snapshot keys %v, want %v", syncKeys, w)
	}
	if w := []string{"m0", "m5 removed", "m4"}; !slices.Equal(updates, w) {
		t.Errorf("map updates %v, want %v", updates, w)
	}
}

// TestTagFilterRawClient: what the SDK does not send. A subscribe with a
// tag filter and "delta":"fossil" is answered without delta (the two
// exclude each other, as in Centrifugo) and gets full payloads with their
// tags; a filter 9 levels deep, one of 40 KB (past every bound) and one
// of 45 KB of empty nodes (past the decoder's) are answered 107 on the
// same connection, which then still receives the matching publications
// of its first subscription and nothing else.
func TestTagFilterRawClient(t *testing.T) {
	const channel = "odds:football:epl:match-1:1x2"
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Ingest.TagHeaders = []string{"group"}
	r := startRelay(t, cfg)
	r.waitReady(t)
	prod := newProducer(t, kafka.ListenAddrs())

	c := r.dial(t)
	c.connect()
	c.send(`{"id":2,"subscribe":{"channel":"` + channel + `","delta":"fossil","tf":{"key":"group","cmp":"eq","val":"main"}}}`)
	if rep := c.mustNext(); rep["subscribe"] == nil || rep["subscribe"].(map[string]any)["delta"] != nil {
		t.Fatalf("subscribe reply %v, want one without delta", rep)
	}
	deep, _ := json.Marshal(deepFilter(8))
	big := `{"op":"or","nodes":[` + strings.Repeat(`{"key":"k","cmp":"eq","val":"v"},`, 1300) + `{"key":"k","cmp":"ex"}]}`
	// 45 KB of empty nodes: cut while decoding (protocol.MaxFilterDecodeNodes), not 2 MB of tree.
	huge := `{"op":"or","nodes":[` + strings.Repeat(`{},`, 15_000) + `{}]}`
	c.send(`{"id":3,"subscribe":{"channel":"odds:a:b","tf":`+string(deep)+`}}`, `{"id":4,"subscribe":{"channel":"odds:a:c","tf":`+big+`}}`,
		`{"id":5,"subscribe":{"channel":"odds:a:d","tf":`+huge+`}}`)
	for _, id := range []float64{3, 4, 5} {
		rep := c.mustNext()
		if rep["id"] != id || errorCode(rep) != 107 {
			t.Fatalf("reply %v, want error 107 for %v", rep, id)
		}
	}
	recs := []tagRecord{{channel, 1, map[string]string{"group": "side"}}, {channel, 2, map[string]string{"group": "main"}},
		{channel, 3, nil}, {channel, 4, map[string]string{"group": "main"}}}
	produceTagged(t, prod, recs, channel)
	for _, want := range []float64{2, 4} {
		rep := c.mustNext()
		push, _ := rep["push"].(map[string]any)
		pub, _ := push["pub"].(map[string]any)
		data, _ := pub["data"].(map[string]any) // an object: not a delta's JSON string
		tags, _ := pub["tags"].(map[string]any)
		if data["seq"] != want || tags["group"] != "main" || pub["delta"] != nil {
			t.Fatalf("push %v, want seq %v with its tags, in full", rep, want)
		}
	}
	if code, body := r.get(t, "/metrics"); code != 200 || metric(body, "edgerelay_tag_filter_skipped_total") != 2 {
		t.Errorf("edgerelay_tag_filter_skipped_total %v, want 2", metric(body, "edgerelay_tag_filter_skipped_total"))
	}
}
