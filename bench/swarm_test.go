package bench

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppendUnquoted(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{`abc"rest`, "abc", true},
		{`a\"b\\c\/d\n\t\r\b\f"`, "a\"b\\c/d\n\t\r\b\f", true},
		{`\u0041\u00e9"`, "Aé", true},
		{`no end`, "", false},
		{`bad \x"`, "", false},
		{`short \u00"`, "", false},
		{`pair \ud83d\ude00"`, "", false},
	} {
		got, ok := appendUnquoted(nil, []byte(tt.in))
		if ok != tt.ok || (ok && string(got) != tt.want) {
			t.Errorf("appendUnquoted(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzAppendUnquoted: whatever it accepts, encoding/json reads the same.
func FuzzAppendUnquoted(f *testing.F) {
	f.Add([]byte(`a\"b\u0041"`))
	f.Add([]byte(`12:3@0,"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := appendUnquoted(nil, b)
		if !ok {
			return
		}
		n := len(b)
		for i := 0; i < len(b); i++ { // the closing quote appendUnquoted stopped at
			if b[i] == '\\' {
				i++
			} else if b[i] == '"' {
				n = i
				break
			}
		}
		if !utf8.Valid(b[:n]) {
			return // the relay's frames are valid UTF-8 (it checks them)
		}
		var want string
		if err := json.Unmarshal(append(append([]byte{'"'}, b[:n]...), '"'), &want); err != nil {
			return // raw control characters: json refuses them, the relay never sends them
		}
		if string(got) != want {
			t.Fatalf("appendUnquoted(%q) = %q, encoding/json %q", b, got, want)
		}
	})
}
