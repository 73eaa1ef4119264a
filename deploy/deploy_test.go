// Package deploy_test checks the deployment artefacts in deploy/ against
// the relay they deploy: the compose file, the Helm chart (rendered by
// helm template, helm_test.go), the systemd unit and the Dockerfile parse
// and agree with the relay's configuration, routes and ports; every metric
// the Grafana dashboard and the Prometheus rules name exists in a running
// relay's /metrics; and, where podman is installed, the image builds from a
// local binary. scripts/test also runs promtool check/test rules,
// docker-compose config and helm lint.
package deploy_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/ingest"
)

// --- a relay in-process (as relay/helpers_test.go does) ---

type testRelay struct {
	addr string
}

func startRelay(t *testing.T, cfg relay.Config) *testRelay {
	t.Helper()
	srv, err := relay.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("relay did not shut down")
		}
	})
	return &testRelay{addr: ln.Addr().String()}
}

func (r *testRelay) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func checkFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newKafka(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "odds", "scores", "results", "bets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testConfig(brokers []string) relay.Config {
	cfg := relay.DefaultConfig()
	cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = 0, 0 // a test relay stops at once (drain_test.go times drains)
	cfg.Listen = "127.0.0.1:0"
	cfg.Kafka.Brokers = brokers
	cfg.Ingest.ProbeInterval = 100 * time.Millisecond
	cfg.Ingest.LagInterval = 100 * time.Millisecond // the watch's series soon
	cfg.Ingest.Topics = append(cfg.Ingest.Topics, ingest.Topic{Name: "results", ChannelTemplate: "bets:#{key}"})
	cfg.WebSocket.PingInterval = 0
	return cfg
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --- metric names: dashboard and rules against a live /metrics ---

var metricName = regexp.MustCompile(`\bedgerelay_[a-z0-9_]+`)

// queries returns the PromQL expressions of the dashboard's panels and the
// alert rules, with where each came from.
func queries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(readFile(t, "grafana/edgerelay.json"), &dash); err != nil {
		t.Fatalf("grafana/edgerelay.json: %v", err)
	}
	if len(dash.Panels) < 10 {
		t.Fatalf("dashboard has %d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			out[fmt.Sprintf("dashboard panel %q query %d", p.Title, i)] = tg.Expr
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts.yaml"), &rules); err != nil {
		t.Fatalf("prometheus/alerts.yaml: %v", err)
	}
	ops := string(readFile(t, "../docs/operations.md"))
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
			// Every alert has a runbook entry: a heading named after it.
			anchor := strings.TrimPrefix(r.Annotations["runbook_url"], "docs/operations.md#")
			if anchor != strings.ToLower(r.Alert) || !strings.Contains(ops, "### "+r.Alert+"\n") {
				t.Errorf("alert %s: runbook_url %q; docs/operations.md needs a heading \"### %s\"", r.Alert, r.Annotations["runbook_url"], r.Alert)
			}
		}
	}
	return out
}

// exported returns the metric families in a /metrics body.
func exported(body string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out
}

// observedOnly are label vectors a short test cannot make the relay
// export (Prometheus exports a vector only once one of its series is
// set). Each must still be registered in the relay's source and listed in
// docs/operations.md.
var observedOnly = []string{
	"edgerelay_accept_errors_total",     // EMFILE on accept
	"edgerelay_updates_conflated_total", // the node falling behind
	// Only with tls on; relay TestTLSCertificateReload reads both.
	"edgerelay_tls_certificate_reloads_total",
	"edgerelay_tls_certificate_expiry_timestamp_seconds",
}

func TestMetricNamesExist(t *testing.T) {
	k := newKafka(t)
	cfg := testConfig(k.ListenAddrs())
	cfg.Cluster.Bind = "127.0.0.1:0" // the edgerelay_cluster_* metrics
	r := startRelay(t, cfg)
	checkFor(t, 20*time.Second, func() error {
		if code, body := r.get(t, "/readyz"); code != 200 {
			return fmt.Errorf("readyz %d %s", code, body)
		}
		return nil
	})

	// Load, so that every series the dashboard shows has a value: a client
	// subscribed to a channel that gets records, a bet, a disconnect.
	conn, _, _, err := ws.Dial(context.Background(), "ws://"+r.addr+"/connection/websocket")
	if err != nil {
		t.Fatal(err)
	}
	send := func(s string) {
		if err := wsutil.WriteClientMessage(conn, ws.OpText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"id":1,"connect":{}}`)
	send(`{"id":2,"subscribe":{"channel":"odds:football:epl:m1:1x2"}}`)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 20 {
		rec := &kgo.Record{Topic: "odds", Key: []byte("m1"), Value: []byte(fmt.Sprintf(`{"home":%d}`, i)),
			Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte("odds:football:epl:m1:1x2")}}}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "results", Key: []byte("alice"), Value: []byte(`{"type":"settled"}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	send(`{"id":3,"rpc":{"method":"bet","data":{"bet_id":"b1","channel":"odds:football:epl:m1:1x2","selection":"home","odds":2,"stake":1}}}`)
	checkFor(t, 20*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		for _, s := range []string{"edgerelay_kafka_lag_records{", "edgerelay_kafka_last_record_age_seconds{", `edgerelay_bets_total{result="unauthorized"}`,
			"edgerelay_delivery_latency_seconds_count", `edgerelay_kafka_records_total{topic="results"}`} {
			if !strings.Contains(body, s) {
				return fmt.Errorf("no %s yet", s)
			}
		}
		return nil
	})
	// The client closes (counted as code "client").
	wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, conn)
	conn.Close()
	checkFor(t, 10*time.Second, func() error {
		if _, body := r.get(t, "/metrics"); !strings.Contains(body, "edgerelay_disconnects_total{") {
			return fmt.Errorf("no disconnect counted yet")
		}
		return nil
	})

	_, body := r.get(t, "/metrics")
	have := exported(body)
	var src strings.Builder
	for _, f := range must(filepath.Glob("../relay/*.go")) {
		if !strings.HasSuffix(f, "_test.go") {
			src.Write(readFile(t, f))
		}
	}
	// Documented: docs/operations.md lists the metrics, docs/bets.md the bet ones.
	ops := string(readFile(t, "../docs/operations.md")) + string(readFile(t, "../docs/bets.md"))
	seen := map[string]bool{}
	for where, expr := range queries(t) {
		for _, name := range metricName.FindAllString(expr, -1) {
			family := name
			if !have[family] {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if f, ok := strings.CutSuffix(name, suf); ok && have[f] {
						family = f
					}
				}
			}
			if seen[where+name] {
				continue
			}
			seen[where+name] = true
			if !strings.Contains(ops, "`"+family) {
				t.Errorf("%s: %s is not documented in docs/operations.md or docs/bets.md", where, family)
			}
			if have[family] {
				continue
			}
			if slices.Contains(observedOnly, family) {
				if short := strings.TrimPrefix(family, "edgerelay_"); !strings.Contains(src.String(), `"`+short+`"`) {
					t.Errorf("%s: %s is not registered in relay/", where, family)
				}
				continue
			}
			t.Errorf("%s: %s is not in the relay's /metrics (renamed?)", where, name)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// --- compose ---

func TestComposeFile(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
			Build   struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
			Volumes     []string          `yaml:"volumes"`
			Environment map[string]string `yaml:"environment"`
			Hostname    string            `yaml:"hostname"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(readFile(t, "docker-compose.yml"), &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	var names []string
	for n := range compose.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"grafana", "kafka", "kafka-init", "prometheus", "relay-1", "relay-2", "relay-3", "simulator"}; !slices.Equal(names, want) {
		t.Errorf("services %v, want %v", names, want)
	}
	if env := compose.Services["kafka"].Environment; env["KAFKA_PROCESS_ROLES"] != "broker,controller" {
		t.Errorf("kafka is not a KRaft combined node: %v", env)
	}
	for _, s := range compose.Services {
		for _, v := range s.Volumes {
			if src, _, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(src, "./") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("volume %s: %v", v, err)
				}
			}
		}
	}
	seeds := map[string]bool{}
	for _, n := range []string{"relay-1", "relay-2", "relay-3"} {
		s := compose.Services[n]
		if s.Build.Dockerfile != "deploy/Dockerfile" || s.Hostname != n {
			t.Errorf("%s: build %+v hostname %q", n, s.Build, s.Hostname)
		}
		cfg, unknown, err := relay.LoadConfig("relay.compose.yaml", envList(s.Environment))
		if err != nil || len(unknown) > 0 {
			t.Fatalf("%s: %v, unknown env %v", n, err, unknown)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", n, err)
		}
		for _, seed := range cfg.Cluster.Seeds {
			seeds[strings.Split(seed, ":")[0]] = true
		}
	}
	if len(seeds) != 3 {
		t.Errorf("seeds %v", seeds)
	}
	// The simulator is a real subcommand of the relay binary.
	sim := compose.Services["simulator"]
	if len(sim.Command) == 0 || sim.Command[0] != "simulate" || !slices.Contains(sim.Command, "--brokers") {
		t.Errorf("simulator command %v", sim.Command)
	}
	// docker-compose itself, when installed (scripts/test installs it).
	if path, err := exec.LookPath("docker-compose"); err == nil {
		out, err := exec.Command(path, "-f", "docker-compose.yml", "config", "-q").CombinedOutput()
		if err != nil {
			t.Errorf("docker-compose config: %v\n%s", err, out)
		}
	} else {
		t.Log("docker-compose not installed; parsed with yaml.v3 only")
	}
}

func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// --- systemd and Dockerfile ---

func TestSystemdUnit(t *testing.T) {
	unit := string(readFile(t, "systemd/edgerelay.service"))
	for _, want := range []string{"LimitNOFILE=1048576", "KillSignal=SIGTERM", "ExecStart=/usr/local/bin/edgerelay serve --config /etc/edgerelay/relay.yaml"} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("unit lacks %s", want)
		}
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)s$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("no TimeoutStopSec=Ns")
	}
	if d, _ := time.ParseDuration(m[1] + "s"); d <= relay.DefaultConfig().ShutdownTimeout {
		t.Errorf("TimeoutStopSec %v must exceed shutdown_timeout %v", d, relay.DefaultConfig().ShutdownTimeout)
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		// verify wants the ExecStart binary to exist.
		dir := t.TempDir()
		bin := filepath.Join(dir, "edgerelay")
		os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755)
		u := filepath.Join(dir, "edgerelay.service")
		os.WriteFile(u, []byte(strings.ReplaceAll(unit, "/usr/local/bin/edgerelay", bin)), 0o644)
		if out, err := exec.Command(path, "verify", u).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
}

func TestDockerfile(t *testing.T) {
	for _, f := range []string{"Dockerfile", "Dockerfile.local"} {
		df := string(readFile(t, f))
		stages := strings.Split(df, "\nFROM ")
		final := stages[len(stages)-1]
		for _, want := range []string{"scratch", "USER 65534:65534", "ca-certificates.crt", "HEALTHCHECK", `ENTRYPOINT ["/edgerelay"]`, "ARG VERSION", "ARG COMMIT"} {
			if !strings.Contains(final, want) {
				t.Errorf("%s: final stage lacks %s", f, want)
			}
		}
	}
	df := string(readFile(t, "Dockerfile"))
	for _, want := range []string{"CGO_ENABLED=0", "relay.Version=${VERSION}", "relay.Commit=${COMMIT}"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
}

// TestImage builds deploy/Dockerfile.local with podman from a binary built
// here (no base image can be pulled on the CI machines) and checks the
// image: non-root, the entrypoint, the health check, CA certificates, no
// shell. Then it runs the image's version command where the sandbox lets
// podman set rlimits.
func TestImage(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman not installed")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	ctxDir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-X github.com/edgerelay/edgerelay/relay.Version=0.0.0-ci -X github.com/edgerelay/edgerelay/relay.Commit=ci",
		"-o", filepath.Join(ctxDir, "edgerelay"), "../relay/cmd/edgerelay")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(ctxDir, "ca-certificates.crt"), readFile(t, "/etc/ssl/certs/ca-certificates.crt"), 0o644)
	os.WriteFile(filepath.Join(ctxDir, "relay.yaml"), readFile(t, "relay.example.yaml"), 0o644)
	tag := fmt.Sprintf("localhost/edgerelay-ci:%d", os.Getpid())
	run := func(args ...string) (string, error) {
		out, err := exec.Command(podman, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("build", "--format", "docker", "--build-arg", "VERSION=0.0.0-ci", "-f", "Dockerfile.local", "-t", tag, ctxDir); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() { run("rmi", "-f", tag) })
	out, err := run("image", "inspect", tag, "--format", "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{index .Config.Labels \"org.opencontainers.image.version\"}}|{{json .Config.Healthcheck}}")
	if err != nil {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	f := strings.Split(strings.TrimSpace(out), "|")
	if len(f) != 5 || f[0] != "65534:65534" || f[1] != `["/edgerelay"]` || f[2] != `["serve","--config","/etc/edgerelay/relay.yaml"]` || f[3] != "0.0.0-ci" || !strings.Contains(f[4], "/healthz") {
		t.Errorf("image config %q", out)
	}
	// The file system, without running anything: podman create + export.
	name := fmt.Sprintf("edgerelay-ci-%d", os.Getpid())
	if out, err := run("create", "--name", name, tag); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}
	t.Cleanup(func() { run("rm", "-f", name) })
	exp := exec.Command(podman, "export", name)
	pipe, _ := exp.StdoutPipe()
	if err := exp.Start(); err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	tr := tar.NewReader(pipe)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		files[strings.TrimPrefix(h.Name, "./")] = true
	}
	exp.Wait()
	for _, want := range []string{"edgerelay", "etc/ssl/certs/ca-certificates.crt", "etc/edgerelay/relay.yaml"} {
		if !files[want] {
			t.Errorf("image lacks /%s (has %v)", want, files)
		}
	}
	for _, shell := range []string{"bin/sh", "bin/bash"} {
		if files[shell] {
			t.Errorf("image has /%s", shell)
		}
	}
	// Running needs podman to set rlimits, which some sandboxes refuse.
	out, err = run("run", "--rm", tag, "version")
	switch {
	case err == nil:
		if !strings.Contains(out, "edgerelay 0.0.0-ci (commit ci,") {
			t.Errorf("podman run version: %q", out)
		}
	case strings.Contains(out, "setrlimit"):
		t.Logf("podman run not possible here (%s); the image was built and inspected only", strings.TrimSpace(out))
	default:
		t.Errorf("podman run version: %v\n%s", err, out)
	}
}
