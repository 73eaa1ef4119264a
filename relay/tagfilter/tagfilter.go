// Package tagfilter checks and evaluates the tag filters clients send on
// subscribe (the "tf" field of the Centrifugo protocol): a subscription
// with a filter gets only the publications whose tags match it.
//
// # Model
//
// A filter is a tree (protocol.FilterNode). A leaf compares one tag:
//
//	eq, neq    the tag's value is (is not) val; neq also holds without the tag
//	in, nin    the value is (is not) one of vals; nin also holds without the tag
//	ex, nex    the tag is present (absent)
//	sw, ew, ct the value starts with, ends with, contains val
//	lt, lte, gt, gte
//	           the value, a decimal number, compares so with val (as
//	           float64); false when the tag is absent or not a number
//
// and an inner node combines its children: "and" (all), "or" (any),
// "not" (exactly one child, negated). These are Centrifugo's operators
// and semantics, except that a numeric comparison's val must itself be a
// number (Centrifugo evaluates such a leaf to false; here the filter is
// refused, the client's mistake shown at once).
//
// Compile checks a tree and returns a Filter, or an error wrapping
// ErrInvalid that says what is wrong. The bounds (MaxNodes, MaxDepth,
// MaxVals, MaxStringBytes, MaxBytes) keep what one anonymous client can
// make the node do per publication small and fixed: at most MaxNodes
// leaves each look up one tag and compare it, all comparisons together
// reading at most MaxBytes of the filter's values, at most MaxContains
// substring searches for a short val and MaxNumeric parses of a number
// of at most MaxNumberBytes, without allocating (BenchmarkMatch measures the
// costliest filter the bounds allow).
//
// # Concurrency
//
// A Filter is immutable: Match is safe for concurrent use (the hub calls
// it from the publishing goroutine, under the channel's lock).
package tagfilter

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// Bounds of a filter (docs/protocol.md, "Tag filters").
const (
	MaxNodes       = 32  // nodes in the tree, leaves and inner ones
	MaxDepth       = 8   // levels, the root's being 1
	MaxVals        = 32  // values of one in or nin leaf
	MaxStringBytes = 256 // bytes of one key or value
	MaxBytes       = 4096
	// A substring search (ct) costs more than a comparison: a filter has
	// at most MaxContains of them, each val at most MaxContainsBytes.
	MaxContains      = 2
	MaxContainsBytes = 32
	// Numeric comparisons parse the tag each time: a filter has at most
	// MaxNumeric of them, and a number (a numeric comparison's val, or a
	// tag compared as one) at most MaxNumberBytes (within strconv's fast
	// path): a longer tag is no number.
	MaxNumeric     = 4
	MaxNumberBytes = 20
)

// ErrInvalid wraps every error of Compile.
var ErrInvalid = errors.New("tagfilter: invalid filter")

// op is a node's operation.
type op uint8

const (
	opEq op = iota
	opNeq
	opIn
	opNin
	opEx
	opNex
	opSw
	opEw
	opCt
	opLt
	opLte
	opGt
	opGte
	opAnd
	opOr
	opNot
)

var leafOps = map[string]op{
	"eq": opEq, "neq": opNeq, "in": opIn, "nin": opNin, "ex": opEx, "nex": opNex,
	"sw": opSw, "ew": opEw, "ct": opCt, "lt": opLt, "lte": opLte, "gt": opGt, "gte": opGte,
}

var innerOps = map[string]op{"and": opAnd, "or": opOr, "not": opNot}

// Filter is a checked filter tree. The zero value is not a filter: use
// Compile.
type Filter struct {
	root node
}

var _ fanout.Filter = (*Filter)(nil)

type node struct {
	op   op
	key  string
	val  string
	num  float64 // val as a number, for lt, lte, gt, gte
	vals []string
	kids []node
}

// Compile checks the tree rooted at n against the bounds and the
// operators' rules and returns it as a Filter. Errors wrap ErrInvalid.
func Compile(n *protocol.FilterNode) (*Filter, error) {
	c := compiler{}
	root, err := c.node(n, 1)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &Filter{root: root}, nil
}

type compiler struct {
	nodes, bytes, contains, numeric int
}

func (c *compiler) str(what, s string) error {
	if len(s) > MaxStringBytes {
		return fmt.Errorf("%s of %d bytes (at most %d)", what, len(s), MaxStringBytes)
	}
	if c.bytes += len(s); c.bytes > MaxBytes {
		return fmt.Errorf("more than %d bytes of keys and values", MaxBytes)
	}
	return nil
}

func (c *compiler) node(n *protocol.FilterNode, depth int) (node, error) {
	if depth > MaxDepth || n.TooDeep {
		return node{}, fmt.Errorf("deeper than %d levels", MaxDepth)
	}
	if n.TooLarge { // the decoder stopped building it
		return node{}, fmt.Errorf("more than %d nodes or %d values", MaxNodes, MaxVals)
	}
	if c.nodes++; c.nodes > MaxNodes {
		return node{}, fmt.Errorf("more than %d nodes", MaxNodes)
	}
	if n.Op == "" {
		return c.leaf(n)
	}
	o, ok := innerOps[n.Op]
	switch {
	case !ok:
		return node{}, fmt.Errorf("unknown op %q (and, or, not; none for a comparison)", n.Op)
	case n.Key != "" || n.Cmp != "" || n.Val != "" || len(n.Vals) > 0:
		return node{}, fmt.Errorf("%s node with key, cmp, val or vals", n.Op)
	case o == opNot && len(n.Nodes) != 1:
		return node{}, fmt.Errorf("not node with %d children (exactly 1)", len(n.Nodes))
	case len(n.Nodes) == 0:
		return node{}, fmt.Errorf("%s node without children", n.Op)
	}
	out := node{op: o, kids: make([]node, 0, min(len(n.Nodes), MaxNodes))}
	for i := range n.Nodes {
		k, err := c.node(&n.Nodes[i], depth+1)
		if err != nil {
			return node{}, err
		}
		out.kids = append(out.kids, k)
	}
	return out, nil
}

func (c *compiler) leaf(n *protocol.FilterNode) (node, error) {
	o, ok := leafOps[n.Cmp]
	switch {
	case !ok:
		return node{}, fmt.Errorf("unknown cmp %q", n.Cmp)
	case len(n.Nodes) > 0:
		return node{}, fmt.Errorf("%s comparison with child nodes", n.Cmp)
	case n.Key == "":
		return node{}, fmt.Errorf("%s comparison without key", n.Cmp)
	}
	if err := c.str("key", n.Key); err != nil {
		return node{}, err
	}
	out := node{op: o, key: n.Key}
	switch o {
	case opIn, opNin:
		switch {
		case len(n.Vals) == 0:
			return node{}, fmt.Errorf("%s comparison without vals", n.Cmp)
		case len(n.Vals) > MaxVals:
			return node{}, fmt.Errorf("%s comparison with %d vals (at most %d)", n.Cmp, len(n.Vals), MaxVals)
		case n.Val != "":
			return node{}, fmt.Errorf("%s comparison with val (it takes vals)", n.Cmp)
		}
		for _, v := range n.Vals {
			if err := c.str("value", v); err != nil {
				return node{}, err
			}
		}
		out.vals = slices.Clone(n.Vals)
	case opEx, opNex:
		if n.Val != "" || len(n.Vals) > 0 {
			return node{}, fmt.Errorf("%s comparison with val or vals", n.Cmp)
		}
	default:
		switch {
		case n.Val == "":
			return node{}, fmt.Errorf("%s comparison without val", n.Cmp)
		case len(n.Vals) > 0:
			return node{}, fmt.Errorf("%s comparison with vals (it takes val)", n.Cmp)
		}
		if err := c.str("value", n.Val); err != nil {
			return node{}, err
		}
		out.val = n.Val
		if o == opCt {
			if c.contains++; c.contains > MaxContains {
				return node{}, fmt.Errorf("more than %d ct comparisons", MaxContains)
			}
			if len(n.Val) > MaxContainsBytes {
				return node{}, fmt.Errorf("ct comparison with a val of %d bytes (at most %d)", len(n.Val), MaxContainsBytes)
			}
		}
		if o >= opLt && o <= opGte {
			if c.numeric++; c.numeric > MaxNumeric {
				return node{}, fmt.Errorf("more than %d numeric comparisons", MaxNumeric)
			}
			f, ok := number(n.Val)
			if !ok {
				return node{}, fmt.Errorf("%s comparison with %q, not a decimal number", n.Cmp, n.Val)
			}
			out.num = f
		}
	}
	return out, nil
}

// number parses a finite decimal number: an optional sign, digits with
// an optional fraction, an optional exponent. The syntax is checked
// first, so that a tag that is not a number costs no allocation
// (strconv's errors allocate).
func number(s string) (float64, bool) {
	if len(s) > MaxNumberBytes || !decimal(s) || overflows(s) {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// maxDigits are the leading digits of the least decimal that ParseFloat
// rounds to infinity (the largest float64 and half its last unit),
// 0.179769313486231580793728…e309.
const maxDigits = "179769313486231580793728971405303415"

// overflows reports whether the decimal number s (decimal(s), at most
// MaxNumberBytes) is beyond float64's range, which ParseFloat would
// answer with an error it allocates ("1e999" as a tag).
func overflows(s string) bool {
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		exp, _ = strconv.Atoi(s[i+1:]) // at most 18 digits: no error
	}
	intPart, frac, _ := strings.Cut(strings.TrimLeft(mant, "+-"), ".")
	intPart = strings.TrimLeft(intPart, "0")
	var buf [MaxNumberBytes]byte
	digits := append(buf[:0], intPart...)
	lead := len(intPart) - 1 // the decimal exponent of the first digit
	if intPart == "" {
		f := strings.TrimLeft(frac, "0")
		if f == "" {
			return false // zero
		}
		lead = len(f) - len(frac) - 1
		frac = f
	}
	digits = append(digits, frac...)
	switch lead += exp; {
	case lead < 308:
		return false
	case lead > 308:
		return true
	}
	return string(digits) > maxDigits // digit by digit; maxDigits goes on
}

func decimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		digits++
	}
	if i < len(s) && s[i] == '.' {
		for i++; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		exp := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			exp++
		}
		if exp == 0 {
			return false
		}
	}
	return i == len(s)
}

// Match reports whether a publication with tags passes the filter. It
// does not allocate.
func (f *Filter) Match(tags map[string]string) bool { return f.root.match(tags) }

func (n *node) match(tags map[string]string) bool {
	switch n.op {
	case opAnd:
		for i := range n.kids {
			if !n.kids[i].match(tags) {
				return false
			}
		}
		return true
	case opOr:
		for i := range n.kids {
			if n.kids[i].match(tags) {
				return true
			}
		}
		return false
	case opNot:
		return !n.kids[0].match(tags)
	}
	v, ok := tags[n.key]
	switch n.op {
	case opEq:
		return ok && v == n.val
	case opNeq:
		return !ok || v != n.val
	case opIn:
		return ok && slices.Contains(n.vals, v)
	case opNin:
		return !ok || !slices.Contains(n.vals, v)
	case opEx:
		return ok
	case opNex:
		return !ok
	case opSw:
		return ok && strings.HasPrefix(v, n.val)
	case opEw:
		return ok && strings.HasSuffix(v, n.val)
	case opCt:
		return ok && strings.Contains(v, n.val)
	}
	if !ok {
		return false
	}
	x, isNum := number(v)
	if !isNum {
		return false
	}
	switch n.op {
	case opLt:
		return x < n.num
	case opLte:
		return x <= n.num
	case opGt:
		return x > n.num
	}
	return x >= n.num // opGte
}
