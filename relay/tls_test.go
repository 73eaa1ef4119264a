package relay_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgerelay/edgerelay/relay"
)

// testCA is a certificate authority made for one test; file is its PEM
// certificate (what a client trusts), pool the same for Go clients.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	file string
}

func newTestCA(t testing.TB, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{key: key, pool: x509.NewCertPool(), file: filepath.Join(dir, name+".pem")}
	ca.cert, _ = x509.ParseCertificate(der)
	ca.pool.AddCert(ca.cert)
	writeFile(t, ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// issue writes a leaf certificate for 127.0.0.1 and localhost, with the
// given serial, and its key; each file is replaced by a rename, as a
// renewal would.
func (ca *testCA) issue(t testing.TB, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// withTLS turns tls on in cfg with a certificate (serial 1) from a new CA,
// checked for changes every 100 ms, and returns the CA.
func withTLS(t testing.TB, cfg *relay.Config) *testCA {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ReloadCheck = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), 100*time.Millisecond
	ca.issue(t, cfg.TLS.CertFile, cfg.TLS.KeyFile, 1)
	return ca
}

// startTLSRelay starts a relay with tls on (withTLS) against a new Kafka;
// adjust, if not nil, changes its configuration first.
func startTLSRelay(t *testing.T, adjust func(*relay.Config)) (*testRelay, *kfake.Cluster, *testCA, relay.Config) {
	t.Helper()
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	if adjust != nil {
		adjust(&cfg)
	}
	ca := withTLS(t, &cfg)
	r := startRelay(t, cfg)
	r.useTLS(ca)
	return r, kafka, ca, cfg
}

// servedCert returns the leaf the relay at addr presents, verified
// against pool.
func servedCert(addr string, pool *x509.CertPool) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// TestTLSListener: with tls on, one port serves wss:// (bridged to the
// engine, tls.go) and https://; a plain-HTTP request is answered 400 and
// a client that sends garbage is closed, while a wss subscriber keeps
// receiving.
func TestTLSListener(t *testing.T) {
	r, kafka, _, _ := startTLSRelay(t, nil)
	r.waitReady(t)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:tls-1:1x2"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"n":0}`))

	bystander := r.dial(t)
	bystander.connect()
	bystander.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	if rep := bystander.mustNext(); rep["subscribe"] == nil {
		t.Fatalf("subscribe over wss: %v", rep)
	}
	n := 0
	nextPub := func() {
		t.Helper()
		n++
		produce(t, prod, "odds", ch, fmt.Sprintf(`{"n":%d}`, n))
		for {
			if _, data, _, ok := pubOf(bystander.mustNext()); ok && data["n"] == float64(n) {
				return
			}
		}
	}
	nextPub()

	hostile := []struct {
		name string
		send string
		want string // in the reply; "" = closed without one
	}{
		{"plain HTTP", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"},
		{"plain upgrade", "GET /connection/websocket HTTP/1.1\r\nHost: x\r\n\r\n", "speaks TLS"},
		{"garbage record", "\x16\x03\x01\x00\x05hello" + strings.Repeat("\x00", 64), ""},
		{"not TLS at all", strings.Repeat("\xff", 600), ""},
	}
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, h.send)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) { // reset: closed with input unread
				t.Fatalf("not closed: %v (read %q)", err, got)
			}
			if h.want != "" && !strings.Contains(string(got), h.want) {
				t.Errorf("reply %q, want it to contain %q", got, h.want)
			}
			nextPub()
		})
	}
	if code, body := r.get(t, "/metrics"); code != 200 || metric(body, "edgerelay_tls_handshake_errors_total") < float64(len(hostile)) {
		t.Errorf("/metrics over https: %d, tls handshake errors %v", code, metric(body, "edgerelay_tls_handshake_errors_total"))
	}
}

// TestTLSCertificateReload: a certificate replaced on disk is served to
// the next handshake; a pair that does not load is counted and the
// previous one kept.
func TestTLSCertificateReload(t *testing.T) {
	r, _, ca, cfg := startTLSRelay(t, nil)
	waitSerial := func(want int64) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			c, err := servedCert(r.addr, ca.pool)
			if err != nil {
				return err
			}
			if c.SerialNumber.Int64() != want {
				return fmt.Errorf("serial %v served, want %d", c.SerialNumber, want)
			}
			return nil
		})
	}
	waitSerial(1)
	ca.issue(t, cfg.TLS.CertFile, cfg.TLS.KeyFile, 2)
	waitSerial(2)

	// A key that is not the certificate's: refused, serial 2 still served.
	other := newTestCA(t, t.TempDir(), "other")
	other.issue(t, filepath.Join(t.TempDir(), "c.pem"), cfg.TLS.KeyFile+".other", 9)
	b, _ := os.ReadFile(cfg.TLS.KeyFile + ".other")
	writeFile(t, cfg.TLS.KeyFile, b)
	checkFor(t, 10*time.Second, func() error {
		servedCert(r.addr, ca.pool) // a handshake runs the check
		_, body := r.get(t, "/metrics")
		if v := metric(body, `edgerelay_tls_certificate_reloads_total{result="error"}`); v < 1 {
			return fmt.Errorf("reload errors %v", v)
		}
		return nil
	})
	waitSerial(2)
	_, body := r.get(t, "/metrics")
	if ok := metric(body, `edgerelay_tls_certificate_reloads_total{result="ok"}`); ok != 2 {
		t.Errorf("reloads ok %v, want 2 (the first load and serial 2)", ok)
	}
	if exp := metric(body, "edgerelay_tls_certificate_expiry_timestamp_seconds"); exp < float64(time.Now().Unix()) {
		t.Errorf("expiry gauge %v", exp)
	}
}

// TestTLSSlowClient: a wss client that never reads is dropped by the
// engine's slow-client rules, and its bridge (two goroutines, three
// descriptors) goes with it.
func TestTLSSlowClient(t *testing.T) {
	r, kafka, _, _ := startTLSRelay(t, func(cfg *relay.Config) {
		// The bridge's own deadline (stall_timeout + write_timeout from its
		// blocked write) must come well after the engine's verdict (the
		// stall, measured from the first heartbeat sweep, 1 s apart, that
		// finds the queue waiting): with both at 1 s the bridge often won
		// and the client was never counted as slow.
		cfg.WebSocket.StallTimeout, cfg.WebSocket.WriteTimeout = time.Second, 5*time.Second
		cfg.Ingest.MaxValueBytes = 64 << 10
	})
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:tls-slow:1x2"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"n":0}`))

	conn, _, _, err := ws.Dialer{TLSConfig: r.tls}.Dial(t.Context(), r.url())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sub := &wsClient{t: t, conn: conn}
	sub.connect()
	sub.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	sub.mustNext()
	// From here the client reads nothing.
	bridges := func() float64 {
		_, body := r.get(t, "/metrics")
		return metric(body, "edgerelay_tls_bridged_connections")
	}
	if b := bridges(); b != 1 {
		t.Fatalf("bridged connections %v, want 1", b)
	}
	big := `{"pad":"` + strings.Repeat("x", 60<<10) + `"}`
	checkFor(t, 60*time.Second, func() error {
		for range 20 {
			produce(t, prod, "odds", ch, big)
		}
		if b := bridges(); b != 0 {
			return fmt.Errorf("%v bridged connections", b)
		}
		return nil
	})
	_, body := r.get(t, "/metrics")
	if v := metric(body, "edgerelay_slow_disconnects_total"); v != 1 {
		t.Errorf("slow disconnects %v, want 1", v)
	}
}

// TestSDKOverTLS runs the npm centrifuge SDK over wss:// trusting the
// relay's CA (NODE_EXTRA_CA_CERTS), then replaces the certificate on disk
// with one from another CA: the SDK trusting the new CA connects, the one
// trusting only the old CA is refused — the relay serves the new
// certificate without a restart.
func TestSDKOverTLS(t *testing.T) {
	dir := jsTestDir(t)
	r, kafka, ca, cfg := startTLSRelay(t, nil)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:tls-sdk:1x2"
	off := produce(t, prod, "odds", ch, `{"n":1}`)
	r.waitCached(t, ch, off)

	run := func(caFile string) (event map[string]any, exit int) {
		t.Helper()
		cmd := exec.Command("node", "wss.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "EDGERELAY_URL="+r.url(), "CHANNEL="+ch, "NODE_EXTRA_CA_CERTS="+caFile)
		cmd.Stderr = os.Stderr
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		var last map[string]any
		for sc.Scan() {
			json.Unmarshal(sc.Bytes(), &last)
		}
		cmd.Wait()
		return last, cmd.ProcessState.ExitCode()
	}
	if e, code := run(ca.file); code != 0 || e["event"] != "publication" || e["data"].(map[string]any)["n"] != float64(1) {
		t.Fatalf("SDK over wss: exit %d, last event %v", code, e)
	}

	ca2 := newTestCA(t, t.TempDir(), "ca2")
	ca2.issue(t, cfg.TLS.CertFile, cfg.TLS.KeyFile, 2)
	checkFor(t, 10*time.Second, func() error { _, err := servedCert(r.addr, ca2.pool); return err })
	if e, code := run(ca2.file); code != 0 || e["event"] != "publication" {
		t.Errorf("SDK trusting the new CA: exit %d, last event %v", code, e)
	}
	if e, code := run(ca.file); code != 2 || e["event"] != "error" || e["type"] != "transport" {
		t.Errorf("SDK trusting only the old CA: exit %d, last event %v; want a transport error", code, e)
	}
}

// TestTLSHandshakeGate: TLS handshakes in progress are capped on the node
// (tls.max_handshakes) and per address at the upgrade rate, before any TLS
// is read; a refused connection is closed at once and counted, and a wss
// subscriber keeps receiving.
func TestTLSHandshakeGate(t *testing.T) {
	r, kafka, _, _ := startTLSRelay(t, func(cfg *relay.Config) {
		cfg.TLS.MaxHandshakes = 2
		cfg.WebSocket.UpgradesPerSecondPerAddress, cfg.WebSocket.UpgradesBurstPerAddress = 0.001, 20
	})
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:tls-gate:1x2"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"n":0}`))
	bystander := r.dial(t) // from 127.0.0.1, like the /metrics requests
	bystander.connect()
	bystander.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	bystander.mustNext()

	from := func(ip string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closedAtOnce := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}
	refused := func(reason string) float64 {
		// Once a handshake gets a slot again (the refused ones are gone);
		// with two slots, the request's own handshake may still meet
		// the node's limit while the server notices a close: it retries.
		var body string
		checkFor(t, 5*time.Second, func() error {
			cl := &http.Client{Transport: &http.Transport{TLSClientConfig: r.tls}}
			defer cl.CloseIdleConnections()
			resp, err := cl.Get("https://" + r.addr + "/metrics")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			body = string(b)
			return err
		})
		return metric(body, `edgerelay_tls_handshakes_refused_total{reason="`+reason+`"}`)
	}
	// Two silent handshakes from 127.0.0.2 hold both slots...
	stall := []net.Conn{from("127.0.0.2"), from("127.0.0.2")}
	checkFor(t, 5*time.Second, func() error {
		// ...so a third, from elsewhere, is closed before its hello.
		if c := from("127.0.0.3"); !closedAtOnce(c) {
			return errors.New("third handshake not refused")
		}
		return nil
	})
	for _, c := range stall {
		c.Close()
	}
	checkFor(t, 5*time.Second, func() error { // the slots come back
		if v := refused("node_limit"); v < 1 {
			return fmt.Errorf("node_limit refusals %v", v)
		}
		return nil
	})
	// 127.0.0.2 has its burst of 20, then is over its rate. The two
	// stalls took two; it spends the other 18 on handshakes that
	// complete, one after another, so that none meets the node's limit
	// instead (a refusal there takes no token).
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	for range 18 {
		var c *tls.Conn
		checkFor(t, 5*time.Second, func() (err error) { // a slot may still be held by the one before
			c, err = tls.DialWithDialer(d, "tcp", r.addr, &tls.Config{RootCAs: r.tls.RootCAs})
			return err
		})
		c.Close()
	}
	checkFor(t, 5*time.Second, func() error {
		c := from("127.0.0.2")
		defer c.Close()
		if !closedAtOnce(c) {
			return errors.New("handshake past the address rate not refused")
		}
		if v := refused("address_rate"); v < 1 {
			return fmt.Errorf("address_rate refusals %v", v)
		}
		return nil
	})
	produce(t, prod, "odds", ch, `{"n":1}`)
	for {
		if _, data, _, ok := pubOf(bystander.mustNext()); ok && data["n"] == float64(1) {
			break
		}
	}
}
