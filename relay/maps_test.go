package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/ingest"
)

// mapSubscribe sends a map subscribe of phase with the extra JSON fields
// (`"cursor":"x"`, ...) and returns the reply's subscribe result, or fails
// with the reply.
func mapSubscribe(t *testing.T, c *wsClient, id int, channel string, phase int, extra string) map[string]any {
	t.Helper()
	if extra != "" {
		extra = "," + extra
	}
	c.send(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q,"type":1,"phase":%d%s}}`, id, channel, phase, extra))
	r := c.mustNext()
	res, ok := r["subscribe"].(map[string]any)
	if !ok {
		t.Fatalf("map subscribe phase %d: %v", phase, r)
	}
	return res
}

func num(v any) uint64 { f, _ := v.(float64); return uint64(f) }

// TestMapProtocol pages a map through the raw JSON protocol: state pages
// bounded by the client's limit and by channels.maps.page_size, each
// entry with its key, the cursor, the position frozen by the first page;
// then a stream page per limit, then the live reply, after which a
// change of one of the map's channels comes as a push with its key.
func TestMapProtocol(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, mapsConfig(kafka.ListenAddrs(), 4))
	prod := newProducer(t, kafka.ListenAddrs())
	const m = "odds:tennis:wtt:match-9"
	entries := make([]mapChange, 10)
	for i := range entries {
		k := fmt.Sprintf("k%02d", i)
		entries[i] = mapChange{key: k, value: marketValue(k, 0)}
	}
	produceEntries(t, prod, m, entries)
	waitMap(t, r, m, len(entries), entries[9].offset)

	c := r.dial(t)
	c.connect()
	var keys []string
	cursor, epoch := "", ""
	var frozen uint64
	for id := 2; ; id++ {
		extra := `"limit":3`
		if cursor != "" {
			extra += fmt.Sprintf(`,"cursor":%q,"epoch":%q,"offset":%d`, cursor, epoch, frozen)
		}
		res := mapSubscribe(t, c, id, m, 2, extra)
		if num(res["phase"]) != 2 || num(res["type"]) != 1 {
			t.Fatalf("state page: %v", res)
		}
		if epoch == "" {
			epoch, frozen = res["epoch"].(string), num(res["offset"])
		}
		state, _ := res["state"].([]any)
		if len(state) > 3 {
			t.Fatalf("page of %d entries, limit 3", len(state))
		}
		for _, e := range state {
			e := e.(map[string]any)
			keys = append(keys, e["key"].(string))
		}
		if cursor, _ = res["cursor"].(string); cursor == "" {
			break
		}
		if id == 2 {
			// Changed between pages: the stream phase must bring it.
			produceEntries(t, prod, m, []mapChange{{key: "k00", value: marketValue("k00", 1)}})
		}
	}
	if fmt.Sprint(keys) != "[k00 k01 k02 k03 k04 k05 k06 k07 k08 k09]" || frozen != entries[9].offset || epoch == "" {
		t.Fatalf("state pages: keys %v, position %d %q; want k00..k09 at %d", keys, frozen, epoch, entries[9].offset)
	}
	waitMap(t, r, m, len(entries), entries[9].offset+1)

	// A limit past page_size (4) gets page_size.
	if res := mapSubscribe(t, c, 50, m, 2, `"limit":1000`); len(res["state"].([]any)) != 4 {
		t.Fatalf("limit 1000: %d entries, want page_size 4", len(res["state"].([]any)))
	}

	// Stream from the frozen position: k00's change, then live.
	res := mapSubscribe(t, c, 60, m, 1, fmt.Sprintf(`"limit":3,"epoch":%q,"offset":%d`, epoch, frozen))
	pubs, _ := res["publications"].([]any)
	if num(res["phase"]) != 0 || len(pubs) != 1 || pubs[0].(map[string]any)["key"] != "k00" || res["recoverable"] != true {
		t.Fatalf("stream phase: %v, want live with k00's change", res)
	}
	produceEntries(t, prod, m, []mapChange{{key: "k03", removed: true}, {key: "k10", value: marketValue("k10", 0)}})
	for _, want := range []string{`k03 removed`, `k10 {"market":"k10","v":0}`} {
		push := c.mustNext()["push"].(map[string]any)
		pub := push["pub"].(map[string]any)
		got := fmt.Sprint(pub["key"])
		if pub["removed"] == true {
			got += " removed"
		} else {
			b, _ := json.Marshal(pub["data"])
			got += " " + string(b)
		}
		if push["channel"] != m || got != want || num(pub["offset"]) == 0 {
			t.Fatalf("push %v, want %s on %s", push, want, m)
		}
	}
}

// TestMapErrors: every refusal of a map subscribe has its documented code.
func TestMapErrors(t *testing.T) {
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), 10)
	cfg.Channels.Maps.MaxEntries = 5
	cfg.Channels.Maps.MaxMaps = 2
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const full = "odds:football:epl:full"
	first := make([]mapChange, 5)
	for i := range first {
		first[i] = mapChange{key: fmt.Sprintf("k%d", i), value: marketValue("k", i)}
	}
	produceEntries(t, prod, full, first)
	waitMap(t, r, full, 5, first[4].offset)

	c := r.dial(t)
	c.connect()
	check := func(id int, cmd string, code int) {
		t.Helper()
		c.send(fmt.Sprintf(cmd, id))
		if rep := c.mustNext(); errorCode(rep) != code {
			t.Fatalf("%s: %v, want error %d", cmd, rep, code)
		}
	}
	check(2, `{"id":%d,"subscribe":{"channel":"scores:x","type":1,"phase":2}}`, 107) // not a map
	check(3, `{"id":%d,"subscribe":{"channel":"odds:a:b","type":2,"phase":2}}`, 108) // presence maps
	check(4, `{"id":%d,"subscribe":{"channel":"odds:a:b","type":1,"phase":7}}`, 107) // no such phase
	check(5, `{"id":%d,"subscribe":{"channel":"odds:a:*","type":1,"phase":2}}`, 107) // invalid name
	check(6, `{"id":%d,"subscribe":{"channel":"`+full+`","type":1,"phase":1,"recover":true,"epoch":"other","offset":3}}`, 112)

	// A subscriber of the full map, live.
	res := mapSubscribe(t, c, 7, full, 1, "")
	if num(res["phase"]) != 0 {
		t.Fatalf("stream phase from 0: %v", res)
	}
	// The sixth key passes max_entries: the subscriber is told (2100),
	// the key is refused, and so is every later subscribe (106).
	produceEntries(t, prod, full, []mapChange{{key: "k5", value: marketValue("k", 5)}})
	push := c.mustNext()["push"].(map[string]any)
	if u, ok := push["unsubscribe"].(map[string]any); !ok || num(u["code"]) != 2100 || push["channel"] != full {
		t.Fatalf("want an unsubscribe push 2100, got %v", push)
	}
	check(8, `{"id":%d,"subscribe":{"channel":"`+full+`","type":1,"phase":2}}`, 106)
	check(9, `{"id":%d,"subscribe":{"channel":"`+full+`","type":1,"phase":1}}`, 106)

	// Maps only subscribed to, empty, do not count toward max_maps.
	for i := 10; i < 14; i++ {
		mapSubscribe(t, c, i, fmt.Sprintf("odds:football:epl:empty-%d", i), 2, "")
	}
	// max_maps 2: the full map and one more from Kafka; a third is
	// refused, and subscribing to any map not held then answers 106.
	produceEntries(t, prod, "odds:football:epl:second", []mapChange{{key: "a", value: "{}"}})
	third := []mapChange{{key: "a", value: "{}"}}
	produceEntries(t, prod, "odds:football:epl:third", third)
	waitMap(t, r, "odds:football:epl:second", 1, 0)
	r.waitCached(t, "odds:football:epl:third:a", int64(third[0].offset-1))
	check(20, `{"id":%d,"subscribe":{"channel":"odds:football:epl:third","type":1,"phase":2}}`, 106)

	_, body := r.get(t, "/metrics")
	for series, want := range map[string]float64{
		"edgerelay_maps":                      2,
		"edgerelay_maps_full":                 1,
		"edgerelay_map_entries":               6,
		"edgerelay_map_entries_refused_total": 1,
		"edgerelay_maps_refused_total":        1,
	} {
		if got := metric(body, series); got != want {
			t.Errorf("%s = %v, want %v\n%s", series, got, want, grep(body, "edgerelay_map"))
		}
	}
	if !strings.Contains(body, "edgerelay_map_bytes") {
		t.Error("no edgerelay_map_bytes")
	}
}

// TestKeyedTopicMap: a compacted topic as a map. The topic's channel
// template puts every record key under one map channel
// (standings:epl:{key}, rule prefix "standings:", depth 1); a record with
// a null value (a Kafka tombstone) removes its key, pushed as removed, and
// forgets the entry's channel's cached value. A tombstone of a channel in
// no map is skipped as before (invalid_json).
func TestKeyedTopicMap(t *testing.T) {
	kafka := newKafka(t, kfake.SeedTopics(1, "standings"))
	cfg := mapsConfig(kafka.ListenAddrs(), 10)
	cfg.Channels.Maps.Rules = []relay.MapRuleConfig{{Prefix: "standings:", Depth: 1}}
	cfg.Ingest.Topics = append(cfg.Ingest.Topics, ingest.Topic{Name: "standings", ChannelTemplate: "standings:epl:{key}"})
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	rec := func(topic, key, value string) {
		t.Helper()
		r := &kgo.Record{Topic: topic, Key: []byte(key)}
		if value != "" {
			r.Value = []byte(value)
		}
		if err := prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	rec("standings", "arsenal", `{"pts":3}`)
	rec("standings", "chelsea", `{"pts":1}`)
	const m = "standings:epl"
	waitMap(t, r, m, 2, 2)

	c := r.dial(t)
	c.connect()
	res := mapSubscribe(t, c, 2, m, 2, "")
	if st, _ := res["state"].([]any); len(st) != 2 || st[0].(map[string]any)["key"] != "arsenal" {
		t.Fatalf("state %v", res)
	}
	if res := mapSubscribe(t, c, 3, m, 1, fmt.Sprintf(`"epoch":%q,"offset":%d`, res["epoch"], num(res["offset"]))); num(res["phase"]) != 0 {
		t.Fatalf("stream: %v", res)
	}
	rec("standings", "chelsea", "") // tombstone
	push := c.mustNext()["push"].(map[string]any)
	if pub := push["pub"].(map[string]any); pub["key"] != "chelsea" || pub["removed"] != true || push["channel"] != m || pub["data"] != nil {
		t.Fatalf("push %v, want chelsea removed", push)
	}
	waitMap(t, r, m, 1, 3)
	if r.srv.Hub().Last("standings:epl:chelsea") != nil {
		t.Error("the removed entry's channel still has a cached value")
	}
	// A tombstone of a channel in no map.
	notMap := &kgo.Record{Topic: "scores", Key: []byte("scores:a"), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("scores:a")}}}
	if err := prod.ProduceSync(context.Background(), notMap).FirstErr(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		if got := metric(body, `edgerelay_kafka_records_skipped_total{reason="invalid_json",topic="scores"}`); got != 1 {
			return fmt.Errorf("scores tombstone skipped as invalid_json: %v", got)
		}
		return nil
	})
}

// TestMapClientAhead: a client resuming a map on a node that has not yet
// read as far as the node it came from (its position is past this map's
// newest change, same epoch) keeps its position, and the changes it
// already holds are not sent again when this node reads them: with
// deltas, a patch of one would apply to an older value than the
// client's. The next change is a patch to the value the client holds.
func TestMapClientAhead(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, mapsConfig(kafka.ListenAddrs(), 10))
	prod := newProducer(t, kafka.ListenAddrs())
	const m = "odds:tennis:wtt:match-ahead"
	first := []mapChange{{key: "k0", value: deltaValue("k0", 0)}, {key: "k1", value: deltaValue("k1", 0)}}
	produceEntries(t, prod, m, first)
	top := first[1].offset
	waitMap(t, r, m, 2, top)

	c := r.dial(t)
	c.connect()
	epoch := mapSubscribe(t, c, 2, m, 2, "")["epoch"].(string)
	// The client holds the next three changes (Kafka offsets top..top+2),
	// read on another node.
	next := []mapChange{
		{key: "k0", value: deltaValue("k0", 1)}, {key: "k0", value: deltaValue("k0", 2)}, {key: "k1", value: deltaValue("k1", 3)},
		{key: "k0", value: deltaValue("k0", 4)}, {key: "k1", value: deltaValue("k1", 5)},
	}
	res := mapSubscribe(t, c, 3, m, 1, fmt.Sprintf(`"recover":true,"epoch":%q,"offset":%d,"delta":"fossil"`, epoch, top+3))
	if res["phase"] != nil || res["recovered"] != true || num(res["offset"]) != top+3 || res["publications"] != nil {
		t.Fatalf("recovering ahead of the node: %v, want live, recovered, at offset %d, nothing sent", res, top+3)
	}
	mc := newMapConn(t, c)
	mc.maps[m] = &mapCopy{fossil: true, state: map[string]string{"k0": next[1].value, "k1": next[2].value}}
	produceEntries(t, prod, m, next)
	mc.readThrough(m, next[4].offset)
	got := mc.maps[m]
	if len(got.changes) != 2 || got.changes[0].offset != next[3].offset || got.patches != 2 {
		t.Fatalf("got changes %+v (%d patches), want those at %d and %d, as patches", got.changes, got.patches, next[3].offset, next[4].offset)
	}
	if got.state["k0"] != next[3].value || got.state["k1"] != next[4].value {
		t.Fatalf("client holds %v", got.state)
	}
}
