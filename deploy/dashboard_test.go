package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/dev"
)

// --- the dashboard against a real Prometheus ---

// grafanaVars are the values this test gives the Grafana variables a
// dashboard query may use. Grafana computes the interval variables from
// the zoom and the scrape interval; 1m is the window the dashboard's own
// fixed-range queries use. A query template variable (label_values) is
// replaced by ".+", which is what "All" means inside a =~ matcher, the
// only place Grafana's multi-value variables work. Any other $variable
// fails the test: teach it here.
var grafanaVars = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "1m",
	"__range":         "1m",
}

var grafanaVar = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}?`)

// panelQuery is one PromQL expression the dashboard shows.
type panelQuery struct {
	where string // panel title and refId, or the template variable
	expr  string // with the Grafana variables substituted
}

// dashboardQueries returns every target of every panel (rows' nested
// panels included) and every query template variable of the dashboard
// JSON, ready for Prometheus.
func dashboardQueries(t *testing.T, dashboard []byte) []panelQuery {
	t.Helper()
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"` // a collapsed row's
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboard, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	vars := maps.Clone(grafanaVars)
	var out []panelQuery
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range dash.Templating.List {
		switch v.Type {
		case "datasource", "interval", "constant", "custom", "textbox", "adhoc":
			// Not PromQL: nothing to ask Prometheus.
		case "query":
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
			if m == nil {
				t.Errorf("template variable %s: query %q is not label_values(metric, label); teach dashboard_test.go", v.Name, q)
				continue
			}
			out = append(out, panelQuery{"variable $" + v.Name, fmt.Sprintf("count by (%s) (%s)", m[2], m[1])})
			vars[v.Name] = ".+"
		default:
			t.Errorf("template variable %s: type %q unknown to dashboard_test.go", v.Name, v.Type)
		}
	}
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("dashboard: %v", err)
			}
			for _, tg := range p.Targets {
				where := fmt.Sprintf("panel %q %s", p.Title, tg.RefID)
				expr := grafanaVar.ReplaceAllStringFunc(tg.Expr, func(s string) string {
					name := grafanaVar.FindStringSubmatch(s)[1]
					if v, ok := vars[name]; ok {
						return v
					}
					t.Errorf("%s: variable $%s unknown to dashboard_test.go (grafanaVars)", where, name)
					return s
				})
				out = append(out, panelQuery{where, expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	return out
}

// TestDashboardVariables: the Grafana variables are filled in as
// grafanaVars says, label_values variables become queries of their own,
// and a collapsed row's panels are not missed.
func TestDashboardVariables(t *testing.T) {
	got := dashboardQueries(t, []byte(`{
		"templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"},
			{"name": "instance", "type": "query", "query": {"query": "label_values(edgerelay_build_info, instance)"}}]},
		"panels": [
			{"title": "a", "targets": [{"refId": "A", "expr": "rate(x{instance=~\"$instance\"}[$__rate_interval])"}]},
			{"title": "row", "type": "row", "panels": [
				{"title": "b", "targets": [{"refId": "B", "expr": "increase(y[${__range}])"}]}]}]}`))
	want := []panelQuery{
		{"variable $instance", "count by (instance) (edgerelay_build_info)"},
		{`panel "a" A`, `rate(x{instance=~".+"}[1m])`},
		{`panel "b" B`, "increase(y[1m])"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// loadShows is where the dashboard must show the test's load, beyond
// having data: a series of panel with these labels and a value of at least
// min. They prove the breakdowns name the labels the relay sets.
var loadShows = []struct {
	panel  string
	labels map[string]string
	min    float64
}{
	{"Connections", map[string]string{"instance": "relay-1"}, 1},
	{"Connections", map[string]string{"instance": "relay-2"}, 1},
	{"Subscriptions", map[string]string{"instance": "relay-2"}, 1},
	{"Deliveries / s", map[string]string{"instance": "relay-1"}, 1e-9},
	{"Publication bytes / s by variant", map[string]string{"encoding": "json", "variant": "full", "compression": "none"}, 1e-9},
	{"Publication bytes / s by variant", map[string]string{"encoding": "json", "variant": "delta_patch"}, 1e-9},
	{"Publication bytes / s by variant", map[string]string{"encoding": "json", "variant": "full", "compression": "deflate"}, 1e-9},
	{"Kafka records / s", map[string]string{"topic": "odds"}, 1e-9},
	{"Kafka lag per partition", map[string]string{"topic": "odds"}, 0},
	{"Bets / s by result", map[string]string{"result": "accepted"}, 1e-9},
	{"Bets / s by result", map[string]string{"result": "unauthorized"}, 1e-9},
	{"Disconnects / s by code", map[string]string{"code": "client"}, 0},
	{"Cluster members", map[string]string{"state": "alive"}, 2},
	{"Kafka reachable / ready", map[string]string{"instance": "relay-2"}, 1},
}

// TestDashboardQueries runs two relays in one gossip cluster under a small
// load: dev mode's odds simulator producing to kfake; on each relay two
// subscribers, one with permessage-deflate, each with a market in full and
// one in fossil deltas; bets accepted (a token's user) and refused
// (anonymous); clients connecting and closing. A real Prometheus (Debian's) scrapes both every second with
// deploy/prometheus/alerts.yaml loaded. Every query of the Grafana
// dashboard (grafanaVars says how its variables are filled in) must then
// return, through Prometheus's HTTP API, a series with a number (NaN only
// is no data: Grafana draws nothing), and the panels that break the load
// down must show it (loadShows). Every alert rule must be evaluated by
// Prometheus without error (firing or not). In CI a missing prometheus
// binary fails the test.
func TestDashboardQueries(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus not installed (scripts/test installs Debian's prometheus): %v", err)
		}
		t.Skip("prometheus not installed (Debian: apt-get install prometheus; scripts/test installs it)")
	}
	queries := dashboardQueries(t, readFile(t, "grafana/edgerelay.json"))
	if len(queries) < 10 {
		t.Fatalf("dashboard has %d queries", len(queries))
	}

	k := newKafka(t)
	const secret = "edgerelay-dashboard-test-secret-32b"
	start := func(i int, seeds []string) *testRelay {
		cfg := testConfig(k.ListenAddrs())
		cfg.Node = fmt.Sprintf("relay-%d", i)
		cfg.Auth.HMACSecrets = []string{secret}
		cfg.Cluster.Bind = fmt.Sprintf("127.0.0.%d:0", i)
		cfg.Cluster.Seeds = seeds
		return startRelay(t, cfg)
	}
	r1 := start(1, nil)
	var seed string
	checkFor(t, 10*time.Second, func() error {
		var v struct{ Members []struct{ Address string } }
		_, body := r1.get(t, "/v1/cluster")
		if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.Members) != 1 || v.Members[0].Address == "" {
			return fmt.Errorf("relay-1 /v1/cluster: %s", body)
		}
		seed = v.Members[0].Address
		return nil
	})
	relays := []*testRelay{r1, start(2, []string{seed})}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	sim, err := dev.NewSimulator(k.ListenAddrs(), dev.SimConfig{Rate: 20, Matches: 1, MoveProb: 0.5, Seed: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { sim.Run(ctx) })
	markets := sim.Markets()
	for _, r := range relays {
		checkFor(t, 20*time.Second, func() error {
			if code, body := r.get(t, "/readyz"); code != 200 {
				return fmt.Errorf("readyz %d %s", code, body)
			}
			return nil
		})
	}

	// Subscribers: on each relay two clients, one of them with
	// permessage-deflate, each with a market in full and another in fossil
	// deltas (patches are too small to be deflated: websocket.deflate.min_bytes).
	hello := fmt.Sprintf(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":%q}}`+"\n"+
		`{"id":3,"subscribe":{"channel":%q,"delta":"fossil"}}`, markets[0], markets[1])
	for _, r := range relays {
		load(t, &wg, ctx, r, false, hello)
		load(t, &wg, ctx, r, true, hello)
	}
	tok, err := auth.SignHS256([]byte(secret), map[string]any{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	bettor := load(t, &wg, ctx, r1, false, fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok))
	anon := load(t, &wg, ctx, r1, false, `{"id":1,"connect":{}}`)
	wg.Go(func() {
		bet := func(c net.Conn, id int) error {
			cmd := fmt.Sprintf(`{"id":%d,"rpc":{"method":"bet","data":{"bet_id":"d%d","channel":%q,"selection":"home","odds":1.01,"stake":1}}}`, id, id, markets[0])
			return wsutil.WriteClientMessage(c, ws.OpText, []byte(cmd))
		}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for id := 10; ; id++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// A client that connects and closes: a disconnect, code "client".
			if id%4 == 0 {
				if c, _, _, err := ws.Dial(ctx, "ws://"+relays[id/4%2].addr+"/connection/websocket"); err == nil {
					wsutil.WriteClientMessage(c, ws.OpText, []byte(`{"id":1,"connect":{}}`))
					wsutil.WriteClientMessage(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					io.Copy(io.Discard, c)
					c.Close()
				}
			}
			if bet(bettor, id) != nil || bet(anon, id) != nil {
				return // the test is ending
			}
		}
	})

	prom := startPrometheus(t, promBin, relays)

	// Every dashboard query has data. A query Prometheus refuses (bad_data:
	// it does not parse, or does not type-check) fails at once.
	failing := make([]string, len(queries)) // why query i has no data yet, or ""
	for i := range failing {
		failing[i] = "not asked yet"
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		waiting := false
		for i, q := range queries {
			if failing[i] == "" || strings.HasPrefix(failing[i], "bad_data") {
				continue
			}
			failing[i] = hasData(prom.query(q.expr))
			waiting = waiting || failing[i] != "" && !strings.HasPrefix(failing[i], "bad_data")
		}
		if !waiting {
			break
		}
	}
	for i, q := range queries {
		if failing[i] == "" {
			continue
		}
		var names []string
		for _, n := range metricName.FindAllString(q.expr, -1) {
			if n := fmt.Sprintf("%s (%d series in Prometheus)", n, prom.count(n)); !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		t.Errorf("%s: %s: %s; metrics: %s", q.where, q.expr, failing[i], strings.Join(names, ", "))
	}
	if testing.Verbose() {
		for _, q := range queries {
			samples, err := prom.query(q.expr)
			t.Logf("%s: %s: %d series %v", q.where, q.expr, len(samples), err)
			for _, s := range samples {
				t.Logf("    %v %g", s.Metric, s.value)
			}
		}
	}
	if t.Failed() {
		t.Fatalf("dashboard queries without data (Prometheus log:\n%s)", prom.log())
	}

	// The breakdowns show the load.
	checkFor(t, 20*time.Second, func() error {
		var errs []error
		for _, w := range loadShows {
			shown, asked := false, 0
			var seen []string
			for _, q := range queries {
				if !strings.HasPrefix(q.where, fmt.Sprintf("panel %q ", w.panel)) {
					continue
				}
				asked++
				samples, err := prom.query(q.expr)
				if err != nil {
					return err
				}
				for _, s := range samples {
					shown = shown || s.has(w.labels) && s.value >= w.min
					seen = append(seen, fmt.Sprintf("%v %g", s.Metric, s.value))
				}
			}
			switch {
			case asked == 0:
				errs = append(errs, fmt.Errorf("no panel %q (loadShows)", w.panel))
			case !shown:
				errs = append(errs, fmt.Errorf("panel %q: no series %v with value >= %g; has %v", w.panel, w.labels, w.min, seen))
			}
		}
		return errors.Join(errs...)
	})

	// Every alert rule is evaluated without error.
	rulesFile := string(readFile(t, "prometheus/alerts.yaml"))
	wantRules := regexp.MustCompile(`(?m)^\s*- alert: (\S+)$`).FindAllStringSubmatch(rulesFile, -1)
	if len(wantRules) == 0 {
		t.Fatal("no alerts found in prometheus/alerts.yaml")
	}
	checkFor(t, 20*time.Second, func() error {
		rules, err := prom.rules()
		if err != nil {
			return err
		}
		for _, w := range wantRules {
			r, ok := rules[w[1]]
			switch {
			case !ok:
				return fmt.Errorf("alert %s not loaded by Prometheus (has %d rules)", w[1], len(rules))
			case r.Health == "err":
				t.Fatalf("alert %s: %s: %s", w[1], r.Query, r.LastError)
			case r.Health != "ok":
				return fmt.Errorf("alert %s not evaluated yet (%s)", w[1], r.Health)
			}
		}
		return nil
	})
}

// load opens a client on r that sends hello (with permessage-deflate
// offered if deflate) and then reads and discards everything until ctx
// ends. It returns the connection for more commands.
func load(t *testing.T, wg *sync.WaitGroup, ctx context.Context, r *testRelay, deflate bool, hello string) net.Conn {
	t.Helper()
	var d ws.Dialer
	if deflate {
		d.Extensions = []httphead.Option{httphead.NewOption("permessage-deflate", nil)}
	}
	c, _, hs, err := d.Dial(ctx, "ws://"+r.addr+"/connection/websocket")
	if err != nil {
		t.Fatal(err)
	}
	if deflate && len(hs.Extensions) == 0 {
		t.Fatal("permessage-deflate not negotiated")
	}
	if err := wsutil.WriteClientMessage(c, ws.OpText, []byte(hello)); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { io.Copy(io.Discard, c) })
	wg.Go(func() { <-ctx.Done(); c.Close() })
	return c
}

// --- Prometheus ---

type prometheus struct {
	t       *testing.T
	base    string
	logPath string
}

// startPrometheus runs Prometheus on a free loopback port with a fresh
// data directory, scraping relays every second as job "edgerelay" (what
// the alert rules expect) and evaluating alerts.yaml every second, and
// kills it when the test ends.
func startPrometheus(t *testing.T, bin string, relays []*testRelay) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for i, r := range relays {
		// The instance label is the node name, as a real scrape config
		// would relabel it: the dashboard's legends show it.
		targets = append(targets, fmt.Sprintf("{targets: [%q], labels: {node: relay-%d}}", r.addr, i+1))
	}
	config := fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: edgerelay
    static_configs: [%s]
    relabel_configs:
      - {source_labels: [node], target_label: instance}
      - {regex: node, action: labeldrop}
`, rules, strings.Join(targets, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{t: t, logPath: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// A free port: Prometheus cannot report the one it got for :0. Another
	// process may take it in between; then Prometheus exits, and the next
	// attempt picks another.
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		p.base = "http://" + addr
		ready := func() error {
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("prometheus exited: %v", err)
			default:
			}
			resp, err := http.Get(p.base + "/-/ready")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("/-/ready: %s", resp.Status)
			}
			return nil
		}
		deadline := time.Now().Add(30 * time.Second)
		for err = ready(); err != nil && time.Now().Before(deadline) && !strings.Contains(err.Error(), "exited"); err = ready() {
			time.Sleep(50 * time.Millisecond)
		}
		if err == nil {
			t.Cleanup(stop)
			break
		}
		stop()
		if attempt == 2 || !strings.Contains(p.log(), "address already in use") {
			t.Fatalf("prometheus did not start: %v\n%s", err, p.log())
		}
	}
	// Both relays are scraped.
	checkFor(t, 20*time.Second, func() error {
		var v struct {
			Data struct {
				ActiveTargets []struct {
					ScrapeURL string `json:"scrapeUrl"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := p.get("/api/v1/targets", &v); err != nil {
			return err
		}
		up := 0
		for _, tg := range v.Data.ActiveTargets {
			if tg.Health == "up" {
				up++
			}
		}
		if up != len(relays) {
			return fmt.Errorf("%d of %d targets up: %+v", up, len(relays), v.Data.ActiveTargets)
		}
		return nil
	})
	return p
}

func (p *prometheus) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// get decodes the JSON answer of an API path into v; an API error
// ("status": "error") is returned as an error.
func (p *prometheus) get(path string, v any) error {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var status struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}
	if err := json.Unmarshal(body, &status); err != nil {
		return fmt.Errorf("%s: %s %.200s", path, resp.Status, body)
	}
	if status.Status != "success" {
		return fmt.Errorf("%s: %s", status.ErrorType, status.Error)
	}
	return json.Unmarshal(body, v)
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	value  float64
}

func (s sample) has(labels map[string]string) bool {
	for k, v := range labels {
		if s.Metric[k] != v {
			return false
		}
	}
	return true
}

// query evaluates expr now (an instant query) and returns its samples.
func (p *prometheus) query(expr string) ([]sample, error) {
	var v struct {
		Data struct {
			ResultType string   `json:"resultType"`
			Result     []sample `json:"result"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(expr), &v); err != nil {
		return nil, err
	}
	if v.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, not a vector", v.Data.ResultType)
	}
	for i := range v.Data.Result {
		s, _ := v.Data.Result[i].Value[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("sample value %q: %v", s, err)
		}
		v.Data.Result[i].value = f
	}
	return v.Data.Result, nil
}

// count is how many series of metric Prometheus holds now.
func (p *prometheus) count(metric string) int {
	samples, err := p.query(fmt.Sprintf("count({__name__=%q})", metric))
	if err != nil || len(samples) == 0 {
		return 0
	}
	return int(samples[0].value)
}

// hasData says why a query's answer is no data for Grafana, or "".
func hasData(samples []sample, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case len(samples) == 0:
		return "no series"
	}
	for _, s := range samples {
		if !math.IsNaN(s.value) {
			return ""
		}
	}
	return fmt.Sprintf("%d series, all NaN", len(samples))
}

type ruleState struct {
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	Query     string `json:"query"`
}

// rules returns Prometheus's alerting rules by name.
func (p *prometheus) rules() (map[string]ruleState, error) {
	var v struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name string `json:"name"`
					ruleState
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/rules?type=alert", &v); err != nil {
		return nil, err
	}
	out := map[string]ruleState{}
	for _, g := range v.Data.Groups {
		for _, r := range g.Rules {
			out[r.Name] = r.ruleState
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no alerting rules loaded")
	}
	return out, nil
}
