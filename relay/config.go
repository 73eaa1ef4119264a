package relay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgerelay/edgerelay/cluster"
	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/bets"
	"github.com/edgerelay/edgerelay/relay/ingest"
	"github.com/edgerelay/edgerelay/relay/kafkaclient"
	"github.com/edgerelay/edgerelay/relay/units"
)

// Config is the whole relay configuration. It is read from a YAML file (see
// relay.example.yaml), then overridden by environment variables, then by
// command-line flags. docs/configuration.md describes every key.
type Config struct {
	// Listen is the address of the single HTTP listener: WebSocket
	// endpoint, metrics, health, REST.
	Listen string `yaml:"listen"`
	// Node names this relay in logs, replies and the cluster (unless
	// cluster.name says otherwise); default: the host name.
	Node string `yaml:"node"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM (or POST
	// /v1/drain): cluster.drain.lb_delay, then cluster.drain.period, then
	// the last clients' close; at least the sum of the two.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Debug serves /debug/pprof/ and POST /debug/gc on the listener.
	Debug bool `yaml:"debug"`

	Kafka     kafkaclient.Config `yaml:"kafka"`
	Ingest    ingest.Config      `yaml:"ingest"`
	Channels  ChannelsConfig     `yaml:"channels"`
	WebSocket WebSocketConfig    `yaml:"websocket"`
	HTTP      HTTPConfig         `yaml:"http"`
	Auth      AuthConfig         `yaml:"auth"`
	Bets      bets.Config        `yaml:"bets"`
	Overload  OverloadConfig     `yaml:"overload"`
	Cluster   cluster.Config     `yaml:"cluster"`
	TLS       TLSConfig          `yaml:"tls"`

	// origin is where LoadConfig and SetFlag found each value, and what
	// they could not read (configload.go); nil for a Config built in code.
	origin *configOrigin
}

// HTTPConfig bounds the plain-HTTP side of the listener (/metrics,
// health, REST): how long a client may take, or keep an idle keep-alive
// connection, and how large its request head may be. Zero values are
// refused: every bound is on.
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    ByteSize      `yaml:"max_header_bytes"`
	// RatePerAddress bounds /v1/ requests per second per client address
	// (IPv6: per /64), in bursts of BurstPerAddress; 0: no limit. Behind
	// a proxy that hides client addresses, every client shares one.
	RatePerAddress  float64 `yaml:"rate_per_address"`
	BurstPerAddress int     `yaml:"burst_per_address"`
	// OperatorToken is the secret operator endpoints (POST /v1/drain)
	// want as "Authorization: Bearer <token>"; "": those endpoints answer
	// 403.
	OperatorToken string `yaml:"operator_token"`
}

// OverloadConfig is what the node does when it cannot write every update
// to every subscriber in time (docs/protocol.md, "Conflation").
type OverloadConfig struct {
	// ConflateAfter: an update replaces the same channel's queued, unwritten
	// update for a connection once the connection has waited this long
	// for a writer (0: at once). Below saturation writers keep up and
	// nothing waits that long.
	ConflateAfter time.Duration `yaml:"conflate_after"`
	// DeliverAll lists channel-name prefixes whose updates are never
	// conflated: every update is delivered, late if need be.
	DeliverAll []string `yaml:"deliver_all"`
	// UnreadyAfter: while connections wait longer than this for a writer,
	// /readyz answers 503 "overloaded" so load balancers send new clients
	// elsewhere (0: never).
	UnreadyAfter time.Duration `yaml:"unready_after"`
}

// AuthConfig is how connect tokens are checked (docs/bets.md). With no key
// configured, tokens are not checked and every connection is anonymous.
type AuthConfig struct {
	// HMACSecrets verify HS256/384/512 tokens (at least 32 bytes each).
	HMACSecrets []string `yaml:"hmac_secrets"`
	// PublicKeyFiles (PEM) and JWKSFile verify RS* and ES* tokens.
	PublicKeyFiles []string      `yaml:"public_key_files"`
	JWKSFile       string        `yaml:"jwks_file"`
	Issuer         string        `yaml:"issuer"`
	Audience       string        `yaml:"audience"`
	Leeway         time.Duration `yaml:"leeway"`
	// Anonymous lets connections without a token in (read-only: they
	// cannot bet or read personal channels). Default true.
	Anonymous bool `yaml:"anonymous"`
}

// enabled says whether tokens are checked at all.
func (a *AuthConfig) enabled() bool {
	return len(a.HMACSecrets) > 0 || len(a.PublicKeyFiles) > 0 || a.JWKSFile != ""
}

// ChannelsConfig bounds the channel registry and last-value cache.
type ChannelsConfig struct {
	MaxNameLength  int      `yaml:"max_name_length"`
	MaxChannels    int      `yaml:"max_channels"`
	MaxCachedBytes ByteSize `yaml:"max_cached_bytes"`
	// IdleTTL evicts a channel without subscribers and without updates for
	// this long; 0 never evicts for idleness (the caps still apply).
	IdleTTL time.Duration `yaml:"idle_ttl"`
	// HistorySize is how many latest publications each channel keeps for
	// the "history" command and for recovering subscribers (0: none, only
	// the cached value). Counts toward max_cached_bytes.
	HistorySize int `yaml:"history_size"`
	// Namespaces say who may read the channels of a namespace (a channel
	// name's first segment); a namespace not listed is readable by
	// anyone. Personal channels (with '#') are their owner's whatever
	// their namespace says.
	Namespaces []NamespaceConfig `yaml:"namespaces"`
	// Presence bounds presence and presence_stats (presence.go), served
	// for namespaces with presence: true.
	Presence PresenceConfig `yaml:"presence"`
	// Maps are the map channels (docs/protocol.md, "Map subscriptions").
	Maps MapsConfig `yaml:"maps"`
}

// MapsConfig defines the map channels and bounds them.
type MapsConfig struct {
	// Rules: a channel starting with Prefix is a map whose entries are the
	// channels Depth segments below it.
	Rules []MapRuleConfig `yaml:"rules"`
	// MaxMaps per node, MaxEntries and MaxBytes per map: past them, the
	// documented errors of docs/protocol.md.
	MaxMaps    int      `yaml:"max_maps"`
	MaxEntries int      `yaml:"max_entries"`
	MaxBytes   ByteSize `yaml:"max_bytes"`
	// PageSize is the state page's size when the client asks for none,
	// and the most entries a state or stream page holds.
	PageSize int `yaml:"page_size"`
}

// MapRuleConfig is one map rule.
type MapRuleConfig struct {
	Prefix string `yaml:"prefix"`
	Depth  int    `yaml:"depth"`
}

// PresenceConfig bounds the cost of presence queries.
type PresenceConfig struct {
	// MaxClients: "presence" (the client list) answers 106 for a channel
	// with more subscribers than this, cluster-wide; presence_stats has
	// no such bound.
	MaxClients int `yaml:"max_clients"`
	// Timeout is how long a query waits for the other members; a member
	// that does not answer in time is left out of the sums.
	Timeout time.Duration `yaml:"timeout"`
	// Cache: an answer is reused for this long for the same channel and
	// kind, and concurrent asks share one query.
	Cache time.Duration `yaml:"cache"`
	// Busiest is how many channels edgerelay_channel_subscribers_busiest
	// shows: those with the most subscribers cluster-wide (0: off).
	Busiest int `yaml:"busiest"`
	// BusiestInterval is how often that gauge is recomputed.
	BusiestInterval time.Duration `yaml:"busiest_interval"`
}

// NamespaceConfig is one namespace's read rule and presence.
type NamespaceConfig struct {
	Name string `yaml:"name"`
	// Read is anyone, authenticated (a connection or REST request with a
	// valid token), owner (personal channels only: "<name>:#<user>") or
	// token (a subscription token naming the channel, checked at
	// subscribe; never over REST).
	Read string `yaml:"read"`
	// Presence serves presence and presence_stats for the namespace's
	// channels (to those who may read them), summed over the cluster.
	Presence bool `yaml:"presence"`
}

// WebSocketConfig configures the client endpoint.
type WebSocketConfig struct {
	Path            string   `yaml:"path"`
	MaxMessageBytes ByteSize `yaml:"max_message_bytes"`
	// MaxHandshakeBytes bounds the upgrade request: request line and
	// headers together; larger ones are answered 431.
	MaxHandshakeBytes ByteSize      `yaml:"max_handshake_bytes"`
	PingInterval      time.Duration `yaml:"ping_interval"`
	PongTimeout       time.Duration `yaml:"pong_timeout"`
	ConnectTimeout    time.Duration `yaml:"connect_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	SoftQueueBytes    ByteSize      `yaml:"soft_queue_bytes"`
	MaxQueueBytes     ByteSize      `yaml:"max_queue_bytes"`
	StallTimeout      time.Duration `yaml:"stall_timeout"`
	MaxSubscriptions  int           `yaml:"max_subscriptions"`
	// MaxFramesPerSecond bounds the WebSocket frames (data and control)
	// a client may send per second: past it, close 3013.
	MaxFramesPerSecond int `yaml:"max_frames_per_second"`
	// MaxConnections caps the node's WebSocket connections (0: the
	// open-file limit less 128, or less an eighth of a limit under 1024); MaxConnectionsPerAddress those from one
	// client address (IPv6: per /64; 0: no cap); and
	// UpgradesPerSecondPerAddress, in bursts of UpgradesBurstPerAddress,
	// how fast one address may open them (0: no bound). Past any, the
	// upgrade is answered 503 with Retry-After.
	MaxConnections              int     `yaml:"max_connections"`
	MaxConnectionsPerAddress    int     `yaml:"max_connections_per_address"`
	UpgradesPerSecondPerAddress float64 `yaml:"upgrades_per_second_per_address"`
	UpgradesBurstPerAddress     int     `yaml:"upgrades_burst_per_address"`
	// CommandsPerSecond and CommandsBurst bound a connection's protocol
	// commands (pongs included): past the rate a command is answered
	// with error 111; a client that goes on by another burst is closed
	// with 3013. The burst must hold a reconnect: connect and every
	// subscription in one message.
	CommandsPerSecond float64 `yaml:"commands_per_second"`
	CommandsBurst     int     `yaml:"commands_burst"`
	// Writers is the number of writer workers; 0: one per core
	// (GOMAXPROCS).
	Writers        int           `yaml:"writers"`
	AllowedOrigins []string      `yaml:"allowed_origins"`
	Deflate        DeflateConfig `yaml:"deflate"`
}

// DeflateConfig is permessage-deflate (RFC 7692). The relay accepts it with
// server_no_context_takeover and client_no_context_takeover, so that each
// update is compressed once and the same bytes go to every connection that
// negotiated it, and no connection holds compression state.
type DeflateConfig struct {
	Enabled bool `yaml:"enabled"`
	// MinBytes: smaller messages are sent uncompressed.
	MinBytes ByteSize `yaml:"min_bytes"`
	// Level is the flate level, 1 (fastest) to 9 (smallest).
	Level int `yaml:"level"`
}

// DefaultConfig returns a configuration that works against a local broker
// on 127.0.0.1:9092 with the topics "odds" and "scores".
func DefaultConfig() Config {
	host := DefaultNode("")
	hub := fanout.DefaultConfig()
	return Config{
		Listen:          ":8000",
		Node:            host,
		LogLevel:        "info",
		ShutdownTimeout: 20 * time.Second,
		Kafka:           kafkaclient.DefaultConfig(),
		Ingest:          ingest.DefaultConfig(),
		Channels: ChannelsConfig{
			MaxNameLength:  hub.MaxNameLength,
			MaxChannels:    hub.MaxChannels,
			MaxCachedBytes: ByteSize(hub.MaxCachedBytes),
			Maps:           MapsConfig{MaxMaps: hub.MaxMaps, MaxEntries: hub.MaxMapEntries, MaxBytes: ByteSize(hub.MaxMapBytes), PageSize: 100},
			IdleTTL:        24 * time.Hour,
			Presence:       PresenceConfig{MaxClients: 100, Timeout: 500 * time.Millisecond, Cache: time.Second, Busiest: 10, BusiestInterval: 10 * time.Second},
		},
		HTTP: HTTPConfig{
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second, // a 30 s CPU profile must fit
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
			RatePerAddress:    50,
			BurstPerAddress:   100,
		},
		WebSocket: WebSocketConfig{
			Path:               "/connection/websocket",
			MaxMessageBytes:    128 << 10, // an SDK resubscribes everything in one message on reconnect
			MaxHandshakeBytes:  16 << 10,  // browsers send a few hundred bytes; cookies may add a few KiB
			PingInterval:       25 * time.Second,
			PongTimeout:        10 * time.Second,
			ConnectTimeout:     10 * time.Second,
			WriteTimeout:       10 * time.Second,
			SoftQueueBytes:     256 << 10,
			MaxQueueBytes:      1 << 20,
			StallTimeout:       15 * time.Second,
			MaxSubscriptions:   512,
			MaxFramesPerSecond: 1000,
			// Generous: many phones share an address behind carrier NAT.
			MaxConnectionsPerAddress:    10000,
			UpgradesPerSecondPerAddress: 1000,
			UpgradesBurstPerAddress:     5000,
			CommandsPerSecond:           100,
			CommandsBurst:               1024,
			Deflate:                     DeflateConfig{Enabled: true, MinBytes: 128, Level: 6},
		},
		Auth: AuthConfig{Anonymous: true, Leeway: 5 * time.Second},
		Bets: bets.DefaultConfig(),
		Overload: OverloadConfig{
			ConflateAfter: 20 * time.Millisecond,
			DeliverAll:    []string{"bets:"},
			UnreadyAfter:  time.Second,
		},
		Cluster: cluster.DefaultConfig(),
		TLS:     TLSConfig{ReloadCheck: time.Second, MaxHandshakes: 256},
	}
}

// validateValues reports every invalid value, each error reading
// "<yaml path>: <message>" (Validate looks the path up to name the line or
// variable that set it).
func (c *Config) validateValues() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Listen == "" {
		bad("listen", "required (host:port)")
	} else if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q has no port", c.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("listen", "%q has no valid port", c.Listen)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if d := c.Cluster.Drain; c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive")
	} else if c.ShutdownTimeout < d.LBDelay+d.Period {
		bad("shutdown_timeout", "%v is less than cluster.drain.lb_delay + cluster.drain.period (%v + %v)", c.ShutdownTimeout, d.LBDelay, d.Period)
	}
	if t := c.HTTP.OperatorToken; t != "" && len(t) < minOperatorToken {
		bad("http.operator_token", "shorter than %d bytes (generate one with: openssl rand -base64 32)", minOperatorToken)
	}
	if err := c.Kafka.Validate("kafka"); err != nil {
		errs = append(errs, err)
	}
	if err := c.Ingest.Validate("ingest"); err != nil {
		errs = append(errs, err)
	}
	ch := c.Channels
	if ch.HistorySize < 0 || ch.HistorySize > 10_000 {
		bad("channels.history_size", "%d is outside 0..10000", ch.HistorySize)
	}
	if ch.MaxNameLength < 1 || ch.MaxNameLength > 1024 {
		bad("channels.max_name_length", "%d is outside 1..1024", ch.MaxNameLength)
	}
	if p := ch.Presence; p.MaxClients < 0 || p.MaxClients > 10_000 {
		bad("channels.presence.max_clients", "%d is outside 0..10000", p.MaxClients)
	}
	if p := ch.Presence; p.Timeout < 10*time.Millisecond || p.Timeout > 10*time.Second {
		bad("channels.presence.timeout", "must be between 10ms and 10s")
	}
	if p := ch.Presence; p.Busiest < 0 || p.Busiest > 100 {
		bad("channels.presence.busiest", "%d is outside 0..100", p.Busiest)
	}
	if p := ch.Presence; p.Busiest > 0 && p.BusiestInterval < time.Second {
		bad("channels.presence.busiest_interval", "must be at least 1s")
	}
	if p := ch.Presence; p.Cache < 0 {
		bad("channels.presence.cache", "must not be negative (0: no cache)")
	}
	if ch.MaxChannels < 1 {
		bad("channels.max_channels", "must be at least 1")
	}
	for i, r := range ch.Maps.Rules {
		if r.Prefix == "" || r.Depth < 1 || r.Depth > 8 {
			bad(fmt.Sprintf("channels.maps.rules[%d]", i), "needs a prefix and a depth of 1..8")
		}
	}
	if m := ch.Maps; m.MaxMaps < 1 || m.MaxEntries < 1 || m.MaxBytes < 1<<10 || m.PageSize < 1 || m.PageSize > 10_000 {
		bad("channels.maps", "max_maps and max_entries must be at least 1, max_bytes at least 1KiB, page_size within 1..10000")
	}
	if ch.IdleTTL < 0 {
		bad("channels.idle_ttl", "must not be negative (0 keeps idle channels)")
	}
	if ch.MaxCachedBytes < 1<<10 {
		bad("channels.max_cached_bytes", "must be at least 1KiB")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout}, {"http.read_timeout", c.HTTP.ReadTimeout},
		{"http.write_timeout", c.HTTP.WriteTimeout}, {"http.idle_timeout", c.HTTP.IdleTimeout},
	} {
		if d.v <= 0 {
			bad(d.field, "must be positive")
		}
	}
	if c.HTTP.MaxHeaderBytes < 1<<10 || c.HTTP.MaxHeaderBytes > 1<<20 {
		bad("http.max_header_bytes", "must be between 1KiB and 1MiB")
	}
	if c.HTTP.RatePerAddress < 0 || (c.HTTP.RatePerAddress > 0 && c.HTTP.BurstPerAddress < 1) {
		bad("http.rate_per_address", "must be 0 (no limit) or positive, with http.burst_per_address at least 1")
	}
	seenNS := map[string]bool{}
	for i, ns := range c.Channels.Namespaces {
		field := fmt.Sprintf("channels.namespaces[%d]", i)
		switch {
		case ns.Name == "" || strings.ContainsAny(ns.Name, ":#*>"):
			bad(field+".name", "%q: want a namespace, a channel name's first segment", ns.Name)
		case seenNS[ns.Name]:
			bad(field+".name", "%q listed twice", ns.Name)
		}
		seenNS[ns.Name] = true
		switch ns.Read {
		case readAnyone, readAuthenticated, readOwner, readToken:
		default:
			bad(field+".read", "%q is not anyone, authenticated, owner or token", ns.Read)
		}
	}
	ws := c.WebSocket
	if !strings.HasPrefix(ws.Path, "/") || strings.HasPrefix(ws.Path, "/v1/") {
		bad("websocket.path", "%q must start with / and not be under /v1/", ws.Path)
	}
	if ws.MaxMessageBytes < 1<<10 {
		bad("websocket.max_message_bytes", "must be at least 1KiB")
	}
	if ws.MaxConnections < 0 || ws.MaxConnectionsPerAddress < 0 {
		bad("websocket.max_connections", "max_connections and max_connections_per_address must be 0 or positive")
	}
	if ws.UpgradesPerSecondPerAddress < 0 || ws.UpgradesPerSecondPerAddress > 0 && ws.UpgradesBurstPerAddress < 1 {
		bad("websocket.upgrades_per_second_per_address", "must be 0 (no bound) or positive, with websocket.upgrades_burst_per_address at least 1")
	}
	if ws.MaxFramesPerSecond < 0 {
		bad("websocket.max_frames_per_second", "must be 0 (no bound) or positive")
	}
	if ws.CommandsPerSecond < 0 || ws.CommandsPerSecond > 0 && ws.CommandsBurst < ws.MaxSubscriptions+2 {
		bad("websocket.commands_per_second", "must be 0 (no bound) or positive, with websocket.commands_burst at least websocket.max_subscriptions + 2 (a reconnect sends connect and every subscribe at once)")
	}
	if ws.MaxHandshakeBytes < 1<<10 || ws.MaxHandshakeBytes > 1<<20 {
		bad("websocket.max_handshake_bytes", "must be between 1KiB and 1MiB")
	}
	if ws.PingInterval < 0 || (ws.PingInterval > 0 && ws.PingInterval < time.Second) {
		bad("websocket.ping_interval", "must be 0 (off) or at least 1s")
	}
	if ws.PingInterval > 0 && ws.PongTimeout <= 0 {
		bad("websocket.pong_timeout", "must be positive when pings are on")
	}
	if ws.ConnectTimeout <= 0 {
		bad("websocket.connect_timeout", "must be positive")
	}
	if ws.WriteTimeout <= 0 {
		bad("websocket.write_timeout", "must be positive")
	}
	if ws.SoftQueueBytes < 4<<10 {
		bad("websocket.soft_queue_bytes", "must be at least 4KiB")
	}
	if ws.MaxQueueBytes < 2*ws.SoftQueueBytes {
		bad("websocket.max_queue_bytes", "must be at least twice websocket.soft_queue_bytes")
	}
	if int64(c.Ingest.MaxValueBytes)+4096 > int64(ws.MaxQueueBytes) {
		bad("ingest.max_value_bytes", "must be below websocket.max_queue_bytes minus 4KiB, or one update disconnects every subscriber")
	}
	if ws.StallTimeout < time.Second {
		bad("websocket.stall_timeout", "must be at least 1s")
	}
	if ws.MaxSubscriptions < 1 {
		bad("websocket.max_subscriptions", "must be at least 1")
	}
	if ws.Writers < 0 {
		bad("websocket.writers", "must be 0 (one per core but one) or more")
	}
	if ws.Deflate.Level < 1 || ws.Deflate.Level > 9 {
		bad("websocket.deflate.level", "%d is outside 1..9", ws.Deflate.Level)
	}
	if err := c.Bets.Validate("bets"); c.Bets.Enabled && err != nil {
		errs = append(errs, err)
	}
	if c.Auth.Leeway < 0 {
		bad("auth.leeway", "must not be negative")
	}
	if c.Overload.ConflateAfter < 0 || c.Overload.UnreadyAfter < 0 {
		bad("overload", "conflate_after and unready_after must not be negative")
	}
	if ws.Deflate.MinBytes < 0 {
		bad("websocket.deflate.min_bytes", "must not be negative")
	}
	if err := c.Cluster.Validate("cluster"); err != nil {
		errs = append(errs, err)
	}
	if err := c.TLS.Validate("tls"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DefaultNode returns node, or the host name when node is "" (node: "" in
// the file, EDGERELAY_NODE=""): the node name in logs, connect replies,
// bet records and the cluster is never empty.
func DefaultNode(node string) string {
	if node != "" {
		return node
	}
	if host, err := os.Hostname(); err == nil && host != "" {
		return host
	}
	return "edgerelay"
}

// ByteSize is a size in bytes that reads "65536", "64KiB", "1MiB".
type ByteSize = units.ByteSize

// ParseByteSize parses s as a ByteSize.
func ParseByteSize(s string) (ByteSize, error) { return units.ParseByteSize(s) }
