package dev

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestBoardInChromium opens the demo board in a real browser (Debian's
// Chromium via playwright-core) against a fresh dev mode and checks that it
// shows odds and live updates, with no script errors.
func TestBoardInChromium(t *testing.T) {
	dir, _ := filepath.Abs("../../tests/js")
	_, errChromium := os.Stat("/usr/bin/chromium")
	_, errMods := os.Stat(filepath.Join(dir, "node_modules", "playwright-core"))
	if errChromium != nil || errMods != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium or playwright-core missing (scripts/test installs them): %v %v", errChromium, errMods)
		}
		t.Skip("chromium or tests/js/node_modules missing; run scripts/test")
	}
	opts := Options{Sim: DefaultSimConfig()}
	start := time.Now()
	addr := startDev(t, opts)

	cmd := exec.Command("node", "board.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BOARD_URL=http://"+addr+"/")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("board.mjs: %v\n%s", err, out)
	}
	var res struct {
		State           string   `json:"state"`
		Matches         int      `json:"matches"`
		Odds            int      `json:"odds"`
		Channels        int      `json:"channels"`
		Updates         int      `json:"updates"`
		MsToOdds        int      `json:"ms_to_odds"`
		MsToFirstUpdate int      `json:"ms_to_first_update"`
		Errors          []string `json:"errors"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("board.mjs printed %s: %v", out, err)
	}
	t.Logf("board: %+v; dev start to first live update on the page: %v", res, time.Since(start).Round(time.Millisecond))
	if res.State != "open" || res.Matches != opts.Sim.Matches || res.Odds < 2*opts.Sim.Matches || res.Updates < 20 || len(res.Errors) > 0 {
		t.Fatalf("board not live: %+v", res)
	}
}
