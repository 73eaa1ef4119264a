package delta

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// oddsJSON is a typical odds update, size about n bytes.
func oddsJSON(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"match":"match-123","sport":"football","market":"1x2","status":"open","selections":[`)
	for i := 0; b.Len() < n-40; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"sel-%d","name":"Selection %d","odds":%.2f}`, i, i, 1.01+rng.Float64()*10)
	}
	b.WriteString(`],"seq":1}`)
	return b.Bytes()
}

// moveSome changes a few odds, as a market update does.
func moveSome(rng *rand.Rand, src []byte) []byte {
	out := bytes.Clone(src)
	for k := 0; k < 3; k++ {
		j := rng.IntN(len(out))
		if out[j] >= '0' && out[j] <= '9' {
			out[j] = byte('0' + rng.IntN(10))
		}
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	big := oddsJSON(rng, 2000)
	tests := []struct {
		name           string
		source, target []byte
	}{
		{"empty", nil, nil},
		{"to empty", []byte("abc"), nil},
		{"from empty", nil, []byte("hello, world")},
		{"identical", big, big},
		{"odds move", big, moveSome(rng, big)},
		{"prefix", big, big[:1000]},
		{"appended", big, append(bytes.Clone(big), []byte("more bytes at the end of it all")...)},
		{"unrelated", big, bytes.Repeat([]byte("z"), 500)},
		{"repetitive", bytes.Repeat([]byte("ab"), 5000), bytes.Repeat([]byte("ab"), 5001)},
		{"binary", []byte{0, 1, 2, 255, 254, '\n', ';', '@'}, []byte{';', '@', ':', '\n', 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patch := Encode(nil, tt.source, tt.target)
			got, err := Decode(nil, tt.source, patch)
			if err != nil {
				t.Fatalf("Decode: %v (patch %q)", err, patch)
			}
			if !bytes.Equal(got, tt.target) {
				t.Fatalf("round trip differs: got %d bytes, want %d", len(got), len(tt.target))
			}
		})
	}
}

func TestSmallPatchForOddsUpdate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{300, 1000, 2000} {
		src := oddsJSON(rng, n)
		dst := moveSome(rng, src)
		patch := Encode(nil, src, dst)
		if len(patch)*5 > len(dst) { // an update touching 3 digits must shrink ≥ 80 %
			t.Errorf("%d-byte update: %d-byte patch", len(dst), len(patch))
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	src := []byte("0123456789abcdef0123456789abcdef")
	good := Encode(nil, src, []byte("0123456789abcdef0123456789abcdefXYZ"))
	tests := []struct {
		name  string
		patch string
	}{
		{"empty", ""},
		{"no newline", "5"},
		{"bad digit", "!\n"},
		{"copy past source", "A\nA@W,0;"},
		{"insert past patch", "5\n9:ab"},
		{"longer than header", "1\n2:ab0;"},
		{"shorter than header", "3\n1:a0;"},
		{"bad checksum", "1\n1:a0;"},
		{"unterminated", "1\n1:a"},
		{"unknown command", "1\n1?a"},
		{"overflow", "zzzzzzzzzz\n"},
		{"truncated good", string(good[:len(good)-1])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(nil, src, []byte(tt.patch)); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decode(%q) = %v, want ErrCorrupt", tt.patch, err)
			}
		})
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(`{"odds":[2.10,3.40,3.25],"status":"open","seq":1}`), []byte(`{"odds":[2.15,3.40,3.20],"status":"open","seq":2}`))
	f.Add([]byte{}, []byte("x"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		patch := Encode(nil, a, b)
		got, err := Decode(nil, a, patch)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("abcdefghijklmnopqrstuvwxyz"), []byte("A\n0@0,K:xyz0;"))
	f.Fuzz(func(t *testing.T, source, patch []byte) {
		out, err := Decode(nil, source, patch)
		if err == nil && len(out) > MaxTarget {
			t.Fatalf("decoded %d bytes", len(out))
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{300, 1000, 2000} {
		src := oddsJSON(rng, n)
		dst := moveSome(rng, src)
		b.Run(fmt.Sprintf("bytes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 4096)
			for i := 0; i < b.N; i++ {
				buf = Encode(buf[:0], src, dst)
			}
			b.ReportMetric(float64(len(buf))/float64(len(dst))*100, "%patch/full")
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	src := oddsJSON(rng, 1000)
	patch := Encode(nil, src, moveSome(rng, src))
	b.ReportAllocs()
	buf := make([]byte, 0, 4096)
	for i := 0; i < b.N; i++ {
		buf, _ = Decode(buf[:0], src, patch)
	}
}
