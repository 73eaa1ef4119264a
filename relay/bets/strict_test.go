package bets

import "testing"

// Parse validates odds/stake as float64, but the record carries the raw
// decimal text: a consumer reading it as a decimal sees a value past the
// documented maximum that the relay accepted.
func TestParseNumberPastMaxByRounding(t *testing.T) {
	for _, tt := range []string{
		`{"bet_id":"b1","channel":"odds:m:1","selection":"home","odds":10000.0000000000001,"stake":5}`,
		`{"bet_id":"b1","channel":"odds:m:1","selection":"home","odds":2,"stake":1000000000.00000001}`,
	} {
		if r, err := Parse([]byte(tt), 4096, 255); err == nil {
			t.Errorf("accepted %s as odds %v stake %v: the record's decimal text is past the documented maximum", tt, r.Odds, r.Stake)
		}
	}
}

// A Protobuf client's rpc data is bytes (no UTF-8 check), and Parse lets
// invalid UTF-8 through in keys and string values: the record on the bets
// topic is not JSON (RFC 8259 §8.1) for strict consumers (serde_json,
// Python's json on bytes), and Go reads the key as "st\uFFFDake".
func TestParseInvalidUTF8(t *testing.T) {
	for _, tt := range []string{
		"{\"bet_id\":\"b1\",\"channel\":\"odds:m:1\",\"selection\":\"home\",\"odds\":2,\"stake\":5,\"st\xffake\":7}",
		"{\"bet_id\":\"b1\",\"channel\":\"odds:m:1\",\"selection\":\"home\",\"odds\":2,\"stake\":5,\"note\":\"\xc0\xaf\"}",
	} {
		if _, err := Parse([]byte(tt), 4096, 255); err == nil {
			t.Errorf("accepted a bet that is not valid UTF-8: %q", tt)
		}
	}
}
