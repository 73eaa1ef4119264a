// Command edgerelay runs the edge relay.
//
//	edgerelay serve --config relay.yaml   production: connect to your Kafka
//	edgerelay dev                         embedded Kafka, odds simulator, demo board
//	edgerelay version
//
// main only parses flags and configuration, builds the server and handles
// signals; everything else lives in package relay.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/dev"
)

const usage = `usage: edgerelay <command> [flags]

commands:
  serve    run the relay against your Kafka (--config relay.yaml)
  dev      run with an embedded Kafka, an odds simulator and a demo board
  version  print the version

Run "edgerelay <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "dev":
		err = runDev(ctx, os.Args[2:])
	case "version":
		fmt.Println(relay.Version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "edgerelay: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgerelay: %v\n", err)
		if errors.Is(err, errConfig) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errConfig = errors.New("invalid configuration")

// common are the flags both commands take; they override the file and the
// environment.
type common struct {
	config, listen, brokers, logLevel string
}

func (c *common) register(fs *flag.FlagSet, defaultListen string) {
	fs.StringVar(&c.config, "config", "", "YAML configuration file (see relay.example.yaml)")
	fs.StringVar(&c.listen, "listen", defaultListen, "HTTP/WebSocket listen address (overrides listen)")
	fs.StringVar(&c.logLevel, "log-level", "", "debug, info, warn or error (overrides log_level)")
}

func (c *common) load() (relay.Config, *slog.Logger, error) {
	cfg, unknown, err := relay.LoadConfig(c.config, os.Environ())
	if err != nil {
		return cfg, nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	if c.listen != "" {
		cfg.Listen = c.listen
	}
	if c.brokers != "" {
		cfg.Kafka.Brokers = strings.Split(c.brokers, ",")
	}
	if c.logLevel != "" {
		cfg.LogLevel = c.logLevel
	}
	if err := cfg.Validate(); err != nil {
		return cfg, nil, fmt.Errorf("%w:\n%v", errConfig, err)
	}
	log := newLogger(os.Stderr, cfg.LogLevel)
	if len(unknown) > 0 {
		log.Warn("ignoring environment variables that name no setting (a typo?)", "vars", strings.Join(unknown, ","))
	}
	return cfg, log, nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var c common
	c.register(fs, "")
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated Kafka seed brokers (overrides kafka.brokers)")
	fs.Parse(args)
	cfg, log, err := c.load()
	if err != nil {
		return err
	}
	srv, err := relay.New(cfg, log)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ExitOnError)
	var c common
	c.register(fs, "127.0.0.1:8000")
	opts := dev.Options{Sim: dev.DefaultSimConfig()}
	fs.IntVar(&opts.KafkaPort, "kafka-port", 9092, "port of the embedded Kafka on 127.0.0.1 (0: any free port)")
	fs.StringVar(&opts.DataDir, "data-dir", "", "directory that keeps the embedded Kafka's data across restarts (default: memory only)")
	fs.Float64Var(&opts.Sim.Rate, "rate", opts.Sim.Rate, "simulated market updates per second")
	fs.IntVar(&opts.Sim.Matches, "matches", opts.Sim.Matches, "simulated matches")
	bookmaker := fs.Bool("bookmaker", true, "run the simulated bookmaker that answers bets on the results topic")
	fs.Parse(args)
	opts.NoBookmaker = !*bookmaker
	c.brokers = "127.0.0.1:1" // replaced by the embedded broker's address
	cfg, log, err := c.load()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("dev: %w (another edgerelay dev running? use --listen)", err)
	}
	return dev.Run(ctx, cfg, opts, ln, log, nil)
}
