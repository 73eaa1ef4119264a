package ingest

import (
	"maps"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTagsOf: only the topic's tag headers become tags (the topic's own
// list replaces ingest's), and a value past MaxTagValueBytes or not UTF-8
// is left out; a record with none of them has no tags.
func TestTagsOf(t *testing.T) {
	in := &Ingester{tagHeaders: map[string][]string{"odds": {"group", "big", "bad"}, "scores": nil}}
	hs := []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:a")}, {Key: "group", Value: []byte("main")},
		{Key: "big", Value: []byte(strings.Repeat("x", MaxTagValueBytes+1))}, {Key: "bad", Value: []byte{0xff}}}
	if got := in.tagsOf(&kgo.Record{Topic: "odds", Headers: hs}); !maps.Equal(got, map[string]string{"group": "main"}) {
		t.Errorf("odds: tags %v", got)
	}
	if got := in.tagsOf(&kgo.Record{Topic: "scores", Headers: hs}); got != nil {
		t.Errorf("scores (no tag headers): tags %v", got)
	}
	if got := in.tagsOf(&kgo.Record{Topic: "odds", Headers: hs[:1]}); got != nil {
		t.Errorf("no tag header: tags %v", got)
	}
}

func TestTagHeadersValidated(t *testing.T) {
	many := make([]string, MaxTagHeaders+1)
	for i := range many {
		many[i] = strings.Repeat("h", i+1)
	}
	for _, tt := range []struct {
		name  string
		edit  func(c *Config)
		error string
	}{
		{"too many", func(c *Config) { c.TagHeaders = many }, "ingest.tag_headers: at most 16"},
		{"empty name", func(c *Config) { c.TagHeaders = []string{""} }, "is no header name"},
		{"twice", func(c *Config) { c.Topics[0].TagHeaders = []string{"g", "g"} }, `ingest.topics[0].tag_headers: "g" listed twice`},
	} {
		c := DefaultConfig()
		tt.edit(&c)
		if err := c.Validate("ingest"); err == nil || !strings.Contains(err.Error(), tt.error) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.error)
		}
	}
	c := DefaultConfig()
	c.TagHeaders, c.Topics[1].TagHeaders = many[:MaxTagHeaders], []string{}
	if err := c.Validate("ingest"); err != nil {
		t.Errorf("valid tag headers refused: %v", err)
	}
}
