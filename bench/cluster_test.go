package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
)

// TestMain lets this test binary be a swarm worker process for RunFanout
// (FanoutConfig.Worker), as edgebench's own "worker" command is.
func TestMain(m *testing.M) {
	if os.Getenv("EDGEBENCH_WORKER") != "" {
		if err := Worker(os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFanoutCluster runs RunFanout, worker processes and all, against two
// relays reading one Kafka: the connections go round-robin per connection
// over the relays (7 clients over 2 workers of 3 and 4: 4 on the first,
// 3 on the second), every client gets every update of its channel once,
// and the report has each relay's part, its relay-side figures, and
// totals that are their sums.
func TestFanoutCluster(t *testing.T) {
	kafka := newKafka(t)
	var urls []string
	for range 2 {
		cfg := relay.DefaultConfig()
		cfg.Kafka.Brokers = kafka.ListenAddrs()
		cfg.Ingest.Topics = cfg.Ingest.Topics[:1]
		cfg.Overload.ConflateAfter = time.Hour // every update must arrive
		cfg.Debug = true                       // POST /debug/gc: the memory figures
		_, addr := startRelay(t, cfg)
		urls = append(urls, "ws://"+addr+"/connection/websocket")
	}
	fc := FanoutConfig{Brokers: kafka.ListenAddrs(), Topic: "odds", Conns: 7, Procs: 2, Channels: 2, Rate: 40, Size: 100,
		Duration: 500 * time.Millisecond, Worker: []string{os.Args[0]}}
	fc.SetURLs(urls)
	var log strings.Builder
	rep, err := RunFanout(t.Context(), fc, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if err := rep.Verdict(false); err != nil {
		t.Fatalf("%v\n%s", err, rep.Markdown())
	}
	if len(rep.Nodes) != 2 || rep.Nodes[0].URL != urls[0] || rep.Nodes[1].URL != urls[1] {
		t.Fatalf("nodes %+v", rep.Nodes)
	}
	// 20 records, 10 per channel; clients 0..6 on channel k%2 and relay k%2.
	perNode := []struct{ conns, received int }{{4, 4 * 10}, {3, 3 * 10}}
	var cpu float64
	for i, n := range rep.Nodes {
		c := n.Clients
		if c.Connected != perNode[i].conns || c.Failed != 0 || c.Received != uint64(perNode[i].received) || c.Gaps != 0 || c.Duplicates != 0 ||
			c.Connect.N != uint64(c.Connected) || c.Latency.N != c.Received {
			t.Errorf("relay %d: %+v, want %d clients receiving %d, no gaps or duplicates", i, c, perNode[i].conns, perNode[i].received)
		}
		if n.ConnectP99 <= 0 || n.P99 <= 0 || n.RelayRSS == 0 || !n.IdleMeasured || n.RelayAgeP99 <= 0 || n.RelayResources == "" {
			t.Errorf("relay %d: figures missing: %+v", i, n)
		}
		cpu += n.RelayCPUSeconds
	}
	if rep.Clients.Connected != 7 || rep.Clients.Received != 70 || rep.Clients.Connect.N != 7 || rep.ConnectAll <= 0 || rep.ConnectP99 <= 0 ||
		rep.RelayCPUSeconds != cpu || rep.RelayIdleBytes != rep.Nodes[0].RelayIdleBytes+rep.Nodes[1].RelayIdleBytes || rep.RelayAgeP99 <= 0 {
		t.Errorf("totals: %+v", rep)
	}
	md := rep.Markdown()
	if !strings.Contains(md, "| "+urls[1]+" | 3 | 0 |") || !strings.Contains(md, "| all 2 (every client subscribed in ") {
		t.Errorf("table:\n%s", md)
	}
	t.Logf("\n%s", md)
}

func TestParseURLs(t *testing.T) {
	for _, tt := range []struct {
		in     string
		want   []string
		errHas string
	}{
		{in: "ws://a:1/c", want: []string{"ws://a:1/c"}},
		{in: "ws://a:1/c, wss://b:2/c,ws://127.0.0.3:8000/connection/websocket",
			want: []string{"ws://a:1/c", "wss://b:2/c", "ws://127.0.0.3:8000/connection/websocket"}},
		{in: "http://a:1/c", errHas: "want ws://"},
		{in: "ws://a:1/c,", errHas: "want ws://"},
		{in: "", errHas: "want ws://"},
		{in: "ws://a:1/c,ws://a:1/c", errHas: "listed twice"},
	} {
		got, err := ParseURLs(tt.in)
		if tt.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("ParseURLs(%q) = %v, %v; want an error with %q", tt.in, got, err, tt.errHas)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseURLs(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// TestScenarioURL: a scenario's url is a string, a comma-separated string
// or a list; one URL is a single-relay run, several a cluster run.
func TestScenarioURL(t *testing.T) {
	const step = "\nsteps: [{name: a, conns: 1, procs: 1, channels: 1, rate: 1, duration: 1s}]"
	for _, tt := range []struct {
		name, yaml string
		want       []string
		errHas     string
	}{
		{"default", "name: x", []string{"ws://127.0.0.1:8000/connection/websocket"}, ""},
		{"string", "name: x\nurl: ws://a:1/c", []string{"ws://a:1/c"}, ""},
		{"commas", "name: x\nurl: ws://a:1/c,ws://b:1/c", []string{"ws://a:1/c", "ws://b:1/c"}, ""},
		{"list", "name: x\nurl: [ws://a:1/c, ws://b:1/c, ws://c:1/c]", []string{"ws://a:1/c", "ws://b:1/c", "ws://c:1/c"}, ""},
		{"map", "name: x\nurl: {a: 1}", nil, "a string or a list"},
		{"bad scheme", "name: x\nurl: [ws://a:1/c, tcp://b:1]", nil, "want ws://"},
		{"repeated", "name: x\nurl: [ws://a:1/c, ws://a:1/c]", nil, "listed twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "s.yaml")
			os.WriteFile(p, []byte(tt.yaml+step), 0o644)
			sc, err := LoadScenario(p)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("LoadScenario: %v, want an error with %q", err, tt.errHas)
				}
				return
			}
			if err != nil || !slices.Equal(sc.URL, tt.want) {
				t.Fatalf("url %v, %v; want %v", sc.URL, err, tt.want)
			}
			var fc FanoutConfig
			fc.SetURLs(sc.URL)
			if fc.URL != tt.want[0] || (len(tt.want) == 1) != (fc.URLs == nil) {
				t.Fatalf("SetURLs: URL %q URLs %v", fc.URL, fc.URLs)
			}
		})
	}
}

// TestWorkerResultNodes: merging worker results merges their per-relay
// parts relay by relay, whatever the order and count of parts.
func TestWorkerResultNodes(t *testing.T) {
	part := func(conns int, gaps uint64, connect time.Duration) WorkerResult {
		r := WorkerResult{Connected: conns, Gaps: gaps}
		for range conns {
			r.Connect.Record(connect)
		}
		return r
	}
	var total WorkerResult
	total.Add(&WorkerResult{Connected: 3, Nodes: []WorkerResult{part(2, 0, time.Millisecond), part(1, 1, 3*time.Millisecond)}})
	total.Add(&WorkerResult{Connected: 2, Nodes: []WorkerResult{part(1, 0, 2*time.Millisecond), part(1, 0, time.Millisecond)}})
	if len(total.Nodes) != 2 || total.Nodes[0].Connected != 3 || total.Nodes[1].Connected != 2 || total.Nodes[1].Gaps != 1 ||
		total.Nodes[0].Connect.N != 3 || total.Nodes[1].Connect.Max != 3*time.Millisecond || total.Connected != 5 {
		t.Fatalf("merged: %+v", total)
	}
}
