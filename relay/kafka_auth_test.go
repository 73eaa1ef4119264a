package relay_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

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
// its certificate as a PEM CA file.
func selfSignedTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, caFile
}
