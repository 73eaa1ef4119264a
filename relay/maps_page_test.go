package relay_test

import (
	"fmt"
	"testing"
)

// TestMapPageFloor: a limit so small that paging the map would take more
// than half of websocket.max_frames_per_second is raised (here 40 frames:
// at most 20 pages, so a 200-key map gets pages of 10 for a limit of 2,
// where 100 pages would have the client closed 3013); a limit above the
// floor is kept.
func TestMapPageFloor(t *testing.T) {
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), 100)
	cfg.WebSocket.MaxFramesPerSecond = 40
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const m = "odds:football:epl:match-floor"
	entries := make([]mapChange, 200)
	for i := range entries {
		k := fmt.Sprintf("k%03d", i)
		entries[i] = mapChange{key: k, value: marketValue(k, 0)}
	}
	produceEntries(t, prod, m, entries)
	waitMap(t, r, m, len(entries), entries[len(entries)-1].offset)

	c := r.dial(t)
	c.connect()
	cursor, seen, id := "", 0, 2
	for ; ; id++ {
		extra := `"limit":2`
		if cursor != "" {
			extra += fmt.Sprintf(`,"cursor":%q`, cursor)
		}
		res := mapSubscribe(t, c, id, m, 2, extra)
		state, _ := res["state"].([]any)
		if cursor, _ = res["cursor"].(string); len(state) != 10 && cursor != "" {
			t.Fatalf("page %d: %d entries for limit 2, want the floor 10", id-1, len(state))
		}
		if seen += len(state); cursor == "" {
			break
		}
	}
	if seen != len(entries) || id-1 != 20 {
		t.Fatalf("%d entries in %d pages, want %d in 20", seen, id-1, len(entries))
	}
	if res := mapSubscribe(t, c, 100, m, 2, `"limit":15`); len(res["state"].([]any)) != 15 {
		t.Fatalf("limit 15: %d entries", len(res["state"].([]any)))
	}
}
