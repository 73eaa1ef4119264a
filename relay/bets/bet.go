package bets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/edgerelay/edgerelay/fanout"
)

// Request is a bet as the client sent it (the data of rpc "bet"):
//
//	{"bet_id":"c-81f3","channel":"odds:football:epl:match-123:1x2",
//	 "selection":"home","odds":2.10,"stake":5, ...any other fields...}
//
// Other fields are opaque to the relay and travel to Kafka as sent.
type Request struct {
	BetID     string
	Channel   string
	Selection string
	Odds      float64
	Stake     float64
	// Raw is the request exactly as received, compacted.
	Raw []byte
}

// Field limits.
const (
	maxIDLen        = 64
	maxSelectionLen = 64
	maxOdds         = 10_000
	maxStake        = 1e9
)

// Parse decodes and checks a bet request of at most maxBytes. Errors say
// which field is wrong, for the client.
func Parse(data []byte, maxBytes, maxChannelLen int) (Request, error) {
	var r Request
	if len(data) > maxBytes {
		return r, fmt.Errorf("bet is %d bytes, more than %d", len(data), maxBytes)
	}
	var raw struct {
		BetID     *string         `json:"bet_id"`
		Channel   *string         `json:"channel"`
		Selection *string         `json:"selection"`
		Odds      json.RawMessage `json:"odds"`
		Stake     json.RawMessage `json:"stake"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return r, fmt.Errorf("bet is not a JSON object with the bet fields: %v", err)
	}
	if dec.More() {
		return r, fmt.Errorf("bet has data after the JSON object")
	}
	switch {
	case raw.BetID == nil || !validID(*raw.BetID):
		return r, fmt.Errorf("bet_id: required, 1 to %d of A-Z a-z 0-9 . _ : -", maxIDLen)
	case raw.Channel == nil:
		return r, fmt.Errorf("channel: required")
	case raw.Selection == nil || !validID(*raw.Selection) || len(*raw.Selection) > maxSelectionLen:
		return r, fmt.Errorf("selection: required, 1 to %d of A-Z a-z 0-9 . _ : -", maxSelectionLen)
	}
	if err := fanout.ValidateName(*raw.Channel, maxChannelLen); err != nil {
		return r, fmt.Errorf("channel: %v", err)
	}
	odds, err := number(raw.Odds)
	if err != nil || odds <= 1 || odds > maxOdds {
		return r, fmt.Errorf("odds: required, decimal odds above 1 and at most %d", maxOdds)
	}
	stake, err := number(raw.Stake)
	if err != nil || stake <= 0 || stake > maxStake {
		return r, fmt.Errorf("stake: required, above 0 and at most %g", float64(maxStake))
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return r, fmt.Errorf("bet is not valid JSON: %v", err)
	}
	return Request{BetID: *raw.BetID, Channel: *raw.Channel, Selection: *raw.Selection, Odds: odds, Stake: stake, Raw: compact.Bytes()}, nil
}

// number parses a JSON number (not a string holding one).
func number(raw json.RawMessage) (float64, error) {
	if len(raw) == 0 || raw[0] == '"' || raw[0] == 'n' {
		return 0, fmt.Errorf("not a number")
	}
	return strconv.ParseFloat(string(raw), 64)
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
