package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMapsScenario runs "edgebench maps" as bench/scripts/maps.sh does,
// tiny: a standalone "edgebench broker" and "edgerelay serve" with a map
// rule for bench:map: and debug on. Each map subscribe must page the
// whole state in key order (30 keys: 1 state page and the stream phase
// with the relay's default page, 5 and the stream phase with a page of 7,
// JSON and Protobuf), the memory rows must be measured, and every update
// of the fan-out part must reach every subscriber, of the map and of the
// channels (4 each, 10 updates in a window).
func TestMapsScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs them")
	}
	dir := binaries(t)
	httpAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	kport := kafkaAddr[strings.LastIndexByte(kafkaAddr, ':')+1:]
	start(t, nil, filepath.Join(dir, "edgebench"), "broker", "--port", kport, "--topics", "odds,scores,bets")
	conf := filepath.Join(t.TempDir(), "maps.yaml")
	os.WriteFile(conf, []byte("debug: true\nchannels:\n  maps:\n    rules: [{prefix: \"bench:map:\", depth: 1}]\n"), 0o644)
	// Every update must arrive: conflation off, as in TestSmokeScenario.
	start(t, []string{"EDGERELAY_OVERLOAD_CONFLATE_AFTER=1h"}, filepath.Join(dir, "edgerelay"), "serve", "--config", conf,
		"--listen", httpAddr, "--brokers", kafkaAddr, "--log-level", "warn")
	waitReady(t, httpAddr)

	run := exec.Command(filepath.Join(dir, "edgebench"), "maps", "--url", "ws://"+httpAddr+"/connection/websocket", "--brokers", kafkaAddr,
		"--sizes", "30", "--pages", "0,7", "--runs", "1", "--subscribers", "4", "--keys", "3", "--rate", "20", "--window", "500ms", "--rounds", "1")
	run.Stderr = os.Stderr
	out, err := run.Output()
	t.Logf("%s", out)
	if err != nil || !strings.Contains(string(out), "verdict: PASS maps") {
		t.Fatalf("edgebench maps: %v", err)
	}
	for _, want := range []string{
		"| 30 | default | json | 2 |", "| 30 | default | protobuf | 2 |", "| 30 | 7 | json | 6 |", "| 30 | 7 | protobuf | 6 |",
		"| map of 30 keys | 30 | ", "| 30 channels in no map | 30 | ",
		"| map | json | 4 | 1 | 40/40 |", "| channels | json | 4 | 3 | 40/40 |",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no row %q", want)
		}
	}
	if strings.Contains(string(out), "| — |") {
		t.Errorf("a memory figure was not measured")
	}
}
