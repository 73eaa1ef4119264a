package ingest

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
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
