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
	"sync"
	"time"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/ingest"
)

//go:embed board.html
var boardHTML []byte

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
	sim, err := NewSimulator(brokers, opts.Sim, log.With("component", "simulator"))
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(ctx)
	defer stopSim()
	var wg sync.WaitGroup
	// The bookmaker answers bets taken by this relay; it is built before
	// the relay serves, so it reads the bets topic from before the first.
	if cfg.Bets.Enabled && !opts.NoBookmaker {
		bcfg := DefaultBookmakerConfig()
		bcfg.BetsTopic = cfg.Bets.Topic
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
