package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestClusterInNetworkNamespaces runs a cluster of relay processes on a real
// network (issue 16): each node in a network namespace of its own, joined
// to the others by veth pairs on a bridge in the root namespace, behind
// HAProxy (Debian's, in a namespace of its own, health-checking /readyz),
// with the npm centrifuge SDK connected through the balancer. kfake runs in
// the test process on the bridge address; the feed produces {"seq":n} every
// 20 ms throughout. In order:
//
//  1. The node holding the SDK's socket is killed with SIGKILL. The SDK
//     reconnects through HAProxy to another node and recovers what it
//     missed from that node's history; HAProxy marks the dead backend DOWN;
//     the survivors list the dead node "dead" (time measured and logged).
//  2. A fourth node starts: every member lists it alive and HAProxy marks it
//     UP.
//  3. The gossip port (TCP and UDP) of the node now holding the socket is
//     dropped by iptables in that node's namespace, both ways; Kafka and
//     HTTP stay up. The two others list it suspect, then dead (times
//     logged); it says it is alone; its SDK client keeps receiving without
//     reconnecting, and HAProxy keeps it UP. The rules are removed: all
//     three list each other alive again.
//
// At the end the SDK has received every publication from its first one to
// the last produced, in order, none twice, over exactly two sockets.
//
// It needs root, `ip netns`, haproxy, iptables and tests/js/node_modules
// (scripts/test installs them). Outside CI it skips without them; with CI
// set it fails. Runs of this test are serialised by a lock file; each
// removes what a crashed earlier run left under its name prefix.
func TestClusterInNetworkNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, creates network namespaces, runs HAProxy and Node")
	}
	began := time.Now()
	jsDir, _ := filepath.Abs("../../../tests/js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "centrifuge")); err != nil {
		labUnavailable(t, "tests/js/node_modules missing (scripts/test installs them): %v", err)
	}
	lab := newNetLab(t)
	bin := buildRelay(t)

	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "odds"),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			_, port, _ := net.SplitHostPort(addr)
			return net.Listen(network, net.JoinHostPort(labBridgeIP, port))
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	brokers := kafka.ListenAddrs()

	nodes := lab.nodes
	for _, n := range nodes[:3] {
		n.start(t, bin, brokers, nodes[:3])
	}
	for _, n := range nodes[:3] {
		waitHTTP(t, n.url("/readyz"), `"ready"`)
	}
	waitMembers(t, nodes[:3], nodes[:3], "alive", 30*time.Second)

	hap := startHAProxy(t, lab)
	hap.waitStatus(t, map[string]string{"n1": "UP", "n2": "UP", "n3": "UP", "n4": "DOWN"})

	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	feed := startFeed(t, prod)
	for _, n := range nodes[:3] {
		waitHTTP(t, n.url("/v1/channels/"+feedChannel), `"seq"`)
	}
	sdk := startFailoverSDK(t, jsDir, "ws://"+net.JoinHostPort(labLBIP, strconv.Itoa(labLBPort))+"/connection/websocket")
	sdk.waitSeq(t, feed.acked.Load()+10, 15*time.Second)

	// 1. SIGKILL the node behind the SDK's socket.
	holder := connectionHolder(t, nodes[:3])
	survivors := without(nodes[:3], holder)
	killed := time.Now()
	holder.proc.kill()
	t.Logf("1. killed %s (SIGKILL), which held the SDK's socket", holder.name)
	hapDown := hap.waitServer(t, holder.name, "DOWN", 10*time.Second).Sub(killed)
	dead := waitMembers(t, survivors, []*labNode{holder}, "dead", 30*time.Second-time.Since(killed)).Sub(killed)
	t.Logf("1. HAProxy marked %s DOWN after %v; both survivors listed it dead after %v", holder.name, hapDown.Round(time.Millisecond), dead.Round(time.Millisecond))
	sdk.waitSeq(t, feed.acked.Load(), 15*time.Second)
	if c := sdk.filter("connected"); len(c) == 2 {
		rows, _ := hap.stats()
		t.Logf("1. the SDK was connected again %v after the kill (HAProxy redispatched %s connections away from %s)",
			time.UnixMilli(c[1].T).Sub(killed).Round(time.Millisecond), rows[holder.name]["wredis"], holder.name)
	}
	holder2 := connectionHolder(t, survivors)
	if subs := sdk.subscribed(); len(subs) != 2 || !subs[1].Recovered {
		t.Fatalf("after the kill the SDK subscribed %d times (%+v); want a second subscription that recovered", len(subs), subs)
	}
	sdk.checkContiguous(t)
	t.Logf("1. the SDK reconnected through HAProxy to %s and recovered the gap: %d publications so far, contiguous", holder2.name, len(sdk.seqs()))

	// 2. A new node joins.
	n4 := nodes[3]
	joined := time.Now()
	n4.start(t, bin, brokers, survivors)
	cluster := append(append([]*labNode{}, survivors...), n4)
	join := waitMembers(t, cluster, cluster, "alive", 30*time.Second).Sub(joined)
	hapUp := hap.waitServer(t, n4.name, "UP", 30*time.Second).Sub(joined)
	t.Logf("2. %s started: listed alive by every member, and listing them, after %v; UP in HAProxy after %v",
		n4.name, join.Round(time.Millisecond), hapUp.Round(time.Millisecond))

	// 3. Cut the gossip of the node behind the socket from the two others;
	// Kafka and HTTP stay.
	others := without(cluster, holder2)
	connects := sdk.connects()
	cut := time.Now()
	lab.cutGossip(t, holder2)
	suspected := waitMembersNot(t, others, holder2, "alive", 30*time.Second).Sub(cut)
	failed := waitMembers(t, others, []*labNode{holder2}, "dead", 30*time.Second-time.Since(cut)).Sub(cut)
	// The cut node gets no confirmation of its suspicions, so memberlist
	// waits its longest suspicion timeout before it declares the others dead.
	alone := pollUntil(t, 60*time.Second, func() error {
		if v, err := holder2.view(); err != nil || !v.Alone {
			return fmt.Errorf("%s does not say it is alone: %+v %v", holder2.name, v, err)
		}
		return nil
	}).Sub(cut)
	t.Logf("3. gossip of %s dropped: %s and %s listed it not alive after %v, dead after %v; it said it was alone after %v",
		holder2.name, others[0].name, others[1].name, suspected.Round(time.Millisecond), failed.Round(time.Millisecond), alone.Round(time.Millisecond))
	sdk.waitSeq(t, feed.acked.Load(), 10*time.Second)
	if n := sdk.connects(); n != connects {
		t.Fatalf("the SDK reconnected during the gossip partition (%d connections, %d before)", n, connects)
	}
	if st, err := hap.status(); err != nil || st[holder2.name] != "UP" {
		t.Fatalf("during the gossip partition HAProxy lists %s as %q (%v); want UP", holder2.name, st[holder2.name], err)
	}
	restored := time.Now()
	lab.restoreGossip(t, holder2)
	rejoined := waitMembers(t, cluster, cluster, "alive", 40*time.Second).Sub(restored)
	t.Logf("3. gossip restored: all three list each other alive after %v; the SDK stayed on %s, %d publications so far",
		rejoined.Round(time.Millisecond), holder2.name, len(sdk.seqs()))

	feed.stop()
	if feed.err != nil {
		t.Fatalf("feed: %v", feed.err)
	}
	last := feed.acked.Load()
	sdk.waitSeq(t, last, 15*time.Second)
	sdk.end(t)
	seqs := sdk.seqs()
	sdk.checkContiguous(t)
	if seqs[len(seqs)-1] != last {
		t.Fatalf("the SDK's last publication is seq %d, the feed's last %d", seqs[len(seqs)-1], last)
	}
	if n := sdk.connects(); n != 2 {
		t.Fatalf("the SDK connected %d times; want 2 (once, then once after the kill)", n)
	}
	t.Logf("the SDK received seq %d..%d (%d publications) in order, none twice, over 2 sockets; test took %v",
		seqs[0], last, len(seqs), time.Since(began).Round(100*time.Millisecond))
}

// --- the network ------------------------------------------------------------------------

const (
	labPrefix   = "ernt-" // namespaces and links of this test; stale ones are removed
	labBridge   = labPrefix + "br"
	labBridgeIP = "10.77.0.1" // the root namespace on the bridge: kfake, and the test's HTTP polls
	labLBIP     = "10.77.0.10"
	labLBPort   = 8080
	labHTTPPort = 8000
	labGossip   = 7946
	labLock     = "/run/edgerelay-netns.lock" // beside /run/netns, where the names live
)

// netLab is the bridge, a namespace for HAProxy and one per node.
type netLab struct {
	lbNS  string
	nodes []*labNode
}

// labNode is a relay node's namespace and, once started, its process.
type labNode struct {
	name, ns, ip string
	proc         *relayProcess
}

// labUnavailable skips the test outside CI and fails it in CI, where it
// must run.
func labUnavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: this test must run here)", msg)
	}
	t.Skip(msg)
}

// ipCmd runs a command and returns its output, or an error holding it.
func ipCmd(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// newNetLab takes the lock, removes what a crashed run left, and builds
// the bridge 10.77.0.1/24 with HAProxy's namespace (10.77.0.10) and four
// node namespaces (10.77.0.2-5). Everything is removed when the test ends,
// whether it passed, failed or panicked.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		labUnavailable(t, "network namespaces need root (uid %d)", os.Geteuid())
	}
	for _, tool := range []string{"ip", "haproxy", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			labUnavailable(t, "%s not installed (scripts/test installs it: Debian iproute2, haproxy, iptables)", tool)
		}
	}
	lockLab(t)
	if err := removeLab(); err != nil {
		t.Fatalf("removing a previous run's namespaces: %v", err)
	}
	lab := &netLab{lbNS: labPrefix + "lb"}
	if _, err := ipCmd("ip", "netns", "add", lab.lbNS); err != nil {
		labUnavailable(t, "ip netns not permitted here: %v", err)
	}
	t.Cleanup(func() {
		if err := removeLab(); err != nil {
			t.Errorf("removing the namespaces: %v", err)
		}
	})
	for _, args := range [][]string{
		{"ip", "link", "add", labBridge, "type", "bridge"},
		{"ip", "addr", "add", labBridgeIP + "/24", "dev", labBridge},
		{"ip", "link", "set", labBridge, "up"},
	} {
		if _, err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	lab.attach(t, lab.lbNS, labLBIP, "v0")
	for i := 1; i <= 4; i++ {
		n := &labNode{name: fmt.Sprintf("n%d", i), ns: fmt.Sprintf("%sn%d", labPrefix, i), ip: fmt.Sprintf("10.77.0.%d", i+1)}
		if _, err := ipCmd("ip", "netns", "add", n.ns); err != nil {
			t.Fatal(err)
		}
		lab.attach(t, n.ns, n.ip, fmt.Sprintf("v%d", i))
		lab.nodes = append(lab.nodes, n)
	}
	return lab
}

// attach links namespace ns to the bridge by a veth pair (ernt-<veth> on the
// bridge, eth0 inside) and gives it ip/24.
func (l *netLab) attach(t *testing.T, ns, ip, veth string) {
	t.Helper()
	root := labPrefix + veth
	for _, args := range [][]string{
		{"ip", "link", "add", root, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "link", "set", root, "master", labBridge, "up"},
		{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
	} {
		if _, err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
}

// lockLab serialises runs of this test on the machine (they share the
// names and the subnet) until the test ends.
func lockLab(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(labLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		labUnavailable(t, "lock file: %v", err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("another run of this test held %s for 3 minutes", labLock)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// removeLab kills the processes in the namespaces named with labPrefix,
// deletes the namespaces and the links with the prefix: this run's, or a
// crashed run's (the lock is held).
func removeLab() error {
	var errs []error
	list, err := ipCmd("ip", "netns", "list")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(list, "\n") {
		ns, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(ns, labPrefix) {
			continue
		}
		pids, _ := ipCmd("ip", "netns", "pids", ns)
		for _, p := range strings.Fields(pids) {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if _, err := ipCmd("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	links, err := ipCmd("ip", "-o", "link", "show")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, line := range strings.Split(links, "\n") {
		// "7: ernt-v1@if2: <BROADCAST,...": the name, up to an @peer.
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, labPrefix) {
			if _, err := ipCmd("ip", "link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// cutGossip drops the node's gossip traffic (TCP and UDP, both ways) in its
// namespace; its Kafka and HTTP traffic still flow.
func (l *netLab) cutGossip(t *testing.T, n *labNode) {
	t.Helper()
	port := strconv.Itoa(labGossip)
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		for _, proto := range []string{"tcp", "udp"} {
			if _, err := ipCmd("ip", "netns", "exec", n.ns, "iptables", "-A", chain, "-p", proto, "--dport", port, "-j", "DROP"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// restoreGossip removes cutGossip's rules.
func (l *netLab) restoreGossip(t *testing.T, n *labNode) {
	t.Helper()
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		if _, err := ipCmd("ip", "netns", "exec", n.ns, "iptables", "-F", chain); err != nil {
			t.Fatal(err)
		}
	}
}

// --- the nodes --------------------------------------------------------------------------

func (n *labNode) url(path string) string {
	return "http://" + net.JoinHostPort(n.ip, strconv.Itoa(labHTTPPort)) + path
}

// start runs the relay binary in the node's namespace, with peers' gossip
// addresses as seeds (its own is skipped by the relay).
func (n *labNode) start(t *testing.T, bin string, brokers []string, peers []*labNode) {
	t.Helper()
	// A wrapper that execs into the relay: the process startRelayProcess
	// runs, signals and reaps is the relay itself.
	wrapper := filepath.Join(t.TempDir(), "edgerelay-"+n.name)
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", n.ns, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var seeds []string
	for _, p := range peers {
		seeds = append(seeds, strconv.Quote(net.JoinHostPort(p.ip, strconv.Itoa(labGossip))))
	}
	addr := net.JoinHostPort(n.ip, strconv.Itoa(labHTTPPort))
	n.proc = startRelayProcess(t, wrapper, addr, fmt.Sprintf(`listen: %q
node: %s
kafka: {brokers: [%q]}
ingest: {topics: [{name: odds}]}
channels: {history_size: 1000}
http: {rate_per_address: 0}
# Every publication must reach the SDK; conflation under load has its own tests.
overload: {conflate_after: 1h}
cluster:
  bind: %q
  seeds: [%s]
  retry_interval: 1s
  update_interval: 1s
`, addr, n.name, brokers[0], net.JoinHostPort(n.ip, strconv.Itoa(labGossip)), strings.Join(seeds, ", ")), false)
}

// clusterView is GET /v1/cluster.
type clusterView struct {
	Self    string `json:"self"`
	Alone   bool   `json:"alone"`
	Members []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"members"`
}

var labHTTP = &http.Client{Timeout: 2 * time.Second}

func (n *labNode) get(path string) (string, error) {
	resp, err := labHTTP.Get(n.url(path))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}

func (n *labNode) view() (clusterView, error) {
	var v clusterView
	body, err := n.get("/v1/cluster")
	if err == nil {
		err = json.Unmarshal([]byte(body), &v)
	}
	return v, err
}

// state is member's state in n's view ("" if not listed).
func (n *labNode) state(member string) (string, error) {
	v, err := n.view()
	for _, m := range v.Members {
		if m.Name == member {
			return m.State, err
		}
	}
	return "", err
}

// waitMembers waits until every observer lists every member in state, and
// returns when it saw that.
func waitMembers(t *testing.T, observers, members []*labNode, state string, timeout time.Duration) time.Time {
	t.Helper()
	return pollUntil(t, timeout, func() error {
		for _, o := range observers {
			for _, m := range members {
				if s, err := o.state(m.name); err != nil || s != state {
					return fmt.Errorf("%s lists %s as %q, want %q (%v)", o.name, m.name, s, state, err)
				}
			}
		}
		return nil
	})
}

// waitMembersNot waits until every observer lists member in another state
// than state.
func waitMembersNot(t *testing.T, observers []*labNode, member *labNode, state string, timeout time.Duration) time.Time {
	t.Helper()
	return pollUntil(t, timeout, func() error {
		for _, o := range observers {
			if s, err := o.state(member.name); err != nil || s == state {
				return fmt.Errorf("%s lists %s as %q (%v)", o.name, member.name, s, err)
			}
		}
		return nil
	})
}

// pollUntil polls cond every 50 ms until it returns nil, and returns the
// time it did; it fails the test after timeout.
func pollUntil(t *testing.T, timeout time.Duration, cond func() error) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connectionHolder returns the one node of nodes with a WebSocket
// connection (edgerelay_connections 1, the others 0).
func connectionHolder(t *testing.T, nodes []*labNode) *labNode {
	t.Helper()
	var holder *labNode
	pollUntil(t, 15*time.Second, func() error {
		holder = nil
		var counts []string
		for _, n := range nodes {
			body, err := n.get("/metrics")
			if err != nil {
				return err
			}
			c := -1
			for _, line := range strings.Split(body, "\n") {
				if v, ok := strings.CutPrefix(line, "edgerelay_connections "); ok {
					c, _ = strconv.Atoi(v)
				}
			}
			counts = append(counts, fmt.Sprintf("%s:%d", n.name, c))
			if c == 1 {
				if holder != nil {
					return fmt.Errorf("two holders: %v", counts)
				}
				holder = n
			} else if c != 0 {
				return fmt.Errorf("connections %v", counts)
			}
		}
		if holder == nil {
			return fmt.Errorf("no node holds the SDK's socket: %v", counts)
		}
		return nil
	})
	return holder
}

func without(nodes []*labNode, drop *labNode) []*labNode {
	var out []*labNode
	for _, n := range nodes {
		if n != drop {
			out = append(out, n)
		}
	}
	return out
}
