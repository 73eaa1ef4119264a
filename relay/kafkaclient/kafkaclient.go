// Package kafkaclient turns edgerelay's broker settings (seed brokers,
// client id, TLS, SASL) into franz-go client options, so that the ingest
// consumer and later producers connect the same way. It holds no state.
package kafkaclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Config holds broker connection settings. YAML keys are given in tags;
// docs/configuration.md documents each.
type Config struct {
	Brokers     []string      `yaml:"brokers"`
	ClientID    string        `yaml:"client_id"`
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Rack is this node's rack (zone) for Kafka's fetch-from-follower
	// (KIP-392): with a broker-side replica selector
	// (replica.selector.class=RackAwareReplicaSelector), each node reads
	// from a replica in its own rack instead of every node reading the
	// partition leaders. "": the leaders.
	Rack string     `yaml:"rack"`
	TLS  TLSConfig  `yaml:"tls"`
	SASL SASLConfig `yaml:"sasl"`
}

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASLConfig selects a SASL mechanism: "" (none), "plain", "scram-sha-256"
// or "scram-sha-512".
type SASLConfig struct {
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// DefaultConfig is a local broker without TLS or SASL.
func DefaultConfig() Config {
	return Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "edgerelay", DialTimeout: 5 * time.Second}
}

// Validate checks c. Each error reads "<prefix>.<key>: <message>" (prefix
// e.g. "kafka"), key a YAML path under prefix, so that the relay can name
// the line or variable that set it.
func (c Config) Validate(prefix string) error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, fmt.Errorf("%s.brokers: at least one seed broker is required", prefix))
	}
	for i, b := range c.Brokers {
		if b == "" || strings.ContainsAny(b, " /") {
			errs = append(errs, fmt.Errorf("%s.brokers[%d]: %q is not host:port", prefix, i, b))
		}
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s.dial_timeout: must not be negative", prefix))
	}
	switch strings.ToLower(c.SASL.Mechanism) {
	case "":
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.SASL.Username == "" {
			errs = append(errs, fmt.Errorf("%s.sasl.username: required with mechanism %q", prefix, c.SASL.Mechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.sasl.mechanism: %q is not one of plain, scram-sha-256, scram-sha-512", prefix, c.SASL.Mechanism))
	}
	if !c.TLS.Enabled && (c.TLS.CAFile != "" || c.TLS.CertFile != "") {
		errs = append(errs, fmt.Errorf("%s.tls.enabled: files are set but TLS is not enabled", prefix))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("%s.tls.cert_file: cert_file and key_file go together", prefix))
	}
	return errors.Join(errs...)
}

// Opts returns the franz-go options for c: seed brokers, client id, dial
// timeout, TLS and SASL. Callers add their own consume or produce options.
//
// The client does not push its metrics to the brokers (KIP-714): the
// relay exports its own, and each push built a gzip compressor, the
// largest allocation of an idle relay's Kafka client after fetches.
func (c Config) Opts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.DisableClientMetrics()}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.DialTimeout > 0 {
		opts = append(opts, kgo.DialTimeout(c.DialTimeout))
	}
	if c.Rack != "" {
		opts = append(opts, kgo.Rack(c.Rack))
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	a := c.SASL
	switch strings.ToLower(a.Mechanism) {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: a.Username, Pass: a.Password}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: a.Username, Pass: a.Password}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: a.Username, Pass: a.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

func (t TLSConfig) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafkaclient: tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafkaclient: tls.ca_file: no PEM certificates in %s", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafkaclient: tls.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
