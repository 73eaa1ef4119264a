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

	"fmt"
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

// TestDevBets: dev mode hands out demo tokens, and a bet placed with one on
// a live market is accepted with its Kafka position.
func TestDevBets(t *testing.T) {
	opts := Options{Sim: DefaultSimConfig()}
	opts.Sim.Rate, opts.Sim.Matches = 50, 2
	addr := startDev(t, opts)
	resp, err := http.Get("http://" + addr + "/v1/dev/token?user=tester")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token, User string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.Token == "" || tok.User != "tester" {
		t.Fatalf("token endpoint: %+v", tok)
	}
	var market string
	for deadline := time.Now().Add(20 * time.Second); market == ""; {
		r, err := http.Get("http://" + addr + "/v1/channels?prefix=odds:")
		if err == nil {
			var list struct{ Channels []struct{ Channel string } }
			json.NewDecoder(r.Body).Decode(&list)
			r.Body.Close()
			if len(list.Channels) > 0 {
				market = list.Channels[0].Channel
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no market")
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/connection/websocket")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmds := fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`+"\n"+`{"id":2,"rpc":{"method":"bet","data":{"bet_id":"dev-1","channel":%q,"selection":"home","odds":2,"stake":1}}}`, tok.Token, market)
	wsutil.WriteClientText(conn, []byte(cmds))
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		msg, err := wsutil.ReadServerText(conn)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(msg), "\n") {
			var rep struct {
				ID    int
				RPC   *struct{ Data struct{ Topic string } }
				Error *struct{ Code int }
			}
			json.Unmarshal([]byte(line), &rep)
			switch {
			case rep.ID != 2:
			case rep.RPC != nil && rep.RPC.Data.Topic == "bets":
				return
			case rep.Error != nil && rep.Error.Code == 1002:
				t.Skip("the market happened to be suspended") // the simulator suspends markets
			default:
				t.Fatalf("bet reply: %s", line)
			}
		}
	}
}
