package dev

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBoardInChromium opens the demo board in a real browser (Debian's
// Chromium via playwright-core) against a fresh dev mode and checks that it
// shows odds and live updates, with no script errors; that a click on a
// price places a bet the slip shows with its Kafka position and later the
// bookmaker's settlement; and that Chromium negotiated permessage-deflate
// (the only client, so compressed bytes on the wire are its).
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
	opts := Options{Sim: DefaultSimConfig(), SettleAfter: 300 * time.Millisecond}
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
		User            string   `json:"user"`
		BetAck          string   `json:"bet_ack"`
		BetResult       string   `json:"bet_result"`
		Errors          []string `json:"errors"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("board.mjs printed %s: %v", out, err)
	}
	t.Logf("board: %+v; dev start to first live update on the page: %v", res, time.Since(start).Round(time.Millisecond))
	if res.State != "open" || res.Matches != opts.Sim.Matches || res.Odds < 2*opts.Sim.Matches || res.Updates < 20 || len(res.Errors) > 0 {
		t.Fatalf("board not live: %+v", res)
	}
	// A market can be suspended by a goal between render and click (1002);
	// anything else must be a Kafka position, then the book's answer.
	if !regexp.MustCompile(`^in Kafka: bets p\d+@\d+$`).MatchString(res.BetAck) && !strings.Contains(res.BetAck, "1002") {
		t.Fatalf("bet slip ack %q, want the Kafka position", res.BetAck)
	}
	if strings.HasPrefix(res.BetAck, "in Kafka") && !regexp.MustCompile(`^(settled: (won \d+\.\d\d|lost)|rejected: odds changed)$`).MatchString(res.BetResult) {
		t.Fatalf("bet slip result %q, want a settlement or the book's rejection", res.BetResult)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^edgerelay_publication_bytes_written_total\{compression="deflate",variant="full"\} (\S+)$`).FindSubmatch(body)
	if m == nil || string(m[1]) == "0" {
		t.Fatalf("Chromium's pushes were not compressed (permessage-deflate not negotiated?): %q", m)
	}
}
