package bets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
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

// fields are the documented fields of a bet, by their exact names.
var fields = [...]string{"bet_id", "channel", "selection", "odds", "stake"}

// Indexes into fields.
const (
	fBetID = iota
	fChannel
	fSelection
	fOdds
	fStake
)

// Parse decodes and checks a bet request of at most maxBytes. Errors say
// which field is wrong, for the client.
//
// Decoding is strict where encoding/json is lenient, so that what is
// validated is what every consumer of the record reads: a key given twice,
// or a case variant of a documented field ("STAKE", "ſtake" by Unicode
// folding) next to or instead of it, is an error; encoding/json would match
// either case-insensitively and keep the last, and a consumer that does not
// would read another value.
func Parse(data []byte, maxBytes, maxChannelLen int) (Request, error) {
	var r Request
	if len(data) > maxBytes {
		return r, fmt.Errorf("bet is %d bytes, more than %d", len(data), maxBytes)
	}
	if !utf8.Valid(data) {
		// A Protobuf client's rpc data is bytes; the record must be JSON.
		return r, fmt.Errorf("bet is not valid UTF-8")
	}
	var compact bytes.Buffer
	compact.Grow(len(data))
	vals, ok := fastTopLevel(&compact, data)
	if !ok {
		// Not a plain object of distinct keys: the slow path says what
		// is wrong (or, if nothing is, decodes it the same way).
		all, err := topLevel(data)
		if err != nil {
			return r, err
		}
		for i, f := range fields {
			vals[i] = all[f]
		}
		// compact holds data compacted: fastTopLevel's json.Compact
		// succeeded, or topLevel would have refused data above.
	}
	betID, okID := jsonString(vals[fBetID])
	channel, okChannel := jsonString(vals[fChannel])
	selection, okSelection := jsonString(vals[fSelection])
	switch {
	case !okID || !validID(betID):
		return r, fmt.Errorf("bet_id: required, 1 to %d of A-Z a-z 0-9 . _ : -", maxIDLen)
	case !okChannel:
		return r, fmt.Errorf("channel: required, a string")
	case !okSelection || !validID(selection) || len(selection) > maxSelectionLen:
		return r, fmt.Errorf("selection: required, 1 to %d of A-Z a-z 0-9 . _ : -", maxSelectionLen)
	}
	if err := fanout.ValidateName(channel, maxChannelLen); err != nil {
		return r, fmt.Errorf("channel: %v", err)
	}
	odds, err := number(vals[fOdds])
	if err != nil || odds <= 1 || odds > maxOdds {
		return r, fmt.Errorf("odds: required, decimal odds above 1 and at most %d", maxOdds)
	}
	stake, err := number(vals[fStake])
	if err != nil || stake <= 0 || stake > maxStake {
		return r, fmt.Errorf("stake: required, above 0 and at most %g", float64(maxStake))
	}
	return Request{BetID: betID, Channel: channel, Selection: selection, Odds: odds, Stake: stake, Raw: compact.Bytes()}, nil
}

// jsonString decodes a JSON string value; ok is false if v is absent or
// not one.
func jsonString(v json.RawMessage) (s string, ok bool) {
	if len(v) >= 2 && v[0] == '"' && bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), true // valid JSON without escapes: the text itself
	}
	if v == nil || json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// fastTopLevel is topLevel for the common case, without encoding/json's
// Decoder: it compacts data into compact (which validates it) and scans
// the compact text, whose only spaces are inside strings; data must be
// valid UTF-8 (Parse checks it first: encoding/json reads an invalid
// byte in a key as U+FFFD, making distinct keys equal). It returns the
// documented fields' values, and ok false, leaving the verdict to
// topLevel, for anything but a JSON object whose keys are distinct
// (compared as written, unescaped when escaped) and no case variant of a
// documented field — so it accepts nothing topLevel refuses
// (TestFastTopLevelAgrees, FuzzFastTopLevel).
func fastTopLevel(compact *bytes.Buffer, data []byte) (vals [len(fields)]json.RawMessage, ok bool) {
	if json.Compact(compact, data) != nil {
		return vals, false
	}
	// Every key so far, for duplicates: on the stack up to 16, then in a
	// map (a 4 KiB bet holds some hundreds).
	var keyBuf [16][]byte
	keys := keyBuf[:0]
	var seen map[string]struct{}
	ok = protocol.JSONMembers(compact.Bytes(), func(key, v []byte) bool {
		if bytes.IndexByte(key, '\\') >= 0 {
			k, ok := jsonString(fmt.Appendf(nil, `"%s"`, key))
			if !ok {
				return false
			}
			key = []byte(k)
		}
		field := -1
		for n, f := range fields {
			switch {
			case string(key) == f:
				field = n
			case bytes.EqualFold(key, []byte(f)):
				return false
			}
		}
		if seen == nil && len(keys) < cap(keyBuf) {
			for _, k := range keys {
				if bytes.Equal(k, key) {
					return false
				}
			}
			keys = append(keys, key)
		} else {
			if seen == nil {
				seen = make(map[string]struct{}, 2*len(keys))
				for _, k := range keys {
					seen[string(k)] = struct{}{}
				}
			}
			if _, dup := seen[string(key)]; dup {
				return false
			}
			seen[string(key)] = struct{}{}
		}
		if field >= 0 {
			vals[field] = v[:len(v):len(v)]
		}
		return true
	})
	return vals, ok
}

// topLevel returns the members of the JSON object data by key (as
// unescaped), refusing duplicate keys and case variants of the documented
// fields.
func topLevel(data []byte) (map[string]json.RawMessage, error) {
	notObject := func(err error) error { return fmt.Errorf("bet is not a JSON object with the bet fields: %v", err) }
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if err == nil {
			err = fmt.Errorf("starts with %v", tok)
		}
		return nil, notObject(err)
	}
	vals := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notObject(err)
		}
		key := tok.(string) // object keys are strings
		if _, dup := vals[key]; dup {
			return nil, fmt.Errorf("%s: given twice", key)
		}
		for _, f := range fields {
			if key != f && strings.EqualFold(key, f) {
				return nil, fmt.Errorf("%s: a case variant of %s (field names are exact)", key, f)
			}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, notObject(err)
		}
		vals[key] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, notObject(err)
	}
	if dec.More() {
		return nil, fmt.Errorf("bet has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("bet has data after the JSON object")
	}
	return vals, nil
}

// number parses a JSON number (not a string holding one).
// It refuses more than maxDigits significant digits: the record carries
// the client's text, and past float64's precision the value checked
// (10000.0000000000001 rounds to 10000) would not be the value a decimal
// consumer reads.
func number(raw json.RawMessage) (float64, error) {
	if len(raw) == 0 || raw[0] == '"' || raw[0] == 'n' {
		return 0, fmt.Errorf("not a number")
	}
	if significantDigits(raw) > maxDigits {
		return 0, fmt.Errorf("more than %d significant digits", maxDigits)
	}
	return strconv.ParseFloat(string(raw), 64)
}

// maxDigits is what a float64 holds exactly through a decimal round trip.
const maxDigits = 15

// significantDigits counts the mantissa digits of a JSON number, from the
// first non-zero one (trailing zeros count: 2.50 has three).
func significantDigits(num []byte) int {
	n, started := 0, false
	for _, c := range num {
		switch {
		case c == 'e' || c == 'E':
			return n
		case c >= '1' && c <= '9', c == '0' && started:
			started = true
			n++
		}
	}
	return n
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
