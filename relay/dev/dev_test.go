package dev

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
)

// TestRun starts dev mode as "edgerelay dev" does and checks that the
// board is served, the simulator's channels are cached, and they move.
func TestRun(t *testing.T) {
	opts := Options{Sim: DefaultSimConfig()}
	opts.Sim.Rate, opts.Sim.Matches = 200, 8
	base := "http://" + startDev(t, opts)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "/connection/websocket") {
		t.Fatalf("board: %d %.200s", code, body)
	}
	// 8 matches: each has a score channel and 2-3 markets.
	var first map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := get("/v1/channels?limit=10000")
		var list struct {
			Channels []struct {
				Channel string          `json:"channel"`
				Data    json.RawMessage `json:"data"`
				Offset  float64         `json:"offset"`
			} `json:"channels"`
		}
		json.Unmarshal([]byte(body), &list)
		offsets := map[string]float64{}
		for _, c := range list.Channels {
			offsets[c.Channel] = c.Offset
			if strings.HasPrefix(c.Channel, "odds:") {
				var u MarketUpdate
				if err := json.Unmarshal(c.Data, &u); err != nil || len(u.Selections) < 2 || u.Selections[0].Odds < 1.01 {
					t.Fatalf("bad market update on %s: %s", c.Channel, c.Data)
				}
			}
		}
		moved := 0
		for ch, off := range offsets {
			if first != nil && off > first[ch] {
				moved++
			}
		}
		switch {
		case first == nil && len(offsets) >= 8*3:
			first = offsets
		case moved >= 5:
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulator feed not flowing: %d channels, %d moved", len(offsets), moved)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDev runs dev mode on an ephemeral port (Kafka on any free port)
// until the test ends and returns the relay's address.
func startDev(t *testing.T, opts Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.Listen = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, opts, ln, slog.New(slog.NewTextHandler(io.Discard, nil)), nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func TestStartKafkaPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = StartKafka(ln.Addr().(*net.TCPAddr).Port, "")
	if err == nil || !strings.Contains(err.Error(), "--kafka-port") {
		t.Fatalf("err = %v, want advice naming --kafka-port", err)
	}
}
