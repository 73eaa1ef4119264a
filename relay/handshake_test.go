package relay_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/edgerelay/edgerelay/relay"
)

func upgradeRequest(path, extraHeaders string) string {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n" + extraHeaders + "\r\n"
}

// TestHandshakeBounds: an upgrade request past websocket.max_handshake_bytes
// is answered 431 as soon as the limit is passed, without the relay reading
// (or holding) the rest; a client's first message sent in the same packet
// as its upgrade request is not lost. A bystander keeps receiving.
func TestHandshakeBounds(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:hs:1"
	bystander := dial(t, r.url())
	bystander.connect()
	bystander.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	bystander.mustNext()

	t.Run("header too large", func(t *testing.T) {
		for _, shape := range []string{"one long line", "many headers"} {
			nc, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			req := strings.TrimSuffix(upgradeRequest("/connection/websocket", ""), "\r\n")
			io.WriteString(nc, req)
			// Far more than the 16 KiB limit, and never finished: the
			// relay must answer on its own.
			go func() {
				chunk := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
				if shape == "one long line" {
					chunk = strings.Repeat("a", 1000)
				}
				for i := 0; i < 1000; i++ {
					if _, err := io.WriteString(nc, chunk); err != nil {
						return
					}
				}
			}()
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatalf("%s: %v", shape, err)
			}
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("%s: status %d, want 431", shape, resp.StatusCode)
			}
		}
	})

	t.Run("message right behind the request", func(t *testing.T) {
		nc, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		var frame strings.Builder
		wsutil.WriteClientText(&frame, []byte(`{"id":1,"connect":{}}`))
		io.WriteString(nc, upgradeRequest("/connection/websocket", "")+frame.String()) // one write
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(payload), `"connect":{`) {
			t.Fatalf("first message %s, want the connect reply", payload)
		}
	})

	value := `{"after":"handshakes"}`
	produce(t, prod, "odds", ch, value)
	if _, data, _, ok := pubOf(bystander.mustNext()); !ok || data["after"] != "handshakes" {
		t.Fatalf("bystander got %v", data)
	}
	if _, body := r.get(t, "/metrics"); metric(body, "edgerelay_handshake_errors_total") < 2 {
		t.Errorf("handshake errors not counted:\n%s", grep(body, "handshake"))
	}
}

// TestHTTPIdleTimeout: a keep-alive connection left idle after one request
// is closed after http.idle_timeout (each one holds a file descriptor).
func TestHTTPIdleTimeout(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.HTTP.IdleTimeout = 300 * time.Millisecond
	r := startRelay(t, cfg)
	nc, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The server must close the idle connection on its own, long before
	// this deadline.
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %d bytes, err %v; want EOF from the server", n, err)
	}
}

// TestStrictHandshake: upgrade requests RFC 6455 does not allow are
// refused with 400 before any WebSocket state exists.
func TestStrictHandshake(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	good := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	for _, tt := range []struct {
		name  string
		extra string // headers after a good request's; replaces the key when key is set
		key   string
		want  int
	}{
		{name: "good", want: http.StatusSwitchingProtocols},
		{name: "key not base64", key: "not base64!!", want: http.StatusBadRequest},
		{name: "key of 24 characters, not base64", key: "!!!!!!!!!!!!!!!!!!!!!!==", want: http.StatusBadRequest},
		{name: "key of 15 bytes", key: base64.StdEncoding.EncodeToString([]byte("0123456789abcde")), want: http.StatusBadRequest},
		{name: "key twice", extra: "Sec-WebSocket-Key: " + good + "\r\n", want: http.StatusBadRequest},
		{name: "NUL in a header", extra: "X-Evil: a\x00b\r\n", want: http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := upgradeRequest("/connection/websocket", tt.extra)
			if tt.key != "" {
				req = strings.Replace(req, good, tt.key, 1)
			}
			nc, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			io.WriteString(nc, req)
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestRESTRateLimit: past http.rate_per_address an address gets 429 with
// Retry-After; another address is not held back.
func TestRESTRateLimit(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.HTTP.RatePerAddress, cfg.HTTP.BurstPerAddress = 0.01, 5 // no refill to speak of during the test
	r := startRelay(t, cfg)
	get := func(from string) *http.Response {
		t.Helper()
		cl := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}}
		resp, err := cl.Get("http://" + r.addr + "/v1/channels?prefix=odds:")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := 0; i < 5; i++ {
		if resp := get("127.0.0.1"); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	if resp := get("127.0.0.1"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("request past the burst: %s, Retry-After %q; want 429 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if resp := get("127.0.0.2"); resp.StatusCode != http.StatusOK {
		t.Fatalf("another address: %s", resp.Status)
	}
	if _, body := r.get(t, "/metrics"); metric(body, "edgerelay_http_rate_limited_total") != 1 {
		t.Errorf("rate limit not counted:\n%s", grep(body, "rate_limited"))
	}
}

// TestConnectionLimits: past websocket.max_connections, or
// max_connections_per_address from one address, or
// upgrades_per_second_per_address, an upgrade is answered 503 with
// Retry-After, counted by reason; a closed connection frees its slot.
func TestConnectionLimits(t *testing.T) {
	dialFrom := func(t *testing.T, r *testRelay, from string) (*http.Response, net.Conn) {
		t.Helper()
		nc, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		io.WriteString(nc, upgradeRequest("/connection/websocket", ""))
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp, nc
	}
	for _, tt := range []struct {
		name   string
		set    func(*relay.Config)
		from   []string // one connection each, in order
		want   []int
		reason string
	}{
		{"node", func(c *relay.Config) { c.WebSocket.MaxConnections = 2 },
			[]string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, []int{101, 101, 503}, "node_limit"},
		{"address", func(c *relay.Config) { c.WebSocket.MaxConnectionsPerAddress = 2 },
			[]string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"}, []int{101, 101, 503, 101}, "address_limit"},
		{"rate", func(c *relay.Config) {
			c.WebSocket.UpgradesPerSecondPerAddress, c.WebSocket.UpgradesBurstPerAddress = 0.001, 2
		},
			[]string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"}, []int{101, 101, 503, 101}, "address_rate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kafka := newKafka(t)
			cfg := testConfig(kafka.ListenAddrs())
			tt.set(&cfg)
			r := startRelay(t, cfg)
			var first net.Conn
			for i, from := range tt.from {
				resp, nc := dialFrom(t, r, from)
				if resp.StatusCode != tt.want[i] {
					t.Fatalf("connection %d from %s: %s, want %d", i, from, resp.Status, tt.want[i])
				}
				if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
					t.Fatal("503 without Retry-After")
				}
				if i == 0 {
					first = nc
				}
			}
			if _, body := r.get(t, "/metrics"); metric(body, `edgerelay_connections_refused_total{reason="`+tt.reason+`"}`) != 1 {
				t.Errorf("refusal not counted:\n%s", grep(body, "refused"))
			}
			if tt.name == "rate" {
				return // the rate does not come back when a connection closes
			}
			first.Close()
			checkFor(t, 10*time.Second, func() error {
				if resp, _ := dialFrom(t, r, tt.from[0]); resp.StatusCode != 101 {
					return fmt.Errorf("after a close: %s", resp.Status)
				}
				return nil
			})
		})
	}
}
