package relay_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
)

type clusterView struct {
	Self    string `json:"self"`
	Gossip  bool   `json:"gossip"`
	Alone   bool   `json:"alone"`
	Members []struct {
		Name      string `json:"name"`
		Address   string `json:"address"`
		State     string `json:"state"`
		Draining  bool   `json:"draining"`
		NodeState string `json:"node_state"`
		PublicURL string `json:"public_url"`
		Version   string `json:"version"`
	} `json:"members"`
}

func (r *testRelay) cluster(t *testing.T) clusterView {
	t.Helper()
	code, body := r.get(t, "/v1/cluster")
	var v clusterView
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("/v1/cluster: %d %s %v", code, body, err)
	}
	return v
}

// startRelays starts n relays named relay-1… gossiping on 127.0.0.1…n,
// seeded with relay-1, from base (edited per relay by edit, if not nil),
// and waits until each lists all n alive.
func startRelays(t *testing.T, n int, base relay.Config, edit func(i int, cfg *relay.Config)) []*testRelay {
	t.Helper()
	var relays []*testRelay
	var seed string
	for i := 1; i <= n; i++ {
		cfg := base
		cfg.Node = fmt.Sprintf("relay-%d", i)
		cfg.Cluster.Bind = fmt.Sprintf("127.0.0.%d:0", i)
		if seed != "" {
			cfg.Cluster.Seeds = []string{seed}
		}
		if edit != nil {
			edit(i, &cfg)
		}
		relays = append(relays, startRelay(t, cfg))
		if i == 1 {
			checkFor(t, 10*time.Second, func() error {
				v := relays[0].cluster(t)
				if len(v.Members) != 1 || v.Members[0].Address == "" {
					return fmt.Errorf("relay-1 lists %+v", v.Members)
				}
				seed = v.Members[0].Address
				return nil
			})
		}
	}
	checkFor(t, 20*time.Second, func() error {
		for _, r := range relays {
			alive := 0
			for _, m := range r.cluster(t).Members {
				if m.State == "alive" {
					alive++
				}
			}
			if alive != n {
				return fmt.Errorf("%s lists %d alive of %d", r.cluster(t).Self, alive, n)
			}
		}
		return nil
	})
	return relays
}

// TestClusterOfThreeRelays runs three relays gossiping on 127.0.0.1–3
// and checks that /v1/cluster on each lists all three, alive, with their
// public URLs; that one shut down is listed as left; and that a relay
// without cluster.bind lists itself alone.
func TestClusterOfThreeRelays(t *testing.T) {
	kafka := newKafka(t)
	relays := startRelays(t, 3, testConfig(kafka.ListenAddrs()), nil)
	r1 := relays[0]
	checkFor(t, 20*time.Second, func() error {
		for i, r := range relays {
			v := r.cluster(t)
			if v.Self != fmt.Sprintf("relay-%d", i+1) || v.Alone || !v.Gossip || len(v.Members) != 3 {
				return fmt.Errorf("relay-%d: %+v", i+1, v)
			}
			for j, m := range v.Members {
				want := relays[j].url()
				if m.Name != fmt.Sprintf("relay-%d", j+1) || m.State != "alive" || m.Draining || m.PublicURL != want || m.Version == "" {
					return fmt.Errorf("relay-%d lists %+v, want relay-%d alive at %s", i+1, m, j+1, want)
				}
			}
		}
		return nil
	})
	code, body := r1.get(t, "/metrics")
	if code != 200 || metric(body, `edgerelay_cluster_members{state="alive"}`) != 3 || metric(body, "edgerelay_cluster_alone") != 0 ||
		!strings.Contains(body, `edgerelay_cluster_events_total{event="join"}`) {
		t.Errorf("cluster metrics of relay-1:\n%s", grep(body, "edgerelay_cluster_"))
	}

	// A relay shutting down leaves first: the others list it as left.
	relays[2].stop()
	checkFor(t, 20*time.Second, func() error {
		for _, r := range relays[:2] {
			if v := r.cluster(t); len(v.Members) != 3 || v.Members[2].State != "left" || !v.Members[2].Draining {
				return fmt.Errorf("%s lists %+v", v.Self, v.Members)
			}
		}
		return nil
	})

	solo := startRelay(t, testConfig(kafka.ListenAddrs()))
	if v := solo.cluster(t); !v.Alone || v.Gossip || len(v.Members) != 1 || v.Members[0].Name != "test-node" || v.Members[0].PublicURL != solo.url() {
		t.Errorf("relay without cluster.bind: %+v", v)
	}
}

func TestClusterConfigFromEnv(t *testing.T) {
	cfg, unknown, err := relay.LoadConfig("", []string{
		"EDGERELAY_CLUSTER_BIND=0.0.0.0:7946", "EDGERELAY_CLUSTER_ADVERTISE=10.0.0.5:7946",
		"EDGERELAY_CLUSTER_SEEDS=edgerelay-gossip.default.svc:7946, 10.0.0.7:7946",
		"EDGERELAY_CLUSTER_SECRET_KEY=" + strings.Repeat("A", 43) + "=", "EDGERELAY_CLUSTER_RETRY_INTERVAL=3s",
	})
	if err != nil || len(unknown) > 0 {
		t.Fatal(err, unknown)
	}
	c := cfg.Cluster
	if c.Bind != "0.0.0.0:7946" || c.Advertise != "10.0.0.5:7946" || strings.Join(c.Seeds, " ") != "edgerelay-gossip.default.svc:7946 10.0.0.7:7946" ||
		c.RetryInterval != 3*time.Second || c.SecretKey == "" {
		t.Errorf("cluster config from env: %+v", c)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	cfg.Cluster.SecretKey = "c2hvcnQ=" // 5 bytes
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "cluster.secret_key: decodes to 5 bytes") {
		t.Errorf("short key: %v", err)
	}
}
