package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// failBound is how long a node shut down without leaving may take to be
// listed dead: with fastGossip about a second (a probe round over the
// peers, then a suspicion timeout of 2–4 probe intervals); the bound
// leaves room for a loaded CI machine under -race.
const failBound = 10 * time.Second

// fastGossip shortens memberlist's LAN timings for loopback tests.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = 500 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 2
	c.TCPTimeout = 500 * time.Millisecond
	c.GossipToTheDeadTime = 2 * time.Second
	c.IndirectChecks = 1
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// recorder is a Hooks that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	events []Event
	counts Counts
}

func (r *recorder) OnEvent(e Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }
func (r *recorder) OnCounts(c Counts) {
	r.mu.Lock()
	r.counts = c
	r.mu.Unlock()
}

func (r *recorder) last() Counts { r.mu.Lock(); defer r.mu.Unlock(); return r.counts }

func (r *recorder) saw(kind EventKind, member string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.Member.Name == member {
			return true
		}
	}
	return false
}

// testNode is a started Node with a status the test can change.
type testNode struct {
	*Node
	hooks *recorder
	conns atomic.Int64
	state atomic.Value // NodeState
}

func (tn *testNode) setStatus(state NodeState, conns int) {
	tn.state.Store(state)
	tn.conns.Store(int64(conns))
}

// startNode starts a node named name on ip (port: 0 picks one) with the
// given seeds; edit adjusts its Config.
func startNode(t *testing.T, name, bind string, seeds []string, edit func(*Config)) *testNode {
	t.Helper()
	tn := newNode(t, name, bind, seeds, edit)
	if err := tn.Start(); err != nil {
		t.Fatal(err)
	}
	return tn
}

func newNode(t *testing.T, name, bind string, seeds []string, edit func(*Config)) *testNode {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.Bind, cfg.Seeds = name, bind, seeds
	cfg.PublicURL = "ws://" + name + ".example:8000/connection/websocket"
	cfg.RetryInterval, cfg.UpdateInterval = 200*time.Millisecond, 200*time.Millisecond
	cfg.Memberlist = fastGossip
	if edit != nil {
		edit(&cfg)
	}
	tn := &testNode{hooks: &recorder{}}
	tn.setStatus(StateReady, 0)
	status := func() Status {
		return Status{State: tn.state.Load().(NodeState), Version: "test", Connections: int(tn.conns.Load()), Load: 0.25}
	}
	n, err := New(cfg, status, tn.hooks, testLogger().With("node", name))
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	t.Cleanup(n.Shutdown)
	return tn
}

// view is a node's members as "name=state" by name.
func view(n *Node) map[string]Member {
	out := map[string]Member{}
	for _, m := range n.Members() {
		out[m.Name] = m
	}
	return out
}

// wantStates waits until every node lists exactly the given states.
func wantStates(t *testing.T, timeout time.Duration, nodes []*testNode, want map[string]MemberState) {
	t.Helper()
	checkFor(t, timeout, func() error {
		for _, n := range nodes {
			got := view(n.Node)
			if len(got) != len(want) {
				return fmt.Errorf("%s lists %d members, want %d: %v", n.Name(), len(got), len(want), got)
			}
			for name, st := range want {
				if got[name].State != st {
					return fmt.Errorf("%s lists %s as %q, want %q", n.Name(), name, got[name].State, st)
				}
			}
		}
		return nil
	})
}

// threeNodes starts n1 on 127.0.0.1 and n2, n3 on 127.0.0.2, .3 seeded
// with n1.
func threeNodes(t *testing.T, edit func(*Config)) []*testNode {
	n1 := startNode(t, "n1", "127.0.0.1:0", nil, edit)
	n2 := startNode(t, "n2", "127.0.0.2:0", []string{n1.Addr()}, edit)
	n3 := startNode(t, "n3", "127.0.0.3:0", []string{n1.Addr()}, edit)
	nodes := []*testNode{n1, n2, n3}
	wantStates(t, 10*time.Second, nodes, map[string]MemberState{"n1": Alive, "n2": Alive, "n3": Alive})
	return nodes
}

func TestJoinAndMetadata(t *testing.T) {
	nodes := threeNodes(t, nil)
	for _, n := range nodes {
		if n.Alone() || n.hooks.last().Alone {
			t.Errorf("%s says it is alone", n.Name())
		}
		if c := n.hooks.last(); c.Alive != 3 {
			t.Errorf("%s counts %+v, want 3 alive", n.Name(), c)
		}
	}
	// Metadata of every node is visible on every node, and a change
	// (connections, draining) reaches all of them.
	nodes[1].setStatus(StateDraining, 42)
	checkFor(t, 10*time.Second, func() error {
		for _, n := range nodes {
			for _, m := range n.Members() {
				if m.Meta.Format != 1 || m.Meta.Version != "test" || m.Meta.PublicURL != "ws://"+m.Name+".example:8000/connection/websocket" || m.Meta.Load != 0.25 {
					return fmt.Errorf("%s sees %s with metadata %+v", n.Name(), m.Name, m.Meta)
				}
				if m.Name == "n2" && (!m.Draining() || m.Meta.Connections != 42) {
					return fmt.Errorf("%s sees n2 as %+v, want draining with 42 connections", n.Name(), m.Meta)
				}
				if m.Name != "n2" && (m.Draining() || m.Meta.State != StateReady) {
					return fmt.Errorf("%s sees %s as %+v, want ready", n.Name(), m.Name, m.Meta)
				}
				if m.Address == "" || !strings.HasPrefix(m.Address, "127.0.0.") {
					return fmt.Errorf("%s sees %s at %q", n.Name(), m.Name, m.Address)
				}
			}
		}
		return nil
	})
	if !nodes[0].hooks.saw(EventJoin, "n2") || !nodes[0].hooks.saw(EventUpdate, "n2") {
		t.Error("n1's hooks did not see n2 join and update")
	}
}

func TestShutdownWithoutLeaveIsDead(t *testing.T) {
	nodes := threeNodes(t, nil)
	start := time.Now()
	nodes[2].Shutdown()
	wantStates(t, failBound, nodes[:2], map[string]MemberState{"n1": Alive, "n2": Alive, "n3": Dead})
	t.Logf("n3 listed dead after %v", time.Since(start).Round(time.Millisecond))
	for _, n := range nodes[:2] {
		if !n.hooks.saw(EventFailed, "n3") {
			t.Errorf("%s's hooks saw no failed event for n3", n.Name())
		}
		if c := n.hooks.last(); c.Alive != 2 || c.Dead != 1 {
			t.Errorf("%s counts %+v, want 2 alive, 1 dead", n.Name(), c)
		}
	}
}

func TestLeaveIsLeft(t *testing.T) {
	nodes := threeNodes(t, nil)
	if err := nodes[2].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	wantStates(t, 10*time.Second, nodes[:2], map[string]MemberState{"n1": Alive, "n2": Alive, "n3": Left})
	for _, n := range nodes[:2] {
		if !n.hooks.saw(EventLeave, "n3") {
			t.Errorf("%s's hooks saw no leave event for n3", n.Name())
		}
		if m := view(n.Node)["n3"]; !m.Draining() {
			t.Errorf("%s: left n3 is not draining: %+v", n.Name(), m)
		}
	}
}

func TestNewNodeJoins(t *testing.T) {
	nodes := threeNodes(t, nil)
	n4 := startNode(t, "n4", "127.0.0.4:0", []string{nodes[1].Addr()}, nil)
	wantStates(t, 10*time.Second, append(nodes, n4), map[string]MemberState{"n1": Alive, "n2": Alive, "n3": Alive, "n4": Alive})
	for _, n := range nodes {
		if !n.hooks.saw(EventJoin, "n4") {
			t.Errorf("%s's hooks saw no join of n4", n.Name())
		}
	}
}

// freeGossipPort returns a port free for TCP and UDP on ip.
func freeGossipPort(t *testing.T, ip string) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", ip, port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func TestAloneUntilSeedComesUp(t *testing.T) {
	seed := fmt.Sprintf("127.0.0.5:%d", freeGossipPort(t, "127.0.0.5"))
	a := startNode(t, "a", "127.0.0.6:0", []string{seed}, nil)
	// Nothing listens at the seed: a serves alone, says so, and retries.
	checkFor(t, 10*time.Second, func() error {
		if a.joins.Load() < 3 {
			return fmt.Errorf("%d join attempts", a.joins.Load())
		}
		return nil
	})
	if !a.Alone() || !a.hooks.last().Alone {
		t.Fatalf("a is not alone: %+v", a.hooks.last())
	}
	if ms := a.Members(); len(ms) != 1 || ms[0].Name != "a" || ms[0].State != Alive {
		t.Fatalf("a lists %+v, want itself only", ms)
	}
	b := startNode(t, "b", seed, nil, nil)
	wantStates(t, 10*time.Second, []*testNode{a, b}, map[string]MemberState{"a": Alive, "b": Alive})
	if a.Alone() || a.hooks.last().Alone {
		t.Error("a still says it is alone")
	}
}

func TestSecretKey(t *testing.T) {
	key := func(b byte) string { return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(b), 32))) }
	withKey := func(k string) func(*Config) { return func(c *Config) { c.SecretKey = k } }
	nodes := threeNodes(t, withKey(key('a')))
	for _, tc := range []struct{ name, key string }{{"wrong-key", key('b')}, {"no-key", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			x := startNode(t, tc.name, "127.0.0.7:0", []string{nodes[0].Addr(), nodes[1].Addr()}, withKey(tc.key))
			checkFor(t, 10*time.Second, func() error {
				if x.joins.Load() < 3 {
					return fmt.Errorf("%d join attempts", x.joins.Load())
				}
				return nil
			})
			if !x.Alone() || len(x.Members()) != 1 {
				t.Errorf("%s joined: %v", tc.name, view(x.Node))
			}
			for _, n := range nodes {
				if _, ok := view(n.Node)[tc.name]; ok {
					t.Errorf("%s lists %s", n.Name(), tc.name)
				}
			}
		})
	}
}

func TestSeedsResolveToEveryAddress(t *testing.T) {
	n := newNode(t, "n", "127.0.0.1:7946", []string{"relays.headless.test:7946", "127.0.0.9:7000"}, nil)
	n.addr = "127.0.0.1:7946"
	n.lookup = func(_ context.Context, host string) ([]string, error) {
		if host != "relays.headless.test" {
			return nil, fmt.Errorf("unknown host %s", host)
		}
		return []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, nil
	}
	got := n.targets(context.Background(), []string{"127.0.0.4:7946", "127.0.0.2:7946"})
	want := "127.0.0.2:7946 127.0.0.3:7946 127.0.0.4:7946 127.0.0.9:7000" // itself left out, each once
	if strings.Join(got, " ") != want {
		t.Errorf("targets %v, want %s", got, want)
	}
}

func TestGossipOff(t *testing.T) {
	n := newNode(t, "solo", "", nil, nil)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if !n.Alone() || n.Addr() != "" {
		t.Errorf("alone %v addr %q", n.Alone(), n.Addr())
	}
	if ms := n.Members(); len(ms) != 1 || ms[0].Name != "solo" || ms[0].Meta.State != StateReady {
		t.Errorf("members %+v", ms)
	}
	if err := n.Leave(time.Second); err != nil {
		t.Error(err)
	}
}

func TestStaleMetadataIsSuspect(t *testing.T) {
	n1 := startNode(t, "n1", "127.0.0.1:0", nil, nil)
	// n2 gossips its metadata only when its state changes: to n1, which
	// expects an update every 200ms, it goes suspect while memberlist
	// still counts it alive, and alive again when it speaks.
	n2 := startNode(t, "n2", "127.0.0.2:0", []string{n1.Addr()}, func(c *Config) { c.UpdateInterval = time.Hour })
	wantStates(t, 10*time.Second, []*testNode{n1}, map[string]MemberState{"n1": Alive, "n2": Suspect})
	if !n1.hooks.saw(EventSuspect, "n2") || n1.hooks.last().Suspect != 1 || n1.Alone() {
		t.Errorf("n1: suspect event %v, counts %+v", n1.hooks.saw(EventSuspect, "n2"), n1.hooks.last())
	}
	n2.setStatus(StateOverloaded, 1)
	checkFor(t, 10*time.Second, func() error {
		if m := view(n1.Node)["n2"]; m.State != Alive || m.Meta.State != StateOverloaded {
			return fmt.Errorf("n1 sees n2 as %+v", m)
		}
		return nil
	})
}
