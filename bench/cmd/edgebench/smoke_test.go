package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSmokeScenario does what the README says: it builds edgerelay and
// edgebench, starts "edgerelay dev", and runs bench/scenarios/smoke.yaml
// against it (JSON and Protobuf clients); the run must print a passing
// verdict line and exit 0.
func TestSmokeScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs a scenario")
	}
	dir := binaries(t)
	httpAddr, kafkaPort := freeAddr(t), freeAddr(t)
	_, kport, _ := net.SplitHostPort(kafkaPort)
	// The smoke steps need every update (no allow_skips): with conflation
	// off a relay starved of CPU by the other packages' tests (go test
	// ./... runs them at once, here on 2 cores) delivers late instead of
	// skipping, as the in-process tests in bench run it.
	start(t, []string{"EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h"}, filepath.Join(dir, "edgerelay"), "dev", "--listen", httpAddr, "--kafka-port", kport, "--log-level", "warn")
	waitReady(t, httpAddr)
	run := exec.Command(filepath.Join(dir, "edgebench"), "run", "--url", "ws://"+httpAddr+"/connection/websocket",
		"--brokers", "127.0.0.1:"+kport, "../../scenarios/smoke.yaml")
	run.Stderr = os.Stderr
	out, err := run.Output()
	t.Logf("%s", out)
	if err != nil || !strings.Contains(string(out), "verdict: PASS smoke") {
		t.Fatalf("edgebench run smoke.yaml: %v", err)
	}

	// The same pieces apart: a swarm holding clients on the channels of
	// "edgebench feed --matches 5", and that feed from another process;
	// half the clients on delta, half on Protobuf.
	swarm := exec.Command(filepath.Join(dir, "edgebench"), "swarm", "--url", "ws://"+httpAddr+"/connection/websocket",
		"--conns", "20", "--procs", "1", "--matches", "5", "--channels-per-client", "2", "--duration", "4s",
		"--delta-share", "0.5", "--protobuf-share", "0.5")
	errPipe, err := swarm.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	swarmOut, err := swarm.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := swarm.Start(); err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	stderrDone := make(chan string)
	go func() { // the swarm's log: when it is subscribed, and all of it at the end
		var log strings.Builder
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "all clients subscribed") {
				close(subscribed)
			}
		}
		stderrDone <- log.String()
	}()
	select {
	case <-subscribed:
	case <-time.After(20 * time.Second):
		t.Fatal("swarm did not subscribe within 20 s")
	}
	feed := exec.Command(filepath.Join(dir, "edgebench"), "feed", "--brokers", "127.0.0.1:"+kport, "--matches", "5", "--rate", "100", "--duration", "2s")
	if out, err := feed.CombinedOutput(); err != nil || !strings.Contains(string(out), "sent 200 records") {
		t.Fatalf("edgebench feed: %v\n%s", err, out)
	}
	table, _ := io.ReadAll(swarmOut)
	log := <-stderrDone
	if err := swarm.Wait(); err != nil || !strings.Contains(log, "verdict: PASS") || !strings.Contains(string(table), "| 20 | 0% |") {
		t.Fatalf("edgebench swarm: %v\n%s\n%s", err, table, log)
	}
	t.Logf("swarm:\n%s", table)
}

// built holds edgerelay and edgebench, built once for the package's
// tests (TestMain removes them).
var built struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binaries builds edgerelay and edgebench (once) and returns their
// directory.
func binaries(t *testing.T) string {
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "edgebench-test"); built.err != nil {
			return
		}
		for _, pkg := range []string{"edgerelay", "edgebench"} {
			src := "../../../relay/cmd/edgerelay"
			if pkg == "edgebench" {
				src = "."
			}
			if out, err := exec.Command("go", "build", "-o", filepath.Join(built.dir, pkg), src).CombinedOutput(); err != nil {
				built.err = fmt.Errorf("go build %s: %v\n%s", src, err, out)
				return
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// start starts a process with env added to the test's, its stderr the
// test's; the test's end kills it.
func start(t *testing.T, env []string, name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// waitReady waits until the relay at addr answers /readyz 200.
func waitReady(t *testing.T, addr string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay at %s not ready: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestSmokeCeiling runs what bench/scripts/ceiling.sh runs, small:
// "edgebench broker", "edgebench ceiling" on it, and an unmodified
// "edgebench fanout" against the ceiling (12 clients over 2 workers and
// 3 channels, strict: every update must arrive). The fanout run must pass
// its verdict, every client must get every record of its channel, and
// the CPU it reports must be the ceiling process's (its /proc), as it is
// the relay's in the comparison.
func TestSmokeCeiling(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edgebench and runs a fanout")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "edgebench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	kafka, listen := freeAddr(t), freeAddr(t)
	_, kport, _ := net.SplitHostPort(kafka)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	waitListening := func(addr string) {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("nothing listens on %s", addr)
			}
		}
	}
	start("broker", "--port", kport)
	waitListening(kafka)
	ceiling := start("ceiling", "--listen", listen, "--brokers", kafka)
	waitListening(listen)
	out := filepath.Join(dir, "ceiling.json")
	fanout := exec.Command(bin, "fanout", "--url", "ws://"+listen+"/connection/websocket", "--brokers", kafka,
		"--conns", "12", "--procs", "2", "--channels", "3", "--rate", "30", "--size", "490", "--duration", "2s",
		"--allow-skips=false", "--out", out)
	var log strings.Builder
	fanout.Stderr = &log
	table, err := fanout.Output()
	if err != nil || !strings.Contains(log.String(), "verdict: PASS") {
		t.Fatalf("edgebench fanout against the ceiling: %v\n%s\n%s", err, table, log.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Resources string `json:"relay_resources"`
		Expected  uint64 `json:"expected_deliveries"`
		Clients   struct {
			Connected int    `json:"connected"`
			Received  uint64 `json:"received"`
			Gaps      uint64 `json:"gaps"`
		} `json:"clients"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	// About 60 records round-robin over 3 channels, 4 clients each.
	if rep.Clients.Connected != 12 || rep.Expected < 236 || rep.Clients.Received != rep.Expected || rep.Clients.Gaps != 0 ||
		rep.Resources != "/proc/"+strconv.Itoa(ceiling.Process.Pid) {
		t.Fatalf("report %+v, want 12 clients, every one of ~240 deliveries, CPU from /proc/%d\n%s", rep, ceiling.Process.Pid, table)
	}
	t.Logf("fanout against the ceiling:\n%s", table)
}
