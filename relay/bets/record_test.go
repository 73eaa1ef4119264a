package bets

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/fanout"
)

// TestRecordValueAsEncodingJSON: the record value and the reply built by
// hand are byte for byte what encoding/json made of them before, for
// plain and for awkward strings (escapes, HTML characters, non-ASCII in
// the operator's node name and topics), with and without positions.
func TestRecordValueAsEncodingJSON(t *testing.T) {
	type value struct {
		BetID      string          `json:"bet_id"`
		User       string          `json:"user"`
		Node       string          `json:"node"`
		ReceivedAt time.Time       `json:"received_at"`
		Bet        json.RawMessage `json:"bet"`
		OddsSeen   *Position       `json:"odds_seen"`
		OddsLatest *Position       `json:"odds_latest"`
	}
	at := time.Date(2026, 12, 2, 1, 2, 3, 456789000, time.UTC)
	pub := &fanout.Publication{Channel: "odds:a:b", Data: []byte(`{}`), Pos: fanout.Position{Stream: "odds", Partition: 4, Offset: 1041}, Time: at.Add(-time.Second)}
	odd := &fanout.Publication{Channel: "odds:x", Pos: fanout.Position{Stream: "ödds\"<&>\u2028\x01", Partition: -1, Offset: 0}, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600))}
	for i, tt := range []struct {
		bet  Bet
		node string
	}{
		{Bet{Request: Request{BetID: "c-81f3", Raw: []byte(`{"bet_id":"c-81f3","stake":5}`)}, User: "alice", ReceivedAt: at, Seen: pub, Latest: pub}, "relay-eu-1"},
		{Bet{Request: Request{BetID: "b.1:x_y", Raw: []byte("{\"note\":\"<b>&amp;\\u2028 \\\" é \u2028\u2029\"}")}, User: "a+b=c,d@e.f", ReceivedAt: time.Now()}, "nöde\t\"<1>\""},
		{Bet{Request: Request{BetID: "b", Raw: []byte(`{}`)}, User: "u", ReceivedAt: at.In(time.FixedZone("y", -7200)), Latest: odd}, ""},
	} {
		b := &tt.bet
		want, err := json.Marshal(value{b.BetID, b.User, tt.node, b.ReceivedAt, b.Raw, PositionOf(b.Seen), PositionOf(b.Latest)})
		if err != nil {
			t.Fatal(err)
		}
		if got := appendRecordValue(nil, b, tt.node); !bytes.Equal(got, want) {
			t.Errorf("%d: record value\n got %s\nwant %s", i, got, want)
		}
		r := Result{BetID: b.BetID, Topic: tt.node, Partition: int32(i) - 1, Offset: 1 << 40, ReceivedAt: b.ReceivedAt}
		want, _ = json.Marshal(r)
		if got := r.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("%d: reply\n got %s\nwant %s", i, got, want)
		}
	}
}
