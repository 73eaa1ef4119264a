package cluster

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestConfigValidate(t *testing.T) {
	key16 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tt := range []struct {
		name    string
		edit    func(*Config)
		wantErr string // "" valid; else |-separated fragments
	}{
		{"default: gossip off", func(c *Config) {}, ""},
		{"full", func(c *Config) {
			c.Bind, c.Advertise, c.Seeds, c.SecretKey = "0.0.0.0:7946", "10.0.0.5:7946", []string{"relays.ns.svc:7946", "10.0.0.6:7946"}, key16
			c.PublicURL = "wss://relay-1.example.com/connection/websocket"
		}, ""},
		{"seeds without bind", func(c *Config) { c.Seeds = []string{"a:7946"} }, "cluster.bind: required"},
		{"bad bind", func(c *Config) { c.Bind = "7946" }, "cluster.bind"},
		{"advertise not an IP", func(c *Config) { c.Bind, c.Advertise = ":7946", "relay-1:7946" }, "cluster.advertise"},
		{"seed without port", func(c *Config) { c.Bind, c.Seeds = ":7946", []string{"ok:1", "relays"} }, "cluster.seeds[1]"},
		{"key not base64", func(c *Config) { c.SecretKey = "not base64!" }, "cluster.secret_key: not valid base64"},
		{"key wrong size", func(c *Config) { c.SecretKey = base64.StdEncoding.EncodeToString(make([]byte, 20)) }, "cluster.secret_key: decodes to 20 bytes"},
		{"url scheme", func(c *Config) { c.PublicURL = "http://x/" }, "cluster.public_url"},
		{"url too long", func(c *Config) { c.PublicURL = "ws://x/" + strings.Repeat("a", 300) }, "cluster.public_url: longer than 256"},
		{"intervals", func(c *Config) { c.RetryInterval, c.UpdateInterval, c.ForgetAfter = 0, time.Millisecond, 0 },
			"cluster.retry_interval|cluster.update_interval|cluster.forget_after"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			errorMentions(t, c.Validate("cluster"), tt.wantErr)
		})
	}
}

func TestMetaFitsAndReads(t *testing.T) {
	m := Meta{Format: metaFormat, PublicURL: "wss://" + strings.Repeat("h", MaxPublicURLBytes-6), Version: strings.Repeat("v", 200),
		State: StateOverloaded, Connections: 1<<63 - 1, Subscriptions: 1<<63 - 1, Load: 123456.789, Seq: 1<<64 - 1}
	b := encodeMeta(m)
	if len(b) > memberlist.MetaMaxSize {
		t.Fatalf("largest metadata is %d bytes, over memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	got, ok := decodeMeta(b)
	m.Version = m.Version[:maxVersionBytes]
	if !ok || got != m {
		t.Errorf("decoded %+v, want %+v", got, m)
	}
	// A later format's extra fields are ignored; unreadable metadata is not ok.
	if got, ok := decodeMeta([]byte(`{"f":2,"s":"ready","c":3,"new":[1,2]}`)); !ok || got.Format != 2 || got.Connections != 3 {
		t.Errorf("format 2: %+v %v", got, ok)
	}
	for _, bad := range []string{"", "x", `{"s":"ready"}`} {
		if _, ok := decodeMeta([]byte(bad)); ok {
			t.Errorf("%q read as metadata", bad)
		}
	}
}
