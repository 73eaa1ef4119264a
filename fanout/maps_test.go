package fanout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func mapHub(mod func(*Config)) *Hub {
	return newTestHub(func(c *Config) {
		c.Maps = []MapRule{{Prefix: "odds:", Depth: 1}, {Prefix: "league:", Depth: 2}}
		if mod != nil {
			mod(c)
		}
	})
}

func entryPub(ch, epoch string, off int64, data string) *Publication {
	p := pub(ch, off, data)
	p.Epoch = epoch
	return p
}

func TestMapOf(t *testing.T) {
	h := mapHub(nil)
	for _, tt := range []struct{ ch, m, key string }{
		{"odds:football:epl:m1:1x2", "odds:football:epl:m1", "1x2"},
		{"odds:a:b", "odds:a", "b"},
		{"odds:a", "", ""}, // the map would be "odds", outside the prefix
		{"league:epl:m1:1x2", "league:epl", "m1:1x2"},
		{"league:epl:m1", "", ""},
		{"scores:a:b", "", ""},
	} {
		m, k, ok := h.MapOf(tt.ch)
		if m != tt.m || k != tt.key || ok != (tt.m != "") {
			t.Errorf("MapOf(%q) = %q %q %v, want %q %q", tt.ch, m, k, ok, tt.m, tt.key)
		}
	}
}

// FuzzMapOf: a valid channel's map and key put back together are the channel,
// the key has the rule's depth, and the map is a map channel.
func FuzzMapOf(f *testing.F) {
	for _, s := range []string{"odds:a:b", "league:x:y:z", "odds::", "odds:", ":", "league:a"} {
		f.Add(s)
	}
	h := mapHub(nil)
	f.Fuzz(func(t *testing.T, ch string) {
		m, k, ok := h.MapOf(ch)
		if !ok || ValidateName(ch, DefaultMaxNameLength) != nil {
			return // the Hub looks up maps only for valid names
		}
		depth := map[bool]int{true: 1, false: 2}[strings.HasPrefix(m, "odds:")]
		if m+":"+k != ch || strings.Count(k, ":") != depth-1 || !h.IsMap(m) {
			t.Fatalf("MapOf(%q) = %q %q", ch, m, k)
		}
	})
}

func mapKeys(entries []*Publication) string {
	var b []string
	for _, e := range entries {
		s := e.Key
		if e.Removed {
			s += "-"
		}
		b = append(b, s)
	}
	return strings.Join(b, ",")
}

// TestMapPositions: pages by key, catch-up compacted per key in offset
// order, removals as tombstones, Kafka positions while one stream feeds
// the map, a node-local epoch once another does.
func TestMapPositions(t *testing.T) {
	h := mapHub(nil)
	const m = "odds:f:m1"
	for i, k := range []string{"c", "a", "b", "d"} {
		h.Publish(entryPub(m+":"+k, "e1", int64(10+i), `{}`))
	}
	var rec recorder
	err := h.SubscribeMap(m, &rec, func(v *MapView) bool {
		if v.Epoch() != "e1" || v.Top() != 14 || v.Len() != 4 {
			t.Errorf("view: %s %d %d", v.Epoch(), v.Top(), v.Len())
		}
		p1, next := v.Page("", 3, 1<<20)
		p2, last := v.Page(next, 3, 1<<20)
		if mapKeys(p1) != "a,b,c" || next != "c" || mapKeys(p2) != "d" || last != "" {
			t.Errorf("pages %s (%q) %s (%q)", mapKeys(p1), next, mapKeys(p2), last)
		}
		if p, _ := v.Page("", 3, 1); len(p) != 1 {
			t.Errorf("a page of 1 byte holds %d entries, want 1", len(p))
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Publish(entryPub(m+":a", "e1", 14, `{"v":1}`))
	h.PublishRemoval(entryPub(m+":b", "e1", 15, ""))
	h.Publish(entryPub(m+":a", "e1", 16, `{"v":2}`))
	h.Publish(entryPub(m+":a", "e1", 12, `{"old":1}`)) // read again: not newer
	if got := fmt.Sprint(rec.offsets()); got != "[14 15 16]" {
		t.Errorf("delivered %s", got)
	}
	h.ViewMap(m, func(v *MapView) {
		since, ok := v.Since("e1", 13, 1<<20) // after c (offset 12)
		if !ok || mapKeys(since) != "d,b-,a" {
			t.Errorf("since 13: %s %v", mapKeys(since), ok)
		}
		if page, _ := v.Since("e1", 13, 2); mapKeys(page) != "d,b-" {
			t.Errorf("since 13, at most 2: %s", mapKeys(page))
		}
		if _, ok := v.Since("e2", 13, 1<<20); ok {
			t.Error("since another epoch: ok")
		}
		if all, ok := v.Since("", 0, 1<<20); !ok || len(all) != 4 {
			t.Errorf("since the start: %d %v", len(all), ok)
		}
	})
	// Another stream: the map goes node-local, renumbered.
	h.Publish(entryPub(m+":z", "e9", 3, `{}`))
	h.ViewMap(m, func(v *MapView) {
		if !v.Local() || !strings.HasPrefix(v.Epoch(), "local-") || v.Top() != 5 {
			t.Errorf("after a second stream: local %v epoch %q top %d", v.Local(), v.Epoch(), v.Top())
		}
		if _, ok := v.Since("e1", 13, 1<<20); ok {
			t.Error("a Kafka position still recovers in a local map")
		}
	})
	if !h.UnsubscribeMap(m, &rec) || h.Unsubscribe(m, &rec) {
		t.Error("unsubscribe")
	}
}

func TestMapBounds(t *testing.T) {
	var dropped []Subscriber
	h := mapHub(func(c *Config) {
		c.MaxMaps, c.MaxMapEntries = 2, 3
		c.OnMapFull = func(_ string, d []Subscriber) { dropped = append(dropped, d...) }
	})
	// Maps subscribers wait on, empty, do not count toward MaxMaps, and go
	// with their last subscriber.
	var waiting recorder
	for i := range 5 {
		name := fmt.Sprintf("odds:f:empty%d", i)
		if err := h.SubscribeMap(name, &waiting, func(*MapView) bool { return true }); err != nil {
			t.Fatal(err)
		}
		h.UnsubscribeMap(name, &waiting)
		h.ViewMap(name, func(*MapView) {})
	}
	if n := len(h.maps.m); n != 0 {
		t.Fatalf("%d empty maps left in the registry", n)
	}
	const m = "odds:f:m1"
	for i := range 3 {
		h.Publish(entryPub(fmt.Sprintf("%s:k%d", m, i), "e", int64(i), `{}`))
	}
	var rec recorder
	h.SubscribeMap(m, &rec, func(*MapView) bool { return true })
	h.Publish(entryPub(m+":k1", "e", 5, `{}`)) // an existing key: fine
	h.Publish(entryPub(m+":k9", "e", 6, `{}`)) // a fourth key: full
	if len(dropped) != 1 || h.Subscribed(m, &rec) {
		t.Fatalf("dropped %v", dropped)
	}
	if err := h.ViewMap(m, func(*MapView) {}); !errors.Is(err, ErrMapFull) {
		t.Errorf("view of a full map: %v", err)
	}
	h.Publish(entryPub("odds:f:m2:k", "e", 1, `{}`))
	h.Publish(entryPub("odds:f:m3:k", "e", 1, `{}`))
	if err := h.ViewMap("odds:f:m4", func(*MapView) {}); !errors.Is(err, ErrTooManyMaps) {
		t.Errorf("a third map: %v", err)
	}
	if err := h.ViewMap("scores:x", func(*MapView) {}); !errors.Is(err, ErrNotMap) {
		t.Errorf("not a map: %v", err)
	}
	if s := h.MapStats(); s.Maps != 2 || s.Entries != 4 || s.Refused != 1 || s.NoRoom != 1 || s.FullMaps != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestMapTombstonesForgotten: past MaxMapEntries tombstones are forgotten
// and a position from before them is no longer recoverable.
//
// A map whose entries are all removed is dropped, tombstones and all,
// once it has no subscriber.
func TestMapTombstonesForgotten(t *testing.T) {
	h := mapHub(func(c *Config) { c.MaxMapEntries = 2 })
	const m = "odds:f:m1"
	h.Publish(entryPub(m+":stays", "e", 0, `{}`))
	off := int64(1)
	for i := range 3 {
		k := fmt.Sprintf("%s:k%d", m, i)
		h.Publish(entryPub(k, "e", off, `{}`))
		h.PublishRemoval(entryPub(k, "e", off+1, ""))
		off += 2
	}
	h.ViewMap(m, func(v *MapView) {
		if _, ok := v.Since("e", 3, 1<<20); ok {
			t.Error("recovered across forgotten removals")
		}
		if _, ok := v.Since("e", 7, 1<<20); !ok {
			t.Error("the newest position does not recover")
		}
	})
	var rec recorder
	h.SubscribeMap(m, &rec, func(*MapView) bool { return true })
	h.PublishRemoval(entryPub(m+":stays", "e", off, ""))
	h.ViewMap(m, func(v *MapView) {
		if got, ok := v.Since("e", uint64(off), 1<<20); v.Len() != 0 || !ok || mapKeys(got) != "stays-" {
			t.Errorf("after the last removal: %d entries, since %s %v", v.Len(), mapKeys(got), ok)
		}
	})
	if s := h.MapStats(); s.Maps != 1 {
		t.Errorf("a map with no live entry but a subscriber dropped: %+v", s)
	}
	h.UnsubscribeMap(m, &rec)
	if s := h.MapStats(); s.Maps != 0 || s.Bytes != 0 || s.Entries != 0 || len(h.maps.m) != 0 {
		t.Errorf("a map with no live entry left after its last subscriber: %+v", s)
	}
	if err := h.PublishRemoval(entryPub("scores:x", "e", 1, "")); !errors.Is(err, ErrNotMap) {
		t.Errorf("removal outside maps: %v", err)
	}
}

// TestMapDroppedEmpty: a map whose live entries were all removed (a
// finished match) and that has no subscriber is dropped, freeing its
// place under MaxMaps. When its channels get entries again it starts
// afresh: a client at a position from before is not recovered (it may
// hold keys whose removals the new map never saw) and starts again from a
// snapshot; a client holding nothing gets every entry; positions from the
// new map's first entry on recover. The same holds for a map this node
// began reading in the middle of the partition. A view refused at
// MaxMaps leaves no empty map behind.
func TestMapDroppedEmpty(t *testing.T) {
	h := mapHub(func(c *Config) { c.MaxMaps = 1 })
	const m, other = "odds:f:m1", "odds:f:m2"
	h.Publish(entryPub(m+":a", "e", 10, `{}`))
	h.Publish(entryPub(m+":b", "e", 11, `{}`))
	if err := h.ViewMap(other, func(*MapView) {}); !errors.Is(err, ErrTooManyMaps) {
		t.Fatalf("a second map at MaxMaps 1: %v", err)
	}
	h.PublishRemoval(entryPub(m+":a", "e", 12, ""))
	h.PublishRemoval(entryPub(m+":b", "e", 13, ""))
	if s := h.MapStats(); s.Maps != 0 || s.Bytes != 0 || len(h.maps.m) != 0 {
		t.Fatalf("a map of removed entries kept: %+v", s)
	}
	h.Publish(entryPub(other+":x", "e", 14, `{}`)) // the place is free
	h.PublishRemoval(entryPub(other+":x", "e", 15, ""))

	h.Publish(entryPub(m+":c", "e", 20, `{}`))
	h.ViewMap(m, func(v *MapView) {
		if _, ok := v.Since("e", 12, 1<<20); ok {
			t.Error("a position from before the map's first entry recovers")
		}
		if all, ok := v.Since("", 0, 1<<20); !ok || mapKeys(all) != "c" {
			t.Errorf("a client holding nothing: %s %v", mapKeys(all), ok)
		}
		if got, ok := v.Since("e", 20, 1<<20); !ok || mapKeys(got) != "c" {
			t.Errorf("from the first entry on: %s %v", mapKeys(got), ok)
		}
	})
}
