package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
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
	addr, _ := startDevKafka(t, opts)
	return addr
}

// startDevKafka is startDev that also returns the embedded Kafka's address.
func startDevKafka(t *testing.T, opts Options) (addr, kafka string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.Listen = ln.Addr().String()
	cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = 0, 0 // a test relay stops at once (drain_test.go times drains)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan string, 1)
	go func() {
		done <- Run(ctx, cfg, opts, ln, slog.New(slog.NewTextHandler(io.Discard, nil)), func(k string) { started <- k })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case kafka = <-started:
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("dev mode did not start: %v", err)
	}
	return ln.Addr().String(), kafka
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

// TestDevBets: dev mode hands out demo tokens; a bet placed with one on an
// open market at its current price is taken into Kafka, and the simulated
// bookmaker's acceptance and settlement come back on the bettor's personal
// channel, over the same socket.
func TestDevBets(t *testing.T) {
	opts := Options{Sim: DefaultSimConfig(), SettleAfter: 200 * time.Millisecond}
	opts.Sim.Rate, opts.Sim.Matches = 50, 2
	addr := startDev(t, opts)
	resp, err := http.Get("http://" + addr + "/v1/dev/token?user=tester")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token, User    string
		ResultsChannel string `json:"results_channel"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.Token == "" || tok.User != "tester" || tok.ResultsChannel != "bets:#tester" {
		t.Fatalf("token endpoint: %+v", tok)
	}
	conn, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/connection/websocket")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wsutil.WriteClientText(conn, []byte(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`+"\n"+`{"id":2,"subscribe":{"channel":%q}}`, tok.Token, tok.ResultsChannel)))
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	type reply struct {
		ID  int
		RPC *struct{ Data struct{ Topic string } }
		Err *struct {
			Code    int
			Message string
		} `json:"error"`
		Push *struct {
			Channel string
			Pub     struct{ Data BetResult }
		}
	}
	read := func(until func(reply) bool) {
		t.Helper()
		for {
			msg, err := wsutil.ReadServerText(conn)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(msg), "\n") {
				var r reply
				json.Unmarshal([]byte(line), &r)
				if r.ID == 2 && r.Err != nil {
					t.Fatalf("subscribe to %s: %s", tok.ResultsChannel, line)
				}
				if until(r) {
					return
				}
			}
		}
	}
	read(func(r reply) bool { return r.ID == 2 })

	// A goal can suspend the market or move its price between the look-up
	// and the bet: then bet again.
	for attempt := 3; ; attempt++ {
		if attempt == 10 {
			t.Fatal("no bet settled in 7 attempts")
		}
		channel, sel := openPrice(t, addr)
		betID := fmt.Sprintf("dev-%d", attempt)
		wsutil.WriteClientText(conn, []byte(fmt.Sprintf(`{"id":%d,"rpc":{"method":"bet","data":{"bet_id":%q,"channel":%q,"selection":%q,"odds":%v,"stake":2}}}`,
			attempt, betID, channel, sel.ID, sel.Odds)))
		var placed bool
		read(func(r reply) bool {
			switch {
			case r.ID != attempt:
				return false
			case r.RPC != nil && r.RPC.Data.Topic == "bets":
				placed = true
			case r.Err == nil || r.Err.Code != 1002:
				t.Fatalf("bet reply: %+v", r)
			}
			return true
		})
		if !placed {
			continue
		}
		var steps []string
		read(func(r reply) bool {
			if r.Push == nil || r.Push.Channel != tok.ResultsChannel || r.Push.Pub.Data.BetID != betID {
				return false
			}
			steps = append(steps, r.Push.Pub.Data.Type)
			return r.Push.Pub.Data.Type != "accepted"
		})
		switch strings.Join(steps, " ") {
		case "accepted settled":
			return
		case "rejected":
			continue
		default:
			t.Fatalf("bookmaker's answers on %s: %v, want accepted then settled", tok.ResultsChannel, steps)
		}
	}
}

// openPrice returns an open market's channel and one of its selections at
// its current price, from the relay's cache.
func openPrice(t *testing.T, addr string) (string, Selection) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r, err := http.Get("http://" + addr + "/v1/channels?prefix=odds:")
		if err != nil {
			continue
		}
		var list struct {
			Channels []struct {
				Channel string
				Data    MarketUpdate
			}
		}
		json.NewDecoder(r.Body).Decode(&list)
		r.Body.Close()
		for _, c := range list.Channels {
			if c.Data.Status == "open" && len(c.Data.Selections) > 0 {
				return c.Channel, c.Data.Selections[0]
			}
		}
	}
	t.Fatal("no open market")
	return "", Selection{}
}
