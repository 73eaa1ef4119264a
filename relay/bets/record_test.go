package bets

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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

// TestRecordHeaders: the record's key and headers, each a piece of one
// buffer, read as documented (docs/bets.md); a position not known is a
// null header value (nil: Kafka's length -1), not an empty one.
func TestRecordHeaders(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 4000, time.UTC)
	pub := &fanout.Publication{Channel: "odds:a:b", Pos: fanout.Position{Stream: "odds", Partition: 4, Offset: 1041}, Time: at}
	b := &Bet{Request: Request{BetID: "c-81f3", Channel: "odds:a:b", Raw: []byte(`{"bet_id":"c-81f3"}`)}, User: "alice", ReceivedAt: at, Latest: pub}
	sum := sha256.Sum256(b.Raw)
	for _, key := range []string{"user", "market"} {
		r := (&Desk{cfg: Config{Key: key}, node: "relay-eu-1"}).record(b, sum)
		want := map[string]string{"bet-id": "c-81f3", "user": "alice", "node": "relay-eu-1", "received-at": "2026-12-02T01:02:03.000004Z",
			"idempotency-key": "alice/c-81f3", "bet-sha256": hex.EncodeToString(sum[:]), "odds-latest": "odds/4/1041", "content-type": "application/json"}
		for _, h := range r.Headers {
			if h.Key == "odds-seen" {
				if h.Value != nil {
					t.Errorf("odds-seen of a bet on an unsubscribed market: %q, want null", h.Value)
				}
				continue
			}
			if string(h.Value) != want[h.Key] || len(h.Value) != cap(h.Value) {
				t.Errorf("header %s: %q (cap %d), want %q", h.Key, h.Value, cap(h.Value), want[h.Key])
			}
			delete(want, h.Key)
		}
		if len(want) > 0 {
			t.Errorf("headers missing: %v", want)
		}
		wantKey := map[string]string{"user": "alice", "market": "odds:a:b"}[key]
		if string(r.Key) != wantKey || !bytes.Equal(r.Value, appendRecordValue(nil, b, "relay-eu-1")) {
			t.Errorf("key %q (want %q), value %s", r.Key, wantKey, r.Value)
		}
	}
}
