package relay

import (
	"slices"
	"testing"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
	"github.com/edgerelay/edgerelay/relay/tagfilter"
)

// TestSubscribeResultFiltered: the subscribe reply of a filtered
// subscription (docs/protocol.md, "Tag filters"). Recovery returns only
// the missed publications the filter matches, recovered, with the
// channel's offset; the latest-value fallback is the newest matching
// publication (of the history or the cached value), or none; a filter
// runs over at most maxFilterScan publications; an unfiltered reply is
// unchanged.
func TestSubscribeResultFiltered(t *testing.T) {
	f, err := tagfilter.Compile(&protocol.FilterNode{Key: "group", Cmp: "eq", Val: "main"})
	if err != nil {
		t.Fatal(err)
	}
	group := []string{"main", "side", "main", "side", "side"} // offsets 10..14
	var hist []*fanout.Publication
	for i, g := range group {
		hist = append(hist, &fanout.Publication{Channel: "odds:a", Data: []byte(`{}`), Epoch: "e",
			Pos: fanout.Position{Offset: int64(10 + i)}, Tags: map[string]string{"group": g}})
	}
	st := &fanout.State{Last: hist[4], History: hist, Dropped: 9}
	// A history longer than maxFilterScan after offset 10, its newest
	// maxFilterScan all side: only a scan past the bound would find 12.
	longHist := slices.Clone(hist)
	for i := range maxFilterScan {
		longHist = append(longHist, &fanout.Publication{Channel: "odds:a", Data: []byte(`{}`), Epoch: "e",
			Pos: fanout.Position{Offset: int64(15 + i)}, Tags: map[string]string{"group": "side"}})
	}
	long := &fanout.State{Last: longHist[len(longHist)-1], History: longHist, Dropped: 9}
	offsets := func(res *protocol.SubscribeResult) (out []uint64) {
		for _, p := range res.Publications {
			out = append(out, p.Offset)
		}
		return out
	}
	for _, tt := range []struct {
		name      string
		req       protocol.SubscribeRequest
		filter    fanout.Filter
		st        *fanout.State
		want      []uint64 // protocol offsets (Kafka + 1)
		recovered bool
	}{
		{"recover filtered", protocol.SubscribeRequest{Recover: true, Epoch: "e", Offset: 11}, f, st, []uint64{13}, true},
		{"recover unfiltered", protocol.SubscribeRequest{Recover: true, Epoch: "e", Offset: 11}, nil, st, []uint64{12, 13, 14, 15}, true},
		{"recover, nothing matching missed", protocol.SubscribeRequest{Recover: true, Epoch: "e", Offset: 13}, f, st, nil, true},
		{"first subscribe: newest matching", protocol.SubscribeRequest{}, f, st, []uint64{13}, false},
		{"first subscribe unfiltered", protocol.SubscribeRequest{}, nil, st, []uint64{15}, false},
		{"gone from history: newest matching", protocol.SubscribeRequest{Recover: true, Epoch: "e", Offset: 3}, f, st, []uint64{13}, false},
		{"no history, cached value not matching", protocol.SubscribeRequest{}, f, &fanout.State{Last: hist[4], Dropped: -1}, nil, false},
		{"no history, cached value matching", protocol.SubscribeRequest{}, f, &fanout.State{Last: hist[2], Dropped: -1}, []uint64{13}, false},
		{"recover past maxFilterScan", protocol.SubscribeRequest{Recover: true, Epoch: "e", Offset: 11}, f, long, nil, false},
		{"recover past maxFilterScan unfiltered", protocol.SubscribeRequest{Recover: true, Epoch: "e", Offset: 11}, nil, long, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := subscribeResult(&tt.req, tt.st, 1<<20, tt.filter)
			if tt.st == long && tt.filter == nil {
				if len(res.Publications) != maxFilterScan+4 || !res.Recovered {
					t.Fatalf("%d publications, recovered %v", len(res.Publications), res.Recovered)
				}
				return
			}
			if got := offsets(res); !slices.Equal(got, tt.want) || res.Recovered != tt.recovered {
				t.Fatalf("publications at %v, recovered %v; want %v, %v", got, res.Recovered, tt.want, tt.recovered)
			}
			if res.Offset != protoOffset(tt.st.Last) || res.Epoch != "e" {
				t.Fatalf("position %s/%d, want the channel's e/%d", res.Epoch, res.Offset, protoOffset(tt.st.Last))
			}
			for _, p := range res.Publications {
				if tt.filter != nil && p.Tags["group"] != "main" {
					t.Fatalf("publication %d with tags %v", p.Offset, p.Tags)
				}
			}
		})
	}
}
