package delta

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// interopCases are pairs the independent implementations must agree on.
func interopCases() [][2][]byte {
	rng := rand.New(rand.NewPCG(11, 12))
	var cases [][2][]byte
	src := oddsJSON(rng, 1500)
	for i := 0; i < 100; i++ { // a market moving for 100 updates
		next := moveSome(rng, src)
		cases = append(cases, [2][]byte{src, next})
		src = next
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	r := random(3000)
	cases = append(cases,
		[2][]byte{nil, []byte("x")},
		[2][]byte{[]byte("same"), []byte("same")},
		[2][]byte{r, append(bytes.Clone(r[1000:]), r[:1000]...)},
		[2][]byte{random(100), random(5000)},
	)
	return cases
}

// need returns the path of a tool the CI installs; outside CI a missing
// one skips the test.
func need(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing (scripts/test installs it): %v", path, err)
		}
		t.Skipf("%s missing; run scripts/test", path)
	}
}

// TestInteropNodeFossilDelta: our patches apply with npm fossil-delta, and
// its patches apply with our Decode.
func TestInteropNodeFossilDelta(t *testing.T) {
	dir, _ := filepath.Abs("../tests/js")
	need(t, filepath.Join(dir, "node_modules", "fossil-delta"))
	cases := interopCases()
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	for _, c := range cases {
		enc.Encode(map[string][]byte{"source": c[0], "target": c[1], "patch": Encode(nil, c[0], c[1])})
	}
	cmd := exec.Command("node", "fossil.mjs")
	cmd.Dir = dir
	cmd.Stdin = &in
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node fossil.mjs: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	i := 0
	for ; sc.Scan(); i++ {
		var r struct {
			Applied []byte `json:"applied"`
			Error   string `json:"error"`
			Theirs  []byte `json:"theirs"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		src, tgt := cases[i][0], cases[i][1]
		if r.Error != "" || !bytes.Equal(r.Applied, tgt) {
			t.Errorf("case %d: fossil-delta applying our patch: %q, error %q", i, r.Applied, r.Error)
		}
		if got, err := Decode(nil, src, r.Theirs); err != nil || !bytes.Equal(got, tgt) {
			t.Errorf("case %d: our Decode of fossil-delta's patch: %v", i, err)
		}
	}
	if i != len(cases) {
		t.Fatalf("%d answers for %d cases", i, len(cases))
	}
}

// TestInteropDebianFossil: our patches apply with Fossil itself
// (fossil test-delta-apply), and Fossil's apply with ours.
func TestInteropDebianFossil(t *testing.T) {
	need(t, "/usr/bin/fossil")
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := interopCases()
	for i := 0; i < len(cases); i += 9 { // a sample: one process per step
		src, tgt := cases[i][0], cases[i][1]
		s, p, o := write("src", src), write("ours", Encode(nil, src, tgt)), filepath.Join(dir, "out")
		if out, err := exec.Command("fossil", "test-delta-apply", s, p, o).CombinedOutput(); err != nil {
			t.Fatalf("case %d: fossil test-delta-apply: %v\n%s", i, err, out)
		}
		if got, _ := os.ReadFile(o); !bytes.Equal(got, tgt) {
			t.Errorf("case %d: fossil applied our patch to %d bytes, want %d", i, len(got), len(tgt))
		}
		tg, theirs := write("tgt", tgt), filepath.Join(dir, "theirs")
		if out, err := exec.Command("fossil", "test-delta-create", s, tg, theirs).CombinedOutput(); err != nil {
			t.Fatalf("case %d: fossil test-delta-create: %v\n%s", i, err, out)
		}
		patch, _ := os.ReadFile(theirs)
		if got, err := Decode(nil, src, patch); err != nil || !bytes.Equal(got, tgt) {
			t.Errorf("case %d: our Decode of fossil's patch: %v", i, err)
		}
	}
}
