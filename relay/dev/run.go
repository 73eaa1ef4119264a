package dev

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/ingest"
)

//go:embed board.html
var boardHTML []byte

// centrifugeJS is the npm centrifuge SDK's browser build
// (dist/centrifuge.js of the version tests/js/package-lock.json pins; MIT,
// centrifuge.LICENSE), which the board loads from /centrifuge.js: dev mode
// runs offline. TestVendoredSDK keeps it equal to the locked package's.
//
//go:embed centrifuge.js
var centrifugeJS []byte

// DevMapRule is the map rule dev mode adds (last) to the configuration's:
// every match's markets (odds:<sport>:<league>:<match>:<market>)
// are one map, odds:<sport>:<league>:<match>, which the board subscribes.
var DevMapRule = relay.MapRuleConfig{Prefix: "odds:", Depth: 1}

// favicon is the board's icon, served at /favicon.ico (SVG: every current
// browser takes it there), so the page logs no 404.
var favicon = []byte(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">` +
	`<rect width="32" height="32" rx="7" fill="#0b0f14"/>` +
	`<path d="M6 22l6-7 5 4 9-11" fill="none" stroke="#2ea043" stroke-width="3.5" stroke-linecap="round" stroke-linejoin="round"/></svg>`)

// DevHistorySize is the per-channel history dev mode keeps when the
// configuration leaves channels.history_size at 0 (off), so the SDK's
// history() and gap-free recovery can be tried in the demo.
const DevHistorySize = 100

// Options are dev mode's own settings; the relay's come from Config.
type Options struct {
	// KafkaPort is the embedded broker's port on 127.0.0.1 (0: any free).
	KafkaPort int
	// DataDir persists the broker's topics and records ("": memory only).
	DataDir string
	Sim     SimConfig
	// SettleAfter is how long the simulated bookmaker waits before it
	// settles an accepted bet (0: 4s).
	SettleAfter time.Duration
	// NoBookmaker leaves bets unanswered on the results topic (load tests
	// of the relay alone: the bookmaker reads every bet and writes two
	// results).
	NoBookmaker bool
}

// Run starts the embedded broker, the simulator, the bookmaker (when
// cfg.Bets is enabled) and the relay (cfg, with its Kafka brokers pointed at
// the embedded one) on ln, and blocks until ctx is done. ready, if not nil,
// is called once everything is started.
func Run(ctx context.Context, cfg relay.Config, opts Options, ln net.Listener, log *slog.Logger, ready func(kafkaAddr string)) error {
	cluster, err := StartKafka(opts.KafkaPort, opts.DataDir)
	if err != nil {
		return err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.TLS = relay.DefaultConfig().Kafka.TLS
	cfg.Kafka.SASL = relay.DefaultConfig().Kafka.SASL
	// Demo identity: a fresh HMAC secret per run, tokens from
	// /v1/dev/token, results keyed by user into personal channels.
	secret := make([]byte, 32)
	rand.Read(secret)
	cfg.Auth.HMACSecrets = append(cfg.Auth.HMACSecrets, hex.EncodeToString(secret))
	cfg.Ingest.Topics = append(cfg.Ingest.Topics, ingest.Topic{Name: "results", ChannelTemplate: "bets:#{key}"})
	if cfg.Channels.HistorySize == 0 {
		cfg.Channels.HistorySize = DevHistorySize
	}
	if !slices.Contains(cfg.Channels.Maps.Rules, DevMapRule) {
		cfg.Channels.Maps.Rules = append(slices.Clip(cfg.Channels.Maps.Rules), DevMapRule)
	}

	srv, err := relay.New(cfg, log)
	if err != nil {
		return err
	}
	srv.Handle("GET /v1/dev/token", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if user == "" {
			user = "demo"
		}
		tok, err := auth.SignHS256([]byte(hex.EncodeToString(secret)), map[string]any{"sub": user, "exp": time.Now().Add(24 * time.Hour).Unix()})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"user": user, "token": tok, "results_channel": "bets:#" + user})
	}))
	srv.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(boardHTML)
	}))
	srv.Handle("GET /centrifuge.js", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Write(centrifugeJS)
	}))
	srv.Handle("GET /favicon.ico", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "max-age=86400")
		w.Write(favicon)
	}))
	// edgebench measures memory per idle connection after asking the relay
	// to collect garbage; dev mode serves that one debug endpoint (not
	// pprof) so the README's smoke run needs no EDGERELAY_DEBUG.
	if !cfg.Debug {
		srv.Handle("POST /debug/gc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			runtime.GC()
			debug.FreeOSMemory()
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"status":"collected"}`))
		}))
	}
	sim, err := NewSimulator(brokers, opts.Sim, log.With("component", "simulator"))
	if err != nil {
		return err
	}
	markets := sim.Markets()
	// The board shows these and only these: records on other channels
	// (a benchmark's, one produced by hand) never land in the demo.
	srv.Handle("GET /v1/dev/markets", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string][]string{"markets": markets, "scores": sim.Scores()})
	}))
	simCtx, stopSim := context.WithCancel(ctx)
	defer stopSim()
	var wg sync.WaitGroup
	// The bookmaker answers bets taken by this relay; it is built before
	// the relay serves, so it reads the bets topic from before the first.
	if cfg.Bets.Enabled && !opts.NoBookmaker {
		bcfg := DefaultBookmakerConfig()
		bcfg.BetsTopic = cfg.Bets.Topic
		bcfg.Markets = map[string]bool{}
		for _, m := range markets {
			bcfg.Markets[m] = true
		}
		if opts.SettleAfter > 0 {
			bcfg.SettleAfter = opts.SettleAfter
		}
		book, err := NewBookmaker(ctx, brokers, bcfg, log.With("component", "bookmaker"))
		if err != nil {
			sim.client.Close()
			return err
		}
		wg.Go(func() { book.Run(simCtx) })
	}
	wg.Go(func() { sim.Run(simCtx) })
	log.Info("dev mode: embedded Kafka, odds simulator and bookmaker running",
		"kafka", brokers[0], "matches", opts.Sim.Matches, "rate", opts.Sim.Rate, "bookmaker", cfg.Bets.Enabled && !opts.NoBookmaker,
		"history_size", cfg.Channels.HistorySize,
		"board", fmt.Sprintf("http://%s/", displayAddr(ln.Addr())))
	if ready != nil {
		ready(brokers[0])
	}
	err = srv.Serve(ctx, ln)
	stopSim()
	wg.Wait()
	return err
}

// displayAddr turns a wildcard listen address into one a browser can open.
func displayAddr(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return fmt.Sprintf("127.0.0.1:%d", ta.Port)
	}
	return a.String()
}
