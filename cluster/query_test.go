package cluster

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestQuery: a query reaches every other alive member and their answers
// come back; a member that does not answer in time (slow, or with no
// handler) leaves the query with the answers that came, at the deadline.
func TestQuery(t *testing.T) {
	release := make(chan struct{})
	handlers := map[string]QueryFunc{
		"n1": func(req []byte) []byte { return append([]byte("n1:"), req...) },
		"n2": func(req []byte) []byte {
			if string(req) == "again" {
				return nil // no answer
			}
			return append([]byte("n2:"), req...)
		},
		"n3": func(req []byte) []byte {
			if string(req) == "slow" {
				<-release
			}
			return append([]byte("n3:"), req...)
		},
	}
	defer close(release)
	var nodes []*testNode
	for i, name := range []string{"n1", "n2", "n3"} {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].Addr()}
		}
		n := newNode(t, name, "127.0.0."+string(rune('1'+i))+":0", seeds, nil)
		n.SetQueryHandler(handlers[name])
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	wantStates(t, 10*time.Second, nodes, map[string]MemberState{"n1": Alive, "n2": Alive, "n3": Alive})

	query := func(n *testNode, req string, timeout time.Duration) ([]string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		answers, asked, err := n.Query(ctx, []byte(req))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range answers {
			got = append(got, string(a))
		}
		slices.Sort(got)
		return got, asked
	}
	start := time.Now()
	if got, asked := query(nodes[0], "hello", 10*time.Second); asked != 2 || !slices.Equal(got, []string{"n2:hello", "n3:hello"}) {
		t.Errorf("n1 asked %d, got %q", asked, got)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("a query every member answered took %v: it waited for the deadline", waited)
	}
	if got, asked := query(nodes[1], "slow", 300*time.Millisecond); asked != 2 || !slices.Equal(got, []string{"n1:slow"}) {
		t.Errorf("with n3 slow, n2 asked %d, got %q", asked, got)
	}
	if _, _, err := nodes[0].Query(context.Background(), []byte(strings.Repeat("x", MaxQueryBytes+1))); err == nil {
		t.Error("a query over MaxQueryBytes was sent")
	}

	// A member whose handler gives no answer does not answer.
	if got, asked := query(nodes[0], "again", 300*time.Millisecond); asked != 2 || !slices.Equal(got, []string{"n3:again"}) {
		t.Errorf("with n2 not answering, n1 asked %d, got %q", asked, got)
	}
}

// TestQueryAlone: with gossip off, or no other member, nobody is asked.
func TestQueryAlone(t *testing.T) {
	off := newNode(t, "off", "", nil, nil)
	alone := startNode(t, "alone", "127.0.0.1:0", nil, nil)
	for _, n := range []*testNode{off, alone} {
		answers, asked, err := n.Query(context.Background(), []byte("x"))
		if err != nil || asked != 0 || len(answers) != 0 {
			t.Errorf("%s: answers %q, asked %d, err %v", n.Name(), answers, asked, err)
		}
	}
}
