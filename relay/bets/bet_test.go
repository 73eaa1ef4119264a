package bets

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
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

// fastAgrees fails t if fastTopLevel accepts in where topLevel does not, or
// reads a documented field otherwise.
func fastAgrees(t *testing.T, in []byte) (fastOK bool) {
	t.Helper()
	if !utf8.Valid(in) {
		return false // Parse refuses it first: fastTopLevel's keys are compared as UTF-8
	}
	var compact bytes.Buffer
	fast, ok := fastTopLevel(&compact, in)
	if !ok {
		return false
	}
	slow, err := topLevel(in)
	if err != nil {
		t.Fatalf("fastTopLevel accepted %q, topLevel refuses it: %v", in, err)
	}
	var want bytes.Buffer
	if json.Compact(&want, in) != nil || !bytes.Equal(compact.Bytes(), want.Bytes()) {
		t.Fatalf("fastTopLevel compacted %q to %q", in, compact.Bytes())
	}
	for i, f := range fields {
		var sv bytes.Buffer
		if v, ok := slow[f]; ok {
			json.Compact(&sv, v)
		}
		if fv := fast[i]; (fv != nil) != (sv.Len() > 0) || !bytes.Equal(fv, sv.Bytes()) {
			t.Fatalf("%q: field %s: fast %q, slow %q", in, f, fv, sv.Bytes())
		}
	}
	return true
}

// TestFastTopLevelAgrees: the fast scan of a bet's members takes only what
// the strict decoder takes, and reads the same fields from it; on the rest
// Parse falls back to the decoder, whose errors TestParse checks.
func TestFastTopLevelAgrees(t *testing.T) {
	const ok = `{"bet_id":"b-1","channel":"odds:a:b","selection":"home","odds":2.5,"stake":10}`
	accepted := 0
	for _, in := range []string{
		ok,
		` { "bet_id" : "b-1", "channel":"odds:a:b" ,"selection":"home","odds": 2.5,"stake":1e1 } `,
		`{"bet_id":"b\u002d1","channel":"odds:a:b","selection":"home","odds":2.5,"stake":10}`,
		`{"x":{"a":[1,{"b":"}\"]"}],"c":null},"y":[[],[{}]],"bet_id":"b-1","channel":"odds:a:b","selection":"home","odds":2.5,"stake":10,"z":"a b"}`,
		`{"stake":{"n":1},"odds":[2],"bet_id":true,"channel":null,"selection":"s p"}`,
		`{}`, `{"a":1}`, `[1]`, `"x"`, `1`, `null`, `{`, `{"a":1}{}`, `{"a":1,}`, `{"a"}`,
		`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"stake":1,"STAKE":2}`, `{"ſtake":1}`, `{"Odds":2}`, `{"bet_\u0049d":"x"}`,
		`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k3":3}`,
		`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k18":18}`,
	} {
		if fastAgrees(t, []byte(in)) {
			accepted++
		}
	}
	if accepted != 8 {
		t.Errorf("the fast path took %d of the inputs, want 8 (the rest go to the decoder)", accepted)
	}
}

func FuzzFastTopLevel(f *testing.F) {
	f.Add([]byte(`{"bet_id":"b-1","channel":"odds:a:b","selection":"home","odds":2.5,"stake":10,"x":{"y":["}"]}}`))
	f.Add([]byte(`{"a":1,"\u0061":2}`))
	f.Fuzz(func(t *testing.T, in []byte) { fastAgrees(t, in) })
}

func BenchmarkParse(b *testing.B) {
	in := []byte(`{"bet_id":"0123456789abcdef-1234-77","channel":"odds:bench:storm:m-1:1x2","selection":"home","odds":2.1,"stake":5}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(in, 4096, 255); err != nil {
			b.Fatal(err)
		}
	}
}
