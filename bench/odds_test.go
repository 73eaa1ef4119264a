package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOddsFeed: every value is JSON with the feed's seq and t first, seq
// counts per channel, about 1 % of records are priority (suspensions,
// reopenings, scores) and the big matches get about half the updates.
func TestOddsFeed(t *testing.T) {
	f := NewOddsFeed(30, 0.3, 7)
	seqs := map[int]int64{}
	prio, big := 0, 0
	const n = 20000
	for i := range n {
		ci, v, p := f.Next(func(ci int) int64 { seqs[ci]++; return seqs[ci] }, int64(i))
		var m map[string]any
		if err := json.Unmarshal(v, &m); err != nil || int64(m["seq"].(float64)) != seqs[ci] || int64(m["t"].(float64)) != int64(i) {
			t.Fatalf("record %d on %s: %s (%v)", i, f.Channels()[ci], v, err)
		}
		if p != (m["p"] != nil) {
			t.Fatalf("priority %v but value %s", p, v)
		}
		if p {
			prio++
		}
		if strings.Contains(f.Channels()[ci], ":m-1:") || strings.HasSuffix(f.Channels()[ci], ":m-1") ||
			strings.Contains(f.Channels()[ci], ":m-2:") || strings.HasSuffix(f.Channels()[ci], ":m-2") ||
			strings.Contains(f.Channels()[ci], ":m-3:") || strings.HasSuffix(f.Channels()[ci], ":m-3") {
			big++
		}
	}
	if share := float64(prio) / n; share < 0.007 || share > 0.02 {
		t.Fatalf("%.3f of records priority, want about 0.015", share)
	}
	if share := float64(big) / n; share < 0.45 || share > 0.6 {
		t.Fatalf("%.2f of updates on the 3 big matches, want about half", share)
	}
}

// TestRecordReplay: a recorded feed replays into Kafka with the same
// records, faster, and each value's t set to its new send time.
func TestRecordReplay(t *testing.T) {
	kafka := newKafka(t)
	odds := NewOddsFeed(5, 0.3, 1)
	var rec bytes.Buffer
	orig, err := RunFeed(t.Context(), FeedConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Channels: odds.Channels(), Rate: 200,
		Duration: 500 * time.Millisecond, Odds: odds, Record: &rec})
	if err != nil || orig.Sent != 100 {
		t.Fatalf("feed: %+v %v", orig, err)
	}
	start := time.Now()
	rep, err := Replay(t.Context(), ReplayConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", From: &rec, Speed: 5})
	if err != nil || rep.Sent != orig.Sent || len(rep.Final) == 0 {
		t.Fatalf("replay: %+v %v", rep, err)
	}
	if took := time.Since(start); took > 400*time.Millisecond {
		t.Errorf("replay at 5x took %v for a 500 ms recording", took)
	}
	for ch, seq := range rep.Final {
		if orig.Final[ch] != seq {
			t.Fatalf("%s: replay ends at seq %d, recording at %d", ch, seq, orig.Final[ch])
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.ConsumeTopics("odds"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var n int
	var lastT int64
	for n < 200 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			n++
			var v struct{ T int64 }
			json.Unmarshal(r.Value, &v)
			lastT = max(lastT, v.T)
		})
	}
	if n != 200 || lastT < start.UnixNano() {
		t.Fatalf("%d records in Kafka (want 200), newest t %d before the replay started %d", n, lastT, start.UnixNano())
	}
}
