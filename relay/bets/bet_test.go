package bets

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const ok = `{"bet_id":"b-1","channel":"odds:a:b","selection":"home","odds":2.5,"stake":10,"extra":{"x":[1,2]}}`
	for _, tt := range []struct {
		name, in, errHas string
	}{
		{"valid", ok, ""},
		{"too large", ok[:len(ok)-1] + `,"pad":"` + strings.Repeat("x", 300) + `"}`, "bytes"},
		{"not an object", `[1]`, "JSON object"},
		{"trailing data", ok + `{}`, "after the JSON object"},
		{"no bet_id", `{"channel":"odds:a","selection":"h","odds":2,"stake":1}`, "bet_id"},
		{"bet_id with space", strings.Replace(ok, "b-1", "b 1", 1), "bet_id"},
		{"bad channel", strings.Replace(ok, "odds:a:b", "odds::b", 1), "channel"},
		{"odds 1", strings.Replace(ok, "2.5", "1", 1), "odds"},
		{"odds string", strings.Replace(ok, "2.5", `"2.5"`, 1), "odds"},
		{"stake 0", strings.Replace(ok, `"stake":10`, `"stake":0`, 1), "stake"},
		{"stake huge", strings.Replace(ok, `"stake":10`, `"stake":1e12`, 1), "stake"},
		// Smuggling past validation: encoding/json matches keys without
		// case (and Unicode folding) and keeps the last match.
		{"stake twice", strings.Replace(ok, `"stake":10`, `"stake":-1000000,"stake":10`, 1), "given twice"},
		{"stake and STAKE", strings.Replace(ok, `"stake":10`, `"stake":-1000000,"STAKE":10`, 1), "case variant"},
		{"folded ſtake", strings.Replace(ok, `"stake":10`, `"stake":10,"ſtake":-1000000`, 1), "case variant"},
		{"Odds only", strings.Replace(ok, `"odds":2.5`, `"Odds":2.5`, 1), "case variant"},
		{"channel twice", strings.Replace(ok, `"channel":"odds:a:b"`, `"channel":"odds:suspended","channel":"odds:a:b"`, 1), "given twice"},
		{"escaped duplicate", strings.Replace(ok, `"stake":10`, `"stake":10,"st\u0061ke":-5`, 1), "given twice"},
		{"opaque key twice", strings.Replace(ok, `"extra":{"x":[1,2]}`, `"extra":1,"extra":2`, 1), "given twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse([]byte(tt.in), 256, 255)
			if tt.errHas == "" {
				if err != nil || r.BetID != "b-1" || r.Odds != 2.5 || r.Stake != 10 || !strings.Contains(string(r.Raw), `"extra"`) {
					t.Fatalf("Parse: %+v, %v", r, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Parse: %v, want an error mentioning %q", err, tt.errHas)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"bet_id":"b-1","channel":"odds:a:b","selection":"home","odds":2.5,"stake":10}`))
	f.Add([]byte(`{"bet_id":null}`))
	f.Add([]byte(`"x"`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := Parse(in, 4096, 255)
		if err == nil && (r.Odds <= 1 || r.Stake <= 0 || r.BetID == "" || len(r.Raw) == 0) {
			t.Fatalf("accepted %q as %+v", in, r)
		}
	})
}
