package dev

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// readmeRecord is the README's kcat example, a record of another shape
// than the simulator's. The README's channel is not one of the board's
// (match-123 is a basketball match in dev mode), so the test produces it
// there and on foreignChannel, one of the board's own market channels.
const (
	readmeChannel  = "odds:football:epl:match-123:1x2"
	foreignChannel = "odds:football:epl:match-100:1x2"
	readmeRecord   = `{"home":2.10,"draw":3.40,"away":3.25}`
	// addedChannel is a market the test opens in match-100 (and closes
	// with a tombstone) while the board shows it: a new key of the map.
	addedChannel = "odds:football:epl:match-100:test-added"
	addedRecord  = `{"match":"match-100","sport":"football","league":"epl","home":"H","away":"A","market":"test-added",` +
		`"status":"open","selections":[{"id":"home","name":"H","odds":2.5},{"id":"away","name":"A","odds":1.61}]}`
)

// addServer serves POST /add and /remove for board.mjs, which asks once
// the page shows odds: the market addedChannel is produced (a record, or
// a tombstone) into Kafka, keyed by its match like the simulator's.
func addServer(t *testing.T, cl *kgo.Client) string {
	t.Helper()
	mux := http.NewServeMux()
	for path, value := range map[string][]byte{"/add": []byte(addedRecord), "/remove": nil} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			rec := &kgo.Record{Topic: "odds", Key: []byte("match-100"), Value: value, Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(addedChannel)}}}
			if err := cl.ProduceSync(r.Context(), rec).FirstErr(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestBoardInChromium opens the demo board in a real browser (Debian's
// Chromium via playwright-core) against a fresh dev mode and checks that it
// shows odds and live updates, with no console error, page error or failed
// request (a favicon 404 is one); that a click on a price places a bet the
// slip shows with its Kafka position and then the bookmaker's acceptance
// and settlement, with the stake typed in; that Chromium negotiated
// permessage-deflate (the only client, so deflated bytes are its); that
// the README's kcat record, produced before the page opens and again while
// it is open, is skipped and counted while the board keeps updating; and
// that at desktop (1280 px) and phone (390 and 360 px) sizes no element
// leaves its card, no name runs into its price, the header is whole, the
// slip is a column on desktop and a bottom sheet on phones, and a price
// can be bet on from the keyboard. Maps: each card is one map subscription
// of the SDK (served by dev mode): a market the test produces into Kafka
// mid-match appears on its card without a reload, and goes with its
// tombstone; the simulator's pop-up markets appear too.
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
	addr, kafka := startDevKafka(t, opts)

	// The README's kcat line, before the page opens (it is the cached
	// value the page renders first, until the simulator's next record of
	// the market) and every 300 ms while it runs (live pushes).
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	foreign := func() error {
		var rs []*kgo.Record
		for _, ch := range []string{readmeChannel, foreignChannel} {
			rs = append(rs, &kgo.Record{Topic: "odds", Key: []byte(strings.Split(ch, ":")[3]), Value: []byte(readmeRecord),
				Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}}})
		}
		return cl.ProduceSync(context.Background(), rs...).FirstErr()
	}
	if err := foreign(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
				foreign()
			}
		}
	})
	defer wg.Wait()
	defer close(stop)

	cmd := exec.Command("node", "board.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BOARD_URL=http://"+addr+"/", "FOREIGN_CHANNEL="+foreignChannel,
		"ADD_URL="+addServer(t, cl), "ADD_CHANNEL="+addedChannel)
	if shots := os.Getenv("BOARD_SCREENSHOTS"); shots != "" {
		cmd.Env = append(cmd.Env, "SCREENSHOTS="+shots)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("board.mjs: %v\n%s", err, out)
	}
	var res struct {
		State           string `json:"state"`
		Matches         int    `json:"matches"`
		Odds            int    `json:"odds"`
		Channels        int    `json:"channels"`
		Updates         int    `json:"updates"`
		MsToOdds        int    `json:"ms_to_odds"`
		MsToFirstUpdate int    `json:"ms_to_first_update"`
		User            string `json:"user"`
		BetAck          string `json:"bet_ack"`
		BetResult       string `json:"bet_result"`
		Bets            int    `json:"bets"`
		StakeShown      string `json:"stake_shown"`
		Foreign         *struct {
			Skipped          int    `json:"skipped"`
			SkippedTitle     string `json:"skipped_title"`
			UpdatesAfterSkip int    `json:"updates_after_skip"`
			MatchPrices      int    `json:"match_prices"`
		} `json:"foreign"`
		Added *struct {
			Before     int    `json:"before"`
			MsToAppear int    `json:"ms_to_appear"`
			Price      string `json:"price"`
			Label      string `json:"label"`
			Gone       bool   `json:"gone"`
			SamePage   bool   `json:"same_page"`
		} `json:"added"`
		PopUps  int `json:"pop_ups"`
		Desktop struct {
			Problems        []string `json:"problems"`
			SlipBesideBoard bool     `json:"slip_beside_board"`
		} `json:"desktop"`
		Phone struct {
			Problems       []string `json:"problems"`
			Problems360    []string `json:"problems_360"`
			SheetClosedBar bool     `json:"sheet_closed_bar"`
			SheetOpens     bool     `json:"sheet_opens"`
			KeyboardFocus  string   `json:"keyboard_focus"`
			KeyboardAck    string   `json:"keyboard_ack"`
		} `json:"phone"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("board.mjs printed %s: %v", out, err)
	}
	if res.Foreign != nil {
		t.Logf("foreign records: %+v", *res.Foreign)
	}
	if res.Added != nil {
		t.Logf("market added mid-match: %+v", *res.Added)
	}
	t.Logf("board: %+v; dev start to first live update on the page: %v", res, time.Since(start).Round(time.Millisecond))
	if res.State != "open" || res.Matches != opts.Sim.Matches || res.Odds < 2*opts.Sim.Matches || res.Updates < 20 || len(res.Errors) > 0 {
		t.Fatalf("board not live: %+v", res)
	}
	if !regexp.MustCompile(`^in Kafka: bets p\d+@\d+$`).MatchString(res.BetAck) ||
		!regexp.MustCompile(`^accepted → settled: (won \d+\.\d\d|lost)$`).MatchString(res.BetResult) {
		t.Fatalf("bet slip after %d bets: ack %q, result %q; want the Kafka position, then accepted → settled", res.Bets, res.BetAck, res.BetResult)
	}
	if res.StakeShown != "12.5" {
		t.Errorf("bet slip shows a stake of %q after typing 12.5", res.StakeShown)
	}
	if f := res.Foreign; f == nil || f.Skipped < 1 || f.UpdatesAfterSkip < 20 || f.MatchPrices < 2 || !strings.Contains(f.SkippedTitle, foreignChannel) {
		t.Errorf("README's kcat record: %+v; want it skipped and counted, the board updating after it and match-100 still priced", f)
	}
	if a := res.Added; a == nil || a.Before != 0 || a.Price != "2.50" || a.Label != "test-added" || !a.Gone || !a.SamePage {
		t.Errorf("market added mid-match: %+v; want it absent, then on the card at 2.50 without a reload, then gone with its tombstone", a)
	}
	if res.PopUps < 1 {
		t.Errorf("no pop-up market of the simulator on the board")
	}
	if len(res.Desktop.Problems) > 0 || !res.Desktop.SlipBesideBoard {
		t.Errorf("desktop layout (slip beside the board: %v):\n%s", res.Desktop.SlipBesideBoard, strings.Join(res.Desktop.Problems, "\n"))
	}
	if p := res.Phone; len(p.Problems)+len(p.Problems360) > 0 || !p.SheetClosedBar || !p.SheetOpens {
		t.Errorf("phone layout (slip a closed bar: %v, opens on a bet: %v):\n%s", p.SheetClosedBar, p.SheetOpens, strings.Join(append(p.Problems, p.Problems360...), "\n"))
	}
	if p := res.Phone; !strings.HasPrefix(p.KeyboardFocus, "BUTTON.sel") || !strings.HasPrefix(p.KeyboardAck, "in Kafka: ") {
		t.Errorf("bet from the keyboard: focus on %q, slip %q", p.KeyboardFocus, p.KeyboardAck)
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
