package relay_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/ingest"
)

// Operability (issue 17): build info, node names, Kafka unreachable at start.

func TestBuildInfoMetric(t *testing.T) {
	k := newKafka(t)
	r := startRelay(t, testConfig(k.ListenAddrs()))
	_, body := r.get(t, "/metrics")
	version, commit, goVersion := relay.BuildInfo()
	series := fmt.Sprintf(`edgerelay_build_info{commit=%q,go=%q,version=%q}`, commit, goVersion, version)
	if v := metric(body, series); v != 1 {
		t.Fatalf("%s = %v, want 1; /metrics has:\n%s", series, v, grepLines(body, "build_info"))
	}
	if version != relay.Version || goVersion != runtime.Version() || commit == "" {
		t.Fatalf("BuildInfo() = %q, %q, %q", version, commit, goVersion)
	}
}

func TestNodeEmptyIsHostName(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	// The example file says node: "" — the host name, as its comment says.
	cfg, _, err := relay.LoadConfig("../deploy/relay.example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node != host {
		t.Errorf("example config: node = %q, want the host name %q", cfg.Node, host)
	}
	// The environment too.
	cfg, _, err = relay.LoadConfig("", []string{"EDGERELAY_NODE="})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node != host {
		t.Errorf("EDGERELAY_NODE=\"\": node = %q, want %q", cfg.Node, host)
	}
	// And a Config built in code, given to relay.New: the connect reply
	// names the host.
	k := newKafka(t)
	c := testConfig(k.ListenAddrs())
	c.Node = ""
	r := startRelay(t, c)
	r.waitReady(t)
	cl := dial(t, r.url())
	cl.send(`{"id":1,"connect":{}}`)
	reply := cl.mustNext()
	if c, _ := reply["connect"].(map[string]any); c == nil || c["node"] != host {
		t.Errorf("connect reply %v does not name the host %q", reply, host)
	}
	_, body := r.get(t, "/v1/cluster")
	if !strings.Contains(body, fmt.Sprintf(`"self":%q`, host)) {
		t.Errorf("/v1/cluster %s: self is not the host %q", body, host)
	}
}

func TestExampleConfigListsResultsTopic(t *testing.T) {
	cfg, _, err := relay.LoadConfig("../deploy/relay.example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, tp := range cfg.Ingest.Topics {
		if tp.Name == "results" {
			found = true
			if tp.ChannelTemplate != "bets:#{key}" {
				t.Errorf("results channel_template = %q, want bets:#{key} (docs/bets.md)", tp.ChannelTemplate)
			}
		}
	}
	if !found {
		t.Errorf("example config topics %+v lack results", cfg.Ingest.Topics)
	}
}

// syncBuffer is a log sink safe for the relay's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestKafkaUnreachableAtStartIsLoggedAndCounted(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	var logs syncBuffer
	cfg := testConfig([]string{dead})
	cfg.Ingest.ProbeInterval = 50 * time.Millisecond
	r := startRelayLog(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	checkFor(t, 10*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		if n := metric(body, "edgerelay_kafka_probe_errors_total"); n < 3 {
			return fmt.Errorf("edgerelay_kafka_probe_errors_total = %v", n)
		}
		if v := metric(body, "edgerelay_kafka_reachable"); v != 0 {
			return fmt.Errorf("edgerelay_kafka_reachable = %v", v)
		}
		if !strings.Contains(logs.String(), "kafka brokers unreachable") {
			return fmt.Errorf("no warning in the log:\n%s", logs.String())
		}
		return nil
	})
	// Rate-limited: three and more failed probes, one warning.
	if n := strings.Count(logs.String(), "kafka brokers unreachable"); n != 1 {
		t.Errorf("%d warnings, want 1 within the rate limit:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), dead) {
		t.Errorf("the warning does not name the broker %s:\n%s", dead, logs.String())
	}
	if code, _ := r.get(t, "/readyz"); code != 503 {
		t.Errorf("/readyz %d, want 503", code)
	}
}

func TestKafkaReachableMetric(t *testing.T) {
	k := newKafka(t)
	r := startRelay(t, testConfig(k.ListenAddrs()))
	checkFor(t, 10*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		if v := metric(body, "edgerelay_kafka_reachable"); v != 1 {
			return fmt.Errorf("edgerelay_kafka_reachable = %v", v)
		}
		if n := metric(body, "edgerelay_kafka_probe_errors_total"); n != 0 {
			return fmt.Errorf("edgerelay_kafka_probe_errors_total = %v", n)
		}
		return nil
	})
}

var _ ingest.ProbeHooks // the hook the relay's metrics implement

func grepLines(body, sub string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
