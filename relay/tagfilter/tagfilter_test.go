package tagfilter

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/edgerelay/edgerelay/relay/protocol"
)

func leaf(key, cmp, val string, vals ...string) protocol.FilterNode {
	return protocol.FilterNode{Key: key, Cmp: cmp, Val: val, Vals: vals}
}

func inner(op string, nodes ...protocol.FilterNode) protocol.FilterNode {
	return protocol.FilterNode{Op: op, Nodes: nodes}
}

func TestMatch(t *testing.T) {
	tags := map[string]string{"ticker": "AAPL", "source": "NASDAQ", "price": "150.25", "volume": "1000", "empty": "", "word": "abc",
		"long": strings.Repeat("9", MaxNumberBytes+1)}
	for _, tt := range []struct {
		name string
		f    protocol.FilterNode
		want bool
	}{
		{"eq", leaf("ticker", "eq", "AAPL"), true},
		{"eq other", leaf("ticker", "eq", "MSFT"), false},
		{"eq absent", leaf("nope", "eq", "AAPL"), false},
		{"neq", leaf("source", "neq", "NYSE"), true},
		{"neq same", leaf("source", "neq", "NASDAQ"), false},
		{"neq absent", leaf("nope", "neq", "x"), true},
		{"in", leaf("ticker", "in", "", "MSFT", "AAPL"), true},
		{"in not", leaf("ticker", "in", "", "MSFT"), false},
		{"in absent", leaf("nope", "in", "", ""), false},
		{"nin", leaf("ticker", "nin", "", "MSFT"), true},
		{"nin in", leaf("ticker", "nin", "", "AAPL"), false},
		{"nin absent", leaf("nope", "nin", "", "AAPL"), true},
		{"ex", leaf("price", "ex", ""), true},
		{"ex empty value", leaf("empty", "ex", ""), true},
		{"ex absent", leaf("nope", "ex", ""), false},
		{"nex", leaf("nope", "nex", ""), true},
		{"nex present", leaf("price", "nex", ""), false},
		{"sw", leaf("ticker", "sw", "AA"), true},
		{"sw not", leaf("ticker", "sw", "PL"), false},
		{"ew", leaf("source", "ew", "DAQ"), true},
		{"ew not", leaf("source", "ew", "NAS"), false},
		{"ct", leaf("source", "ct", "SDA"), true},
		{"ct not", leaf("source", "ct", "XYZ"), false},
		{"sw absent", leaf("nope", "sw", "A"), false},
		{"gt", leaf("price", "gt", "100"), true},
		{"gt equal", leaf("volume", "gt", "1000"), false},
		{"gte equal", leaf("volume", "gte", "1e3"), true},
		{"lt", leaf("price", "lt", "200"), true},
		{"lt not", leaf("price", "lt", "150.25"), false},
		{"lte equal", leaf("price", "lte", "150.250"), true},
		{"lt negative", leaf("price", "lt", "-1"), false},
		{"gt absent", leaf("nope", "gt", "1"), false},
		{"gt not a number", leaf("word", "gt", "1"), false},
		{"gt too long a number", leaf("long", "gt", "1"), false},
		{"lt not a number", leaf("word", "lt", "1"), false},
		{"lt empty", leaf("empty", "lt", "1"), false},
		{"and", inner("and", leaf("ticker", "eq", "AAPL"), leaf("price", "gt", "100")), true},
		{"and one false", inner("and", leaf("ticker", "eq", "AAPL"), leaf("price", "gt", "200")), false},
		{"or", inner("or", leaf("ticker", "eq", "MSFT"), leaf("source", "eq", "NASDAQ")), true},
		{"or none", inner("or", leaf("ticker", "eq", "MSFT"), leaf("source", "eq", "NYSE")), false},
		{"not", inner("not", leaf("source", "eq", "NYSE")), true},
		{"not true", inner("not", leaf("source", "eq", "NASDAQ")), false},
		{"nested", inner("and", inner("or", leaf("ticker", "eq", "X"), inner("not", leaf("nope", "ex", ""))), leaf("volume", "lte", "1000")), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(&tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Match(tags); got != tt.want {
				t.Fatalf("Match = %v, want %v", got, tt.want)
			}
			if got := f.Match(nil); got != reference(&tt.f, nil) {
				t.Fatalf("Match(nil) = %v, the reference says %v", got, !got)
			}
		})
	}
}

func TestCompileRefuses(t *testing.T) {
	chain := leaf("k", "eq", "v")
	for range MaxDepth {
		chain = inner("not", chain)
	}
	var wide []protocol.FilterNode
	for i := range MaxNodes {
		wide = append(wide, leaf("k", "eq", strconv.Itoa(i)))
	}
	many := make([]string, MaxVals+1)
	for i := range many {
		many[i] = strconv.Itoa(i)
	}
	long := strings.Repeat("x", MaxStringBytes+1)
	var heavy []protocol.FilterNode
	for range 20 {
		heavy = append(heavy, leaf(strings.Repeat("k", MaxStringBytes), "eq", strings.Repeat("v", MaxStringBytes)))
	}
	for _, tt := range []struct {
		name string
		f    protocol.FilterNode
		want string
	}{
		{"too deep", chain, "deeper than 8"},
		{"too deep in decoding", protocol.FilterNode{Op: "not", TooDeep: true}, "deeper than"},
		{"too many nodes", inner("or", wide...), "more than 32 nodes"},
		{"too many vals", leaf("k", "in", "", many...), "33 vals"},
		{"long key", leaf(long, "eq", "v"), "key of 257 bytes"},
		{"long value", leaf("k", "in", "", "a", long), "value of 257 bytes"},
		{"too many bytes", inner("or", heavy...), "more than 4096 bytes"},
		{"unknown op", inner("xor", leaf("k", "eq", "v")), `unknown op "xor"`},
		{"unknown cmp", leaf("k", "like", "v"), `unknown cmp "like"`},
		{"no cmp", protocol.FilterNode{Key: "k", Val: "v"}, `unknown cmp ""`},
		{"no key", leaf("", "eq", "v"), "without key"},
		{"ex without key", leaf("", "ex", ""), "without key"},
		{"eq without val", leaf("k", "eq", ""), "without val"},
		{"eq with vals", leaf("k", "eq", "v", "w"), "with vals"},
		{"in without vals", leaf("k", "in", ""), "without vals"},
		{"in with val", leaf("k", "in", "v", "w"), "with val"},
		{"ex with val", leaf("k", "ex", "v"), "with val or vals"},
		{"leaf with children", protocol.FilterNode{Key: "k", Cmp: "eq", Val: "v", Nodes: []protocol.FilterNode{leaf("k", "ex", "")}}, "with child nodes"},
		{"gt with a word", leaf("k", "gt", "ten"), "not a decimal number"},
		{"gt with hex", leaf("k", "gt", "0x10"), "not a decimal number"},
		{"gt with Inf", leaf("k", "gt", "Inf"), "not a decimal number"},
		{"gt overflowing", leaf("k", "gt", "1e999"), "not a decimal number"},
		{"gt with a long number", leaf("k", "gt", strings.Repeat("1", MaxNumberBytes+1)), "not a decimal number"},
		{"too many numeric", inner("and", leaf("k", "gt", "1"), leaf("k", "lt", "9"), leaf("j", "gte", "1"), leaf("j", "lte", "9"), leaf("i", "gt", "0")), "more than 4 numeric"},
		{"too many ct", inner("or", leaf("k", "ct", "a"), leaf("k", "ct", "b"), leaf("k", "ct", "c")), "more than 2 ct"},
		{"long ct", leaf("k", "ct", strings.Repeat("a", MaxContainsBytes+1)), "ct comparison with a val of 33 bytes"},
		{"and without children", inner("and"), "without children"},
		{"not with two", inner("not", leaf("k", "ex", ""), leaf("k", "ex", "")), "exactly 1"},
		{"and with key", protocol.FilterNode{Op: "and", Key: "k", Nodes: []protocol.FilterNode{leaf("k", "ex", "")}}, "with key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(&tt.f)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrInvalid saying %q", err, tt.want)
			}
		})
	}
	// At the bounds exactly: accepted.
	for _, f := range []protocol.FilterNode{inner("or", wide[:MaxNodes-1]...), leaf("k", "in", "", many[:MaxVals]...), chainOf(MaxDepth)} {
		if _, err := Compile(&f); err != nil {
			t.Errorf("refused at the bound: %v", err)
		}
	}
}

func chainOf(levels int) protocol.FilterNode {
	f := leaf("k", "eq", "v")
	for range levels - 1 {
		f = inner("not", f)
	}
	return f
}

func TestMatchAllocs(t *testing.T) {
	f, err := Compile(&protocol.FilterNode{Op: "and", Nodes: []protocol.FilterNode{
		leaf("group", "in", "", "main", "top"), leaf("price", "gte", "1.5"), leaf("word", "lt", "3"),
		inner("not", leaf("suspended", "ex", "")), leaf("name", "ct", "ar"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{"group": "main", "price": "2.25", "word": "not-a-number", "name": "arsenal"}
	if n := testing.AllocsPerRun(100, func() { f.Match(tags) }); n != 0 {
		t.Fatalf("%v allocations per Match, want 0", n)
	}
}

// TestMatchAllocsOutOfRange: a tag beyond float64's range, compared as a
// number, costs no allocation either (ParseFloat's error would).
func TestMatchAllocsOutOfRange(t *testing.T) {
	n := leaf("price", "gte", "1.5")
	f, err := Compile(&n)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1e999", "-1e400", "1e-999", "17976931348623159e292"} {
		tags := map[string]string{"price": v}
		if n := testing.AllocsPerRun(100, func() { f.Match(tags) }); n != 0 {
			t.Errorf("tag %q: %v allocations per Match, want 0", v, n)
		}
	}
}

// TestNumberRange: number agrees with strconv.ParseFloat on which
// decimals are in float64's range, at the boundary too.
func TestNumberRange(t *testing.T) {
	cases := []string{"1e308", "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
		"1.797693134862316e308", "1.79769313486231e308", "17976931348623158e292", "17976931348623159e292",
		"-1.7976931348623159e308", "0.00017976931348623159e312", "0.0001797693134862315e312", "1e309", "9e307",
		"1e-400", "0", "0.0e999", "000.000", "+1E+308", "2e308", "1797e305", "1798e305", "1e999999999999999999"}
	for _, mant := range []string{"1", "1.7", "17976", "0.179769313486232", "179769313486231", "1.797693134862315"} {
		for e := 290; e <= 320; e++ {
			cases = append(cases, mant+"e"+strconv.Itoa(e), "-"+mant+"E+"+strconv.Itoa(e))
		}
	}
	for _, s := range cases {
		if len(s) > MaxNumberBytes {
			continue
		}
		want, err := strconv.ParseFloat(s, 64)
		wantOK := err == nil
		got, ok := number(s)
		if ok != wantOK || ok && got != want {
			t.Errorf("number(%q) = %v, %v; ParseFloat: %v, %v", s, got, ok, want, err)
		}
	}
}

// reference evaluates a checked tree the plain way, for the fuzz target
// to compare Match with.
func reference(n *protocol.FilterNode, tags map[string]string) bool {
	switch n.Op {
	case "and", "or":
		for i := range n.Nodes {
			if reference(&n.Nodes[i], tags) != (n.Op == "and") {
				return n.Op == "or"
			}
		}
		return n.Op == "and"
	case "not":
		return !reference(&n.Nodes[0], tags)
	}
	v, ok := tags[n.Key]
	in := false
	for _, x := range n.Vals {
		in = in || x == v
	}
	switch n.Cmp {
	case "eq":
		return ok && v == n.Val
	case "neq":
		return !ok || v != n.Val
	case "in":
		return ok && in
	case "nin":
		return !ok || !in
	case "ex":
		return ok
	case "nex":
		return !ok
	case "sw":
		return ok && strings.HasPrefix(v, n.Val)
	case "ew":
		return ok && strings.HasSuffix(v, n.Val)
	case "ct":
		return ok && strings.Contains(v, n.Val)
	}
	x, err1 := strconv.ParseFloat(v, 64)
	y, _ := strconv.ParseFloat(n.Val, 64)
	if !ok || err1 != nil || !decimal(v) || len(v) > MaxNumberBytes {
		return false
	}
	switch n.Cmp {
	case "lt":
		return x < y
	case "lte":
		return x <= y
	case "gt":
		return x > y
	}
	return x >= y
}

// measure returns the nodes, depth and largest vals of a tree.
func measure(n *protocol.FilterNode, depth int) (nodes, deepest, vals int) {
	nodes, deepest, vals = 1, depth, len(n.Vals)
	for i := range n.Nodes {
		c, d, v := measure(&n.Nodes[i], depth+1)
		nodes, deepest, vals = nodes+c, max(deepest, d), max(vals, v)
	}
	return
}

// FuzzCompile decodes a filter from JSON and from Protobuf (as the subscribe
// command's tf), compiles it, and checks that what Compile accepts is
// within the bounds and that Match agrees with the reference evaluator.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`{"key":"group","cmp":"eq","val":"main"}`,
		`{"op":"and","nodes":[{"key":"group","cmp":"in","vals":["main","top"]},{"op":"not","nodes":[{"key":"s","cmp":"ex"}]}]}`,
		`{"op":"or","nodes":[{"key":"price","cmp":"gt","val":"1.5"},{"key":"n","cmp":"ct","val":"ar"}]}`,
		`{"op":"not","nodes":[{"op":"not","nodes":[{"op":"not","nodes":[{"key":"k","cmp":"nex"}]}]}]}`,
		`{"key":"k","cmp":"lte","val":"-2e3"}`,
	} {
		f.Add([]byte(s), "main", "1.5")
	}
	pbLeaf := []byte{0x12, 1, 'k', 0x1a, 2, 'e', 'q', 0x22, 1, 'v'}                            // key k, cmp eq, val v
	f.Add(append([]byte{0x0a, 3, 'n', 'o', 't', 0x32, byte(len(pbLeaf))}, pbLeaf...), "v", "") // not(...)
	f.Fuzz(func(t *testing.T, b []byte, v1, v2 string) {
		var trees []*protocol.FilterNode
		var n protocol.FilterNode
		if json.Unmarshal(b, &n) == nil {
			trees = append(trees, &n)
		}
		// The same bytes as a Protobuf FilterNode inside a subscribe.
		cmd := protobufSubscribe(b)
		protocol.Protobuf.DecodeCommands(cmd, func(c *protocol.Command) error {
			if c.Subscribe != nil && c.Subscribe.TF != nil {
				trees = append(trees, c.Subscribe.TF)
			}
			return nil
		})
		tagSets := []map[string]string{nil, {"group": v1, "price": v2, "k": v1, "n": v2, "s": ""}}
		for _, tree := range trees {
			flt, err := Compile(tree)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v does not wrap ErrInvalid", err)
				}
				continue
			}
			if nodes, depth, vals := measure(tree, 1); nodes > MaxNodes || depth > MaxDepth || vals > MaxVals {
				t.Fatalf("accepted %d nodes, %d levels, %d vals", nodes, depth, vals)
			}
			for _, tags := range tagSets {
				if got, want := flt.Match(tags), reference(tree, tags); got != want {
					t.Fatalf("Match(%v) = %v, reference %v", tags, got, want)
				}
			}
		}
	})
}

// protobufSubscribe is a delimited Command{id: 1, subscribe:
// {channel: "c", tf: <tf>}}.
func protobufSubscribe(tf []byte) []byte {
	sub := append([]byte{0x0a, 1, 'c', 0x6a}, varint(len(tf))...)
	sub = append(sub, tf...)
	cmd := append([]byte{0x08, 1, 0x2a}, varint(len(sub))...)
	cmd = append(cmd, sub...)
	return append(varint(len(cmd)), cmd...)
}

func varint(n int) []byte {
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

// BenchmarkMatch: one Match per publication and subscriber, for a typical
// filter and for the costliest ones the bounds allow: both substring
// searches at their worst (a 32-byte val that fails at its end, in a
// 256-byte tag of the same byte) and every other leaf comparing 128 of the
// MaxBytes bytes; the same with MaxNumeric numbers of MaxNumberBytes
// digits in place of some.
func BenchmarkMatch(b *testing.B) {
	same := strings.Repeat("a", MaxStringBytes)
	worst := []protocol.FilterNode{leaf("k", "ct", same[:MaxContainsBytes-1]+"b"), leaf("k", "ct", same[:MaxContainsBytes-1]+"c")}
	for i := range MaxNodes - 3 {
		worst = append(worst, leaf("k", "eq", same[:127]+strconv.Itoa(i%10)))
	}
	numeric := worst[:MaxNodes-1-MaxNumeric]
	for range MaxNumeric {
		numeric = append(numeric, leaf("n", "gt", "1"+strings.Repeat("0", MaxNumberBytes-1)))
	}
	for _, bb := range []struct {
		name string
		f    protocol.FilterNode
		tags map[string]string
	}{
		{"typical", inner("and", leaf("group", "eq", "main"), inner("not", leaf("suspended", "ex", ""))),
			map[string]string{"group": "main", "market": "1x2"}},
		{"worst-strings", inner("or", worst...), map[string]string{"k": same}},
		{"worst-numbers", inner("or", numeric...), map[string]string{"k": same, "n": "0." + strings.Repeat("9", MaxNumberBytes-2)}},
	} {
		f, err := Compile(&bb.f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Match(bb.tags)
			}
		})
	}
}
