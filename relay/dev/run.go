package dev

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/edgerelay/edgerelay/relay"
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
}

// Run starts the embedded broker, the simulator and the relay (cfg, with its
// Kafka brokers pointed at the embedded one) on ln, and blocks until ctx is
// done. ready, if not nil, is called once everything is started.
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

	srv, err := relay.New(cfg, log)
	if err != nil {
		return err
	}
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
	wg.Go(func() { sim.Run(simCtx) })
	log.Info("dev mode: embedded Kafka and odds simulator running",
		"kafka", brokers[0], "matches", opts.Sim.Matches, "rate", opts.Sim.Rate,
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
