package relay

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay/ingest"
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
		{name: "env overrides", env: []string{"EDGERELAY_KAFKA_BROKERS=x:1, y:2", "EDGERELAY_WEBSOCKET_PONG_TIMEOUT=3s", "EDGERELAY_CHANNELS_MAX_CACHED_BYTES=1MiB", "EDGERELAY_KAFKA_TLS_ENABLED=true", "EDGERELAY_WEBSOCKET_WRITERS=3", "EDGERELAY_HTTP_RATE_PER_ADDRESS=7.5", "PATH=/bin"},
			check: func(t *testing.T, c Config) {
				if strings.Join(c.Kafka.Brokers, ",") != "x:1,y:2" || c.WebSocket.Writers != 3 || c.WebSocket.PongTimeout != 3*time.Second || c.Channels.MaxCachedBytes != 1<<20 || !c.Kafka.TLS.Enabled || c.HTTP.RatePerAddress != 7.5 {
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

// TestConfigProblems: Validate lists every problem at once, in the
// configuration's terms (YAML paths; the file's line, the variable or the
// flag that set the value), file problems in line order first.
func TestConfigProblems(t *testing.T) {
	tests := []struct {
		name  string
		file  string // relay.yaml; "": no file
		env   []string
		flags [][3]string // flag, path, value
		want  string      // Validate's error, exactly
	}{
		{name: "two bad values",
			file: "listen: :8000\nwebsocket:\n  ping_interval: abc\n  max_message_bytes: lots\n",
			want: `relay.yaml:3: websocket.ping_interval: "abc" is not a duration (e.g. 300ms, 15s, 1m30s)
relay.yaml:4: websocket.max_message_bytes: "lots" is not a byte size (e.g. 65536, 64KiB, 1MiB)`},
		{name: "unknown key with a suggestion",
			file: "websocket:\n  ping_intervl: 10s\n  zzz: 1\nlistn: :1\n",
			want: `relay.yaml:2: websocket.ping_intervl: unknown key (did you mean ping_interval?)
relay.yaml:3: websocket.zzz: unknown key
relay.yaml:4: listn: unknown key (did you mean listen?)`},
		{name: "wrong types",
			file: "kafka:\n  brokers: a:9092\nwebsocket:\n  deflate: true\n  writers: [1]\nchannels:\n  max_channels: 1.5\n  namespaces: [odds]\ndebug: maybe\nhttp:\n  rate_per_address: .nan\n",
			want: `relay.yaml:2: kafka.brokers: want a list, not "a:9092"
relay.yaml:4: websocket.deflate: want a mapping, not "true"
relay.yaml:5: websocket.writers: want an integer, not a list
relay.yaml:7: channels.max_channels: "1.5" is not an integer
relay.yaml:8: channels.namespaces[0]: want a mapping, not "odds"
relay.yaml:9: debug: "maybe" is not true or false
relay.yaml:11: http.rate_per_address: ".nan" is not a finite number`},
		{name: "read and validation problems together, by line",
			file: "listen: nowhere\nwebsocket:\n  path: ws\n  pong_timeout: 1\nlog_level: loud\n",
			want: `relay.yaml:1: listen: "nowhere" has no port
relay.yaml:3: websocket.path: "ws" must start with / and not be under /v1/
relay.yaml:4: websocket.pong_timeout: "1" is not a duration (e.g. 300ms, 15s, 1m30s)
relay.yaml:5: log_level: "loud" is not one of debug, info, warn, error`},
		{name: "nested list items",
			file: "ingest:\n  topics:\n    - name: odds\n    - channel_template: \"x:{key}\"\n    - name: odds\n      payload: xml\n      nmae: x\n",
			want: `relay.yaml:4: ingest.topics[1].name: required
relay.yaml:5: ingest.topics[2].name: "odds" listed twice
relay.yaml:6: ingest.topics[2].payload: "xml" is not json or binary
relay.yaml:7: ingest.topics[2].nmae: unknown key (did you mean name?)`},
		{name: "sub-configs",
			file: "cluster:\n  bind: nowhere\n  retry_interval: 1ms\nbets:\n  enabled: true\n  key: account\n  timeout: 500ms\nkafka:\n  brokers: [\"a b\"]\n",
			want: `relay.yaml:2: cluster.bind: "nowhere": want host:port
relay.yaml:3: cluster.retry_interval: must be at least 100ms
relay.yaml:6: bets.key: "account" is not user or market
relay.yaml:7: bets.timeout: must be at least 1s (the Kafka client's least delivery timeout)
relay.yaml:9: kafka.brokers[0]: "a b" is not host:port
bets.dedup_sync_timeout: must be within 10ms..bets.timeout`},
		{name: "a value read is not validated again",
			file: "websocket:\n  max_queue_bytes: big\n", // the default stays, and is valid
			want: `relay.yaml:2: websocket.max_queue_bytes: "big" is not a byte size (e.g. 65536, 64KiB, 1MiB)`},
		{name: "null empties a list",
			file: "kafka:\n  brokers:\n",
			want: `relay.yaml:2: kafka.brokers: at least one seed broker is required`},
		{name: "key set twice",
			file: "listen: nowhere\nlisten: :8000\n",
			want: `relay.yaml:1: listen: "nowhere" has no port
relay.yaml:2: listen: set twice (first at line 1, which is used)`},
		{name: "environment",
			env: []string{"EDGERELAY_WEBSOCKET_PING_INTERVAL=soon", "EDGERELAY_CLUSTER_RETRY_INTERVAL=1ms", "EDGERELAY_WEBSOCKET_WRITERS=x", "EDGERELAY_HTTP_RATE_PER_ADDRESS=Inf"},
			want: `EDGERELAY_CLUSTER_RETRY_INTERVAL: cluster.retry_interval: must be at least 100ms
EDGERELAY_HTTP_RATE_PER_ADDRESS: http.rate_per_address: "Inf" is not a finite number
EDGERELAY_WEBSOCKET_PING_INTERVAL: websocket.ping_interval: "soon" is not a duration (e.g. 300ms, 15s, 1m30s)
EDGERELAY_WEBSOCKET_WRITERS: websocket.writers: "x" is not an integer`},
		{name: "environment overrides the file's list",
			file: "kafka:\n  brokers: [\"a:1\", \"b c\"]\n", env: []string{"EDGERELAY_KAFKA_BROKERS=x:1,y z"},
			want: `EDGERELAY_KAFKA_BROKERS: kafka.brokers[1]: "y z" is not host:port`},
		{name: "flags",
			file: "listen: :8000\n", env: []string{"EDGERELAY_LOG_LEVEL=debug"},
			flags: [][3]string{{"--listen", "listen", "nowhere"}, {"--log-level", "log_level", "loud"}},
			want: `flag --listen: listen: "nowhere" has no port
flag --log-level: log_level: "loud" is not one of debug, info, warn, error`},
		{name: "defaults no one set", env: []string{"EDGERELAY_WEBSOCKET_MAX_SUBSCRIPTIONS=2000"},
			want: `websocket.commands_per_second: must be 0 (no bound) or positive, with websocket.commands_burst at least websocket.max_subscriptions + 2 (a reconnect sends connect and every subscribe at once)`},
		{name: "anchors and merge keys",
			file: "http:\n  read_timeout: &zero 0s\n  write_timeout: *zero\nwebsocket:\n  <<: {write_timeout: 0s, connect_timeout: 0s}\n  connect_timeout: 5s\n",
			want: `relay.yaml:2: http.read_timeout: must be positive
relay.yaml:3: http.write_timeout: must be positive
relay.yaml:5: websocket.write_timeout: must be positive`},
		{name: "unknown anchor", file: "listen: *nowhere\n",
			want: `relay.yaml: unknown anchor 'nowhere' referenced`},
		{name: "syntax error", file: "listen: [\n",
			want: `relay.yaml:1: did not find expected node content`},
		{name: "not a mapping", file: "- listen\n",
			want: `relay.yaml:1: want a mapping, not a list`},
		{name: "two documents", file: "listen: :1\n---\nlisten: :2\n",
			want: `relay.yaml:2: a second YAML document (---): the configuration is one document`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, path := t.TempDir(), ""
			if tt.file != "" {
				path = filepath.Join(dir, "relay.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, _, err := LoadConfig(path, tt.env)
			if err == nil {
				for _, f := range tt.flags {
					c.SetFlag(f[0], f[1], f[2])
				}
				err = c.Validate()
			}
			if got := strings.ReplaceAll(fmt.Sprint(err), dir+"/", ""); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestConfigAliasBomb: aliases expand each time they are used (merge keys
// of merge keys grow exponentially); reading stops at maxFileNodes values
// a problem is listed once however often its alias is used, and the list
// printed stops at maxListedProblems.
func TestConfigAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("z0: &z0 {listen: \":1\", nope: 1")
	for i := range 50 { // unknown keys are reported, not read: they count too
		fmt.Fprintf(&b, ", nope%d: 1", i)
	}
	b.WriteString("}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "z%d: &z%d {<<: [*z%d, *z%d, *z%d, *z%d, *z%d, *z%d, *z%d, *z%d]}\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	b.WriteString("<<: *z9\n") // 8^9 mappings
	c, _, err := loadConfig("bomb.yaml", []byte(b.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.origin.problems); n > maxFileNodes {
		t.Errorf("%d problems recorded, want at most %d", n, maxFileNodes)
	}
	msg := c.Validate().Error()
	if !strings.Contains(msg, fmt.Sprintf("more than %d values", maxFileNodes)) || strings.Count(msg, "nope7: unknown key") != 1 {
		t.Errorf("bomb not reported, or a problem repeated:\n%s", msg)
	}
	b.Reset()
	for i := range maxListedProblems + 50 {
		fmt.Fprintf(&b, "k%d: 1\n", i)
	}
	c, _, _ = loadConfig("many.yaml", []byte(b.String()), nil)
	msg = c.Validate().Error()
	if n := strings.Count(msg, "\n") + 1; n != maxListedProblems+1 || !strings.HasSuffix(msg, "\n(and 50 more problems)") {
		t.Errorf("%d lines printed, want %d and a count of the rest:\n%s", n, maxListedProblems+1, msg)
	}
}

// TestConfigKeysHaveTags: every setting is a key because of its yaml tag
// (the reader, the environment and SetFlag know nothing else); a field
// without one would be silently unreadable. Fields that are not settings
// say yaml:"-".
func TestConfigKeysHaveTags(t *testing.T) {
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Slice || typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || isLeaf(typ) {
			return
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" {
				t.Errorf("%s.%s (%s) has no yaml tag", typ, f.Name, path)
			}
			if key != "-" {
				walk(f.Type, joinPath(path, key))
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

// TestValidationNamesKeys: every validator's error starts with the YAML
// path of a real setting (under its prefix), so that Validate can point at
// the line or variable that set it. A zero Config with bets and gossip on
// fails most checks of every sub-config.
func TestValidationNamesKeys(t *testing.T) {
	keys := map[string]bool{}
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		keys[path] = true
		for typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() == reflect.Struct && !isLeaf(typ) {
			for _, f := range yamlFields(typ) {
				walk(typ.Field(f.index).Type, joinPath(path, f.key))
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	c := Config{}
	c.Bets.Enabled = true
	c.Cluster.Seeds = []string{"nowhere"}
	c.Ingest.Topics = []ingest.Topic{{Payload: "xml", ChannelTemplate: "{x}"}}
	c.Channels.Namespaces = []NamespaceConfig{{Name: "a:b"}}
	c.Kafka.Brokers = []string{"a b"}
	c.Kafka.SASL.Mechanism = "kerberos"
	err := c.Validate().(configError)
	if len(err) < 40 {
		t.Fatalf("only %d problems:\n%v", len(err), err)
	}
	index := regexp.MustCompile(`\[[0-9]+\]`)
	for _, p := range err {
		if !keys[index.ReplaceAllString(p.path, "")] || p.path == "" {
			t.Errorf("%q does not start with a setting's YAML path", p)
		}
	}
}

// FuzzLoadConfig: any file (up to 8KiB) loads and validates without
// panicking, and every problem from the file names a line in it.
// testdata/fuzz/FuzzLoadConfig holds inputs it found that failed once.
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile("../deploy/relay.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{"", "listen: [\n", "websocket:\n  ping_intervl: 1\n  deflate: {level: x}\n",
		"a: &a [1]\nkafka: {brokers: *a, <<: *a}\n", "ingest:\n  topics: [{name: x}, ~, [1]]\n", "---\n---\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 8<<10 {
			return
		}
		c, _, err := loadConfig("f.yaml", raw, []string{"EDGERELAY_LISTEN=:1"})
		if err == nil {
			err = c.Validate()
		}
		ps, _ := err.(configError)
		lines := 1 // at most: YAML also breaks lines at \r, NEL, LS and PS
		for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(raw, []byte(br))
		}
		for _, p := range ps {
			if p.msg == "" || p.line < 0 || p.line > lines || (p.line > 0) != strings.HasPrefix(p.name, "f.yaml:") {
				t.Fatalf("problem %#v (the file has %d lines)", p, lines)
			}
		}
	})
}
