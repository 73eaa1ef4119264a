package relay_test

import (
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgerelay/edgerelay/relay/kafkaclient"
)

// TestKafkaAuth ingests through each SASL mechanism kfake supports, and
// through TLS with SCRAM, configured the way an operator would.
func TestKafkaAuth(t *testing.T) {
	serverTLS, caFile := selfSignedTLS(t)
	tests := []struct {
		name      string
		mechanism string // as kfake names it
		config    string // as kafka.sasl.mechanism names it
		tls       bool
	}{
		{"plain", "PLAIN", "plain", false},
		{"scram-sha-256", "SCRAM-SHA-256", "scram-sha-256", false},
		{"scram-sha-512", "SCRAM-SHA-512", "scram-sha-512", false},
		{"tls+scram-sha-512", "SCRAM-SHA-512", "scram-sha-512", true},
		{"tls only", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []kfake.Opt
			kc := kafkaclient.DefaultConfig()
			if tt.mechanism != "" {
				opts = append(opts, kfake.EnableSASL(), kfake.Superuser(tt.mechanism, "relay", "s3cret"))
				kc.SASL = kafkaclient.SASLConfig{Mechanism: tt.config, Username: "relay", Password: "s3cret"}
			}
			if tt.tls {
				opts = append(opts, kfake.TLS(serverTLS))
				kc.TLS = kafkaclient.TLSConfig{Enabled: true, CAFile: caFile}
			}
			kafka := newKafka(t, opts...)
			kc.Brokers = kafka.ListenAddrs()
			cfg := testConfig(kc.Brokers)
			cfg.Kafka = kc
			r := startRelay(t, cfg)
			kopts, err := kc.Opts()
			if err != nil {
				t.Fatal(err)
			}
			prod := newProducer(t, kc.Brokers, kopts...)
			r.waitCached(t, "odds:auth", produce(t, prod, "odds", "odds:auth", `{"ok":true}`))
			r.waitReady(t)
		})
	}
}

// selfSignedTLS returns a server TLS config for 127.0.0.1 and the path of
// its CA's certificate.
func selfSignedTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.issue(t, certFile, keyFile, 1)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, ca.file
}

// TestKafkaRack: with kafka.rack set the node consumes as without it.
// kfake selects no replicas, so reading from a follower is not tested here.
func TestKafkaRack(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Kafka.Rack = "zone-a"
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	r.waitCached(t, "odds:rack", produce(t, prod, "odds", "odds:rack", `{"ok":true}`))
}
