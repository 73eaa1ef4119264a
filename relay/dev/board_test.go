package dev

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBoardInChromium opens the demo board in a real browser (Debian's
// Chromium via playwright-core) against a fresh dev mode and checks that it
// shows odds and live updates, with no script errors; that a click on a
// price places a bet the slip shows with its Kafka position and then the
// bookmaker's acceptance and settlement; and that Chromium negotiated
// permessage-deflate (the only client, so deflated bytes are its).
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
		Bets            int      `json:"bets"`
		Errors          []string `json:"errors"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("board.mjs printed %s: %v", out, err)
	}
	t.Logf("board: %+v; dev start to first live update on the page: %v", res, time.Since(start).Round(time.Millisecond))
	if res.State != "open" || res.Matches != opts.Sim.Matches || res.Odds < 2*opts.Sim.Matches || res.Updates < 20 || len(res.Errors) > 0 {
		t.Fatalf("board not live: %+v", res)
	}
	if !regexp.MustCompile(`^in Kafka: bets p\d+@\d+$`).MatchString(res.BetAck) ||
		!regexp.MustCompile(`^accepted → settled: (won \d+\.\d\d|lost)$`).MatchString(res.BetResult) {
		t.Fatalf("bet slip after %d bets: ack %q, result %q; want the Kafka position, then accepted → settled", res.Bets, res.BetAck, res.BetResult)
	}
	deflated := deflateBytes(t, addr)
	if deflated <= 0 {
		t.Fatalf("no deflated publication bytes written: Chromium did not negotiate permessage-deflate")
	}
	t.Logf("deflated publication bytes written to Chromium: %.0f", deflated)
}

// deflateBytes sums edgerelay_publication_bytes_written_total over the
// series with compression="deflate".
func deflateBytes(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, m := range regexp.MustCompile(`(?m)^edgerelay_publication_bytes_written_total\{([^}]*)\} (\S+)$`).FindAllSubmatch(body, -1) {
		if strings.Contains(string(m[1]), `compression="deflate"`) {
			v, err := strconv.ParseFloat(string(m[2]), 64)
			if err != nil {
				t.Fatalf("metric value %q: %v", m[2], err)
			}
			sum += v
		}
	}
	return sum
}
