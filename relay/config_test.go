package relay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	tests := []struct {
		name    string
		file    string
		env     []string
		check   func(*testing.T, Config)
		wantErr string // substring of the load or validate error
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			if c.Listen != ":8000" || c.Kafka.Brokers[0] != "127.0.0.1:9092" || c.WebSocket.PingInterval != 25*time.Second {
				t.Fatalf("defaults %+v", c)
			}
		}},
		{name: "empty file", file: write("empty.yaml", ""), check: func(t *testing.T, c Config) {}},
		{name: "yaml", file: write("ok.yaml", "listen: 127.0.0.1:9000\nkafka:\n  brokers: [a:9092, b:9092]\nwebsocket:\n  max_message_bytes: 128KiB\n  ping_interval: 15s\ningest:\n  topics:\n    - name: odds\n      channel_template: \"odds:{key}\"\n"),
			check: func(t *testing.T, c Config) {
				if c.Listen != "127.0.0.1:9000" || len(c.Kafka.Brokers) != 2 || c.WebSocket.MaxMessageBytes != 128<<10 || c.WebSocket.PingInterval != 15*time.Second || c.Ingest.Topics[0].ChannelTemplate != "odds:{key}" {
					t.Fatalf("loaded %+v", c)
				}
			}},
		{name: "env overrides", env: []string{"EDGERELAY_KAFKA_BROKERS=x:1, y:2", "EDGERELAY_WEBSOCKET_PONG_TIMEOUT=3s", "EDGERELAY_CHANNELS_MAX_CACHED_BYTES=1MiB", "EDGERELAY_KAFKA_TLS_ENABLED=true", "EDGERELAY_WEBSOCKET_WRITERS=3", "PATH=/bin"},
			check: func(t *testing.T, c Config) {
				if strings.Join(c.Kafka.Brokers, ",") != "x:1,y:2" || c.WebSocket.Writers != 3 || c.WebSocket.PongTimeout != 3*time.Second || c.Channels.MaxCachedBytes != 1<<20 || !c.Kafka.TLS.Enabled {
					t.Fatalf("env not applied: %+v", c)
				}
			}},
		{name: "unknown key", file: write("typo.yaml", "websocket:\n  max_mesage_bytes: 1\n"), wantErr: "max_mesage_bytes"},
		{name: "unknown env", env: []string{"EDGERELAY_LISTN=:1"}, wantErr: "EDGERELAY_LISTN names no setting"},
		{name: "bad env value", env: []string{"EDGERELAY_WEBSOCKET_PING_INTERVAL=soon"}, wantErr: "websocket.ping_interval"},
		{name: "bad size", file: write("size.yaml", "channels:\n  max_cached_bytes: lots\n"), wantErr: "not a byte size"},
		{name: "missing file", file: filepath.Join(dir, "nope.yaml"), wantErr: "no such file"},
		{name: "invalid values", file: write("bad.yaml", "listen: nowhere\nlog_level: loud\nkafka:\n  brokers: []\n  sasl:\n    mechanism: kerberos\ningest:\n  topics: []\nwebsocket:\n  path: ws\n  ping_interval: 10ms\n"),
			wantErr: "listen: \"nowhere\" has no port|log_level: \"loud\"|kafka.brokers: at least one|kafka.sasl.mechanism: \"kerberos\"|ingest.topics: at least one|websocket.path: \"ws\"|websocket.ping_interval"},
		{name: "negative writers", env: []string{"EDGERELAY_WEBSOCKET_WRITERS=-1"}, wantErr: "websocket.writers"},
		{name: "drain from env", env: []string{"EDGERELAY_CLUSTER_DRAIN_LB_DELAY=0s", "EDGERELAY_CLUSTER_DRAIN_PERIOD=30s", "EDGERELAY_SHUTDOWN_TIMEOUT=35s", "EDGERELAY_HTTP_OPERATOR_TOKEN=0123456789abcdef"},
			check: func(t *testing.T, c Config) {
				if d := c.Cluster.Drain; d.LBDelay != 0 || d.Period != 30*time.Second || c.ShutdownTimeout != 35*time.Second || c.HTTP.OperatorToken != "0123456789abcdef" {
					t.Fatalf("drain from env: %+v %v %q", d, c.ShutdownTimeout, c.HTTP.OperatorToken)
				}
			}},
		{name: "drain longer than shutdown", env: []string{"EDGERELAY_CLUSTER_DRAIN_PERIOD=16s"}, wantErr: "shutdown_timeout: 20s is less than cluster.drain.lb_delay + cluster.drain.period (5s + 16s)"},
		{name: "negative drain", env: []string{"EDGERELAY_CLUSTER_DRAIN_LB_DELAY=-1s", "EDGERELAY_CLUSTER_DRAIN_PERIOD=-1s"}, wantErr: "cluster.drain.lb_delay: must not be negative|cluster.drain.period: must not be negative"},
		{name: "short operator token", env: []string{"EDGERELAY_HTTP_OPERATOR_TOKEN=secret"}, wantErr: "http.operator_token: shorter than 16 bytes"},
		{name: "template", file: write("tmpl.yaml", "ingest:\n  topics:\n    - name: odds\n      channel_template: \"odds:{id}\"\n"), wantErr: "ingest.topics[0].channel_template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, unknown, err := LoadConfig(tt.file, tt.env)
			if len(unknown) > 0 && err == nil {
				err = fmt.Errorf("environment variable %s names no setting", unknown[0])
			}
			if err == nil {
				err = c.Validate()
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.wantErr)
			}
			for _, want := range strings.Split(tt.wantErr, "|") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	c, _, err := LoadConfig("../deploy/relay.example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
