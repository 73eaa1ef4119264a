package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/fanout"
)

func TestChannelOf(t *testing.T) {
	in := &Ingester{cfg: DefaultConfig(), templates: map[string]string{"scores": "scores:{topic}-{partition}:{key}"}}
	hdr := func(k, v string) []kgo.RecordHeader { return []kgo.RecordHeader{{Key: k, Value: []byte(v)}} }
	tests := []struct {
		name string
		rec  kgo.Record
		want string
	}{
		{"header wins", kgo.Record{Topic: "odds", Key: []byte("k"), Headers: hdr("channel", "odds:a:b")}, "odds:a:b"},
		{"empty header ignored", kgo.Record{Topic: "odds", Key: []byte("odds:k"), Headers: hdr("channel", "")}, "odds:k"},
		{"other header ignored", kgo.Record{Topic: "odds", Key: []byte("odds:k"), Headers: hdr("x", "odds:x")}, "odds:k"},
		{"key", kgo.Record{Topic: "odds", Key: []byte("odds:key")}, "odds:key"},
		{"template", kgo.Record{Topic: "scores", Partition: 2, Key: []byte("m1")}, "scores:scores-2:m1"},
		{"template needs key", kgo.Record{Topic: "scores"}, ""},
		{"nothing", kgo.Record{Topic: "odds"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := in.channelOf(&tt.rec); got != tt.want {
				t.Fatalf("channelOf = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIsPriority(t *testing.T) {
	in := &Ingester{cfg: DefaultConfig()}
	for v, want := range map[string]bool{"1": true, "true": true, "TRUE": true, "0": false, "": false, "yes please": false} {
		r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "priority", Value: []byte(v)}}}
		if got := in.isPriority(r); got != want {
			t.Errorf("priority %q = %v, want %v", v, got, want)
		}
	}
}

func TestEpoch(t *testing.T) {
	id := [16]byte{0xde, 0xad, 0xbe, 0xef, 1}
	if got := Epoch("odds", id, 3); got != "deadbeef-3" {
		t.Fatalf("with id: %q", got)
	}
	if got := Epoch("odds", [16]byte{}, 3); got != "odds-3" {
		t.Fatalf("without id: %q", got)
	}
}

func TestValidate(t *testing.T) {
	c := DefaultConfig()
	c.Topics = append(c.Topics, Topic{Name: "odds"}, Topic{})
	c.Start.LastRecords = -1
	err := c.Validate("ingest")
	for _, want := range []string{`ingest.topics[2].name: "odds" listed twice`, "ingest.topics[3].name: required", "ingest.start.last_records"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

type collect struct{ pubs, appended []*fanout.Publication }

func (c *collect) Publish(p *fanout.Publication) error { c.pubs = append(c.pubs, p); return nil }
func (c *collect) Append(p *fanout.Publication) error  { c.appended = append(c.appended, p); return nil }
func (c *collect) KeepsHistory() bool                  { return true }

type countHooks struct{ conflated int }

func (*countHooks) OnRecord(string, int32)                    {}
func (*countHooks) OnSkip(string, SkipReason)                 {}
func (*countHooks) OnLag(string, int32, int64, time.Duration) {}
func (h *countHooks) OnConflated(channel string)              { h.conflated++ }

// TestBatchConflation: a batch spanning more than ConflateAfter publishes
// only each channel's last record, every priority record, and everything
// of channels Conflate refuses; a batch of one fetch round trip publishes
// everything.
func TestBatchConflation(t *testing.T) {
	type rec struct {
		channel string
		prio    bool
	}
	batch := []rec{{"odds:a", false}, {"odds:a", true}, {"odds:a", false}, {"bets:#u", false}, {"odds:b", false}, {"bets:#u", false}, {"odds:a", false}}
	for _, tt := range []struct {
		name string
		span time.Duration // between the batch's first and last record
		want []int64       // offsets published
		hist []int64       // offsets only appended to the history
	}{
		{"keeping up", 6 * time.Millisecond, []int64{0, 1, 2, 3, 4, 5, 6}, nil},
		{"behind", 600 * time.Millisecond, []int64{1, 3, 4, 5, 6}, []int64{0, 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ConflateAfter = 20 * time.Millisecond
			cfg.Conflate = func(ch string) bool { return !strings.HasPrefix(ch, "bets:") }
			pub, hooks := &collect{}, &countHooks{}
			in := &Ingester{cfg: cfg, pub: pub, hooks: hooks, maxName: 255}
			in.caughtUp.Store(true)
			p := &kgo.FetchPartition{Partition: 0}
			ts := time.Now().Add(-time.Hour) // age alone does not matter: a backlog read after an outage
			for i, r := range batch {
				kr := &kgo.Record{Topic: "odds", Offset: int64(i), Timestamp: ts.Add(time.Duration(i) * tt.span / 6), Value: []byte(`{}`),
					Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(r.channel)}}}
				if r.prio {
					kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: "priority", Value: []byte("1")})
				}
				p.Records = append(p.Records, kr)
			}
			in.handlePartition("odds", [16]byte{}, p)
			var got, hist []int64
			for _, pb := range pub.pubs {
				got = append(got, pb.Pos.Offset)
			}
			for _, pb := range pub.appended {
				hist = append(hist, pb.Pos.Offset)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || hooks.conflated != len(batch)-len(tt.want) {
				t.Fatalf("published %v (%d conflated), want %v", got, hooks.conflated, tt.want)
			}
			if fmt.Sprint(hist) != fmt.Sprint(tt.hist) {
				t.Fatalf("appended to the history %v, want %v", hist, tt.hist)
			}
		})
	}
}
