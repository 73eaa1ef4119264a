package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSmokeScenario does what the README says: it builds edgerelay and
// edgebench, starts "edgerelay dev", and runs bench/scenarios/smoke.yaml
// against it; the run must print a passing verdict line and exit 0.
func TestSmokeScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs a scenario")
	}
	dir := t.TempDir()
	for _, pkg := range []string{"edgerelay", "edgebench"} {
		src := "../../../relay/cmd/edgerelay"
		if pkg == "edgebench" {
			src = "."
		}
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, pkg), src).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", src, err, out)
		}
	}
	httpAddr, kafkaPort := freeAddr(t), freeAddr(t)
	_, kport, _ := net.SplitHostPort(kafkaPort)
	relay := exec.Command(filepath.Join(dir, "edgerelay"), "dev", "--listen", httpAddr, "--kafka-port", kport, "--log-level", "warn")
	relay.Stderr = os.Stderr
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { relay.Process.Kill(); relay.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edgerelay dev not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	run := exec.Command(filepath.Join(dir, "edgebench"), "run", "--url", "ws://"+httpAddr+"/connection/websocket",
		"--brokers", "127.0.0.1:"+kport, "../../scenarios/smoke.yaml")
	run.Stderr = os.Stderr
	out, err := run.Output()
	t.Logf("%s", out)
	if err != nil || !strings.Contains(string(out), "verdict: PASS smoke") {
		t.Fatalf("edgebench run smoke.yaml: %v", err)
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
