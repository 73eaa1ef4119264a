package dev

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestSimulatorPopUps: with PopUpEvery set, the simulator opens a match's
// pop-up market (a valid market record, keyed by its match like the
// match's other markets) and later closes it with a tombstone (a null
// value), each a priority record; the match channel lists the market
// while it is open.
func TestSimulatorPopUps(t *testing.T) {
	kafka, err := StartKafka(0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	cfg := DefaultSimConfig()
	cfg.Rate, cfg.Matches, cfg.PopUpEvery = 20, 1, 20*time.Millisecond
	sim, err := NewSimulator(kafka.ListenAddrs(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sim.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	const popUp = "odds:football:epl:match-100:next-corner"
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.ConsumeTopics("odds"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var opened, closed, listed bool
	deadline, stop := context.WithTimeout(ctx, 20*time.Second)
	defer stop()
	for !(opened && closed && listed) {
		fs := cl.PollFetches(deadline)
		if deadline.Err() != nil {
			t.Fatalf("pop-up market: opened %v, closed %v, listed in the match channel %v", opened, closed, listed)
		}
		fs.EachRecord(func(r *kgo.Record) {
			ch := header(r, "channel")
			switch {
			case ch == popUp && r.Value == nil:
				closed = opened && string(r.Key) == "match-100" && header(r, "priority") == "1"
			case ch == popUp:
				var u MarketUpdate
				if json.Unmarshal(r.Value, &u) != nil || u.Market != "next-corner" || u.Status != "open" || len(u.Selections) != 2 || u.Selections[0].Odds < 1.01 {
					t.Fatalf("pop-up record %s", r.Value)
				}
				opened = string(r.Key) == "match-100" && header(r, "priority") == "1"
			case strings.HasPrefix(ch, "match:"):
				listed = listed || bytes.Contains(r.Value, []byte(`"market":"next-corner"`))
			}
		})
	}
	if !strings.Contains(strings.Join(sim.Markets(), " "), popUp) {
		t.Errorf("Markets() leaves out the pop-up market %s (the bookmaker would refuse its bets)", popUp)
	}
}

// TestVendoredSDK: the SDK dev mode serves at /centrifuge.js is the
// browser build of the centrifuge package tests/js locks, byte for byte.
func TestVendoredSDK(t *testing.T) {
	dist := filepath.Join("..", "..", "tests", "js", "node_modules", "centrifuge", "dist", "centrifuge.js")
	want, err := os.ReadFile(dist)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip("tests/js/node_modules missing; run scripts/test")
	}
	if !bytes.Equal(centrifugeJS, want) {
		t.Fatalf("relay/dev/centrifuge.js differs from %s: copy it again (cp %s relay/dev/)", dist, dist)
	}
	lock, err := os.ReadFile(filepath.Join("..", "..", "tests", "js", "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(lock, []byte(`"node_modules/centrifuge": {
      "version": "5.8.0"`)) {
		t.Errorf("tests/js locks another centrifuge than 5.8.0: update the board's comment and docs")
	}
}
