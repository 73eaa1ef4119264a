package cluster

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures a Node. The zero value of Bind turns gossip off: the
// node runs alone and opens no socket. DefaultConfig documents the other
// defaults.
type Config struct {
	// Name is the node's name in the cluster, unique among its members;
	// "" is refused by New (the relay fills in its node name).
	Name string `yaml:"name"`
	// Bind is the host:port gossip listens on, TCP and UDP; "" turns
	// gossip off. Port 0 picks a free one (tests).
	Bind string `yaml:"bind"`
	// Advertise is the ip:port other members reach this node at; "": the
	// bind address, or with an unspecified bind host (0.0.0.0) the first
	// private address of the host. Port 0: the bound port.
	Advertise string `yaml:"advertise"`
	// Seeds are host:port addresses of members to join. A host name is
	// resolved to every address it has (a Kubernetes headless service
	// names every pod), and the node's own address is skipped.
	Seeds []string `yaml:"seeds"`
	// SecretKey encrypts and authenticates gossip: base64 of 16, 24 or 32
	// bytes (AES-128/192/256), the same on every member. "": plain text.
	SecretKey string `yaml:"secret_key"`
	// PublicURL is the WebSocket URL clients reach this node at, told to
	// the other members; "": derived by the embedder.
	PublicURL string `yaml:"public_url"`
	// RetryInterval is how often a node with no live peer joins its seeds
	// again, and how often it tries to reach members it saw fail (which
	// heals a partition once the link is back).
	RetryInterval time.Duration `yaml:"retry_interval"`
	// UpdateInterval is how often the node gossips its metadata (load
	// figures) when its state has not changed; a state change (ready,
	// draining, ...) goes out within a second. A member not heard from
	// for three intervals is listed as suspect.
	UpdateInterval time.Duration `yaml:"update_interval"`
	// ForgetAfter is how long a dead or left member stays listed (and,
	// if it failed, is retried).
	ForgetAfter time.Duration `yaml:"forget_after"`
	// Drain is how the node hands its clients to the others when it
	// stops; it applies with gossip off too.
	Drain DrainConfig `yaml:"drain"`

	// Memberlist, if set, adjusts the memberlist configuration (based on
	// memberlist.DefaultLANConfig) before the node starts: tests shorten
	// probe intervals with it. Not a configuration key.
	Memberlist func(*memberlist.Config) `yaml:"-"`
}

// DrainConfig times a graceful drain (SIGTERM, or POST /v1/drain in the
// relay): the node announces that it is draining, keeps accepting for
// LBDelay while the load balancer notices, then closes its clients in
// waves spread evenly over Period, so that the other members see a ramp of
// reconnects rather than a storm. Zero values are allowed: 0 LBDelay
// closes at once, 0 Period closes every client in one wave.
type DrainConfig struct {
	LBDelay time.Duration `yaml:"lb_delay"`
	Period  time.Duration `yaml:"period"`
}

// DefaultConfig returns a configuration with gossip off and the intervals
// set.
func DefaultConfig() Config {
	return Config{
		RetryInterval:  10 * time.Second,
		UpdateInterval: 5 * time.Second,
		ForgetAfter:    10 * time.Minute,
		Drain:          DrainConfig{LBDelay: 5 * time.Second, Period: 10 * time.Second},
	}
}

// Enabled reports whether gossip is on (Bind is set).
func (c *Config) Enabled() bool { return c.Bind != "" }

// MaxPublicURLBytes bounds PublicURL, so that the metadata fits in
// memberlist's 512 bytes.
const MaxPublicURLBytes = 256

// Validate reports every invalid field. Each error reads
// "<prefix>.<key>: <message>" ("cluster.bind: ..."), key a YAML path under
// prefix, so that the relay can name the line or variable that set it.
// Name may be empty here (the embedder fills it).
func (c Config) Validate(prefix string) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, field, fmt.Sprintf(format, args...)))
	}
	if c.Bind == "" {
		if len(c.Seeds) > 0 || c.Advertise != "" {
			bad("bind", "required when seeds or advertise are set (without it the node runs alone)")
		}
	} else if _, _, err := splitHostPort(c.Bind); err != nil {
		bad("bind", "%v", err)
	}
	if c.Advertise != "" {
		if host, _, err := splitHostPort(c.Advertise); err != nil {
			bad("advertise", "%v", err)
		} else if _, err := netip.ParseAddr(host); err != nil {
			bad("advertise", "%q: want an IP address and port", c.Advertise)
		}
	}
	for i, s := range c.Seeds {
		if host, port, err := splitHostPort(s); err != nil {
			bad(fmt.Sprintf("seeds[%d]", i), "%v", err)
		} else if host == "" || port == 0 {
			bad(fmt.Sprintf("seeds[%d]", i), "%q: want host:port with a host and a port", s)
		}
	}
	if _, err := decodeKey(c.SecretKey); err != nil {
		bad("secret_key", "%v", err)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		switch {
		case len(c.PublicURL) > MaxPublicURLBytes:
			bad("public_url", "longer than %d bytes", MaxPublicURLBytes)
		case err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "":
			bad("public_url", "%q: want a ws:// or wss:// URL with a host", c.PublicURL)
		}
	}
	if c.RetryInterval < 100*time.Millisecond {
		bad("retry_interval", "must be at least 100ms")
	}
	if c.UpdateInterval < 100*time.Millisecond {
		bad("update_interval", "must be at least 100ms")
	}
	if c.ForgetAfter <= 0 {
		bad("forget_after", "must be positive")
	}
	if c.Drain.LBDelay < 0 {
		bad("drain.lb_delay", "must not be negative (0: no delay)")
	}
	if c.Drain.Period < 0 {
		bad("drain.period", "must not be negative (0: every client at once)")
	}
	return errors.Join(errs...)
}

// splitHostPort splits host:port and checks the port (0 allowed).
func splitHostPort(hostport string) (string, int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want host:port", hostport)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port must be 0..65535", hostport)
	}
	return host, port, nil
}

// decodeKey decodes a base64 gossip key; "" is no key. The error never
// repeats the key.
func decodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not valid base64 (generate one with: openssl rand -base64 32)")
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("decodes to %d bytes; want 16, 24 or 32", len(k))
}
