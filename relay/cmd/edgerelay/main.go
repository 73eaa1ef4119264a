// Command edgerelay runs the edge relay.
//
//	edgerelay serve --config relay.yaml   production: connect to your Kafka
//	edgerelay config check --config f    every problem of serve's configuration
//	edgerelay dev                         embedded Kafka, odds simulator, demo board
//	edgerelay simulate --brokers k:9092   the dev odds simulator, against your Kafka
//	edgerelay version                     (or --version) the stamped version and commit
//
// The version and commit are stamped at build time:
//
//	go build -ldflags "-X github.com/edgerelay/edgerelay/relay.Version=1.4.0 \
//	  -X github.com/edgerelay/edgerelay/relay.Commit=$(git rev-parse HEAD)" ./relay/cmd/edgerelay
//
// Unstamped, the version is "dev" and the commit the one the Go toolchain
// recorded (or "unknown").
//
// main only parses flags and configuration, builds the server and handles
// signals; everything else lives in package relay.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/dev"
)

const usage = `usage: edgerelay <command> [flags]

commands:
  serve    run the relay against your Kafka (--config relay.yaml)
  config   "config check": read the configuration as serve would (same
           flags) and list every problem; exit 2 if there is one
  dev      run with an embedded Kafka, an odds simulator and a demo board
  simulate run dev mode's odds and scores simulator against your Kafka (--brokers)
  health   GET a relay's /healthz (or --url); exit 0 on 200 (a container
           HEALTHCHECK for an image with no shell or curl)
  version  print the version and commit (also: --version)

Run "edgerelay <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts the drain; a second one gets the default
	// action, so that an impatient operator stops the process at once.
	context.AfterFunc(ctx, stop)
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "config":
		err = configCheck(os.Args[2:])
	case "dev":
		err = runDev(ctx, os.Args[2:])
	case "simulate":
		err = simulate(ctx, os.Args[2:])
	case "health":
		err = health(os.Args[2:])
	case "version", "--version", "-version", "-v":
		fmt.Println(versionLine())
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
		return cfg, nil, fmt.Errorf("%w:\n%v", errConfig, err)
	}
	for _, f := range []struct{ flag, path, value string }{
		{"--listen", "listen", c.listen}, {"--brokers", "kafka.brokers", c.brokers}, {"--log-level", "log_level", c.logLevel},
	} {
		if f.value != "" {
			cfg.SetFlag(f.flag, f.path, f.value)
		}
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

// serveFlags parses the flags of serve (and config check) into c.
func serveFlags(name string, args []string) *common {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	var c common
	c.register(fs, "")
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated Kafka seed brokers (overrides kafka.brokers)")
	fs.Parse(args)
	return &c
}

func serve(ctx context.Context, args []string) error {
	cfg, log, err := serveFlags("serve", args).load()
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

// configCheck is "edgerelay config check": load and validate as serve
// would, without serving.
func configCheck(args []string) error {
	if len(args) == 0 || args[0] != "check" {
		return fmt.Errorf("usage: edgerelay config check [--config relay.yaml] [serve's flags]")
	}
	if _, _, err := serveFlags("config check", args[1:]).load(); err != nil {
		return err
	}
	fmt.Println("configuration ok")
	return nil
}

// health is a probe for images without a shell: exit status 0 when url
// answers 200 within the timeout.
func health(args []string) error {
	fs := flag.NewFlagSet("health", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:8000/healthz", "URL to GET (/healthz: liveness, /readyz: readiness)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	insecure := fs.Bool("insecure", false, "with an https:// URL, do not verify the certificate (a probe of the node's own port, whose certificate names the public host)")
	fs.Parse(args)
	cl := &http.Client{Timeout: *timeout}
	if *insecure {
		cl.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	resp, err := cl.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", *url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// versionLine is what edgerelay version prints: the labels of
// edgerelay_build_info.
func versionLine() string {
	version, commit, goVersion := relay.BuildInfo()
	return fmt.Sprintf("edgerelay %s (commit %s, %s)", version, commit, goVersion)
}

// simulate runs dev mode's simulator as a producer to an external Kafka
// (the docker compose stack uses it): odds and scores topics, channel in
// the "channel" header, as docs/bets.md and README describe.
func simulate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("simulate", flag.ExitOnError)
	sim := dev.DefaultSimConfig()
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated Kafka seed brokers")
	fs.Float64Var(&sim.Rate, "rate", sim.Rate, "simulated market updates per second")
	fs.IntVar(&sim.Matches, "matches", sim.Matches, "simulated matches")
	// Off unless asked: a relay without channels.maps.rules counts each
	// tombstone of a pop-up market as invalid.
	fs.DurationVar(&sim.PopUpEvery, "pop-up-every", 0, "open or close a match's pop-up market this often, closing with a tombstone (0: never)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Parse(args)
	log := newLogger(os.Stderr, *logLevel)
	s, err := dev.NewSimulator(strings.Split(*brokers, ","), sim, log.With("component", "simulator"))
	if err != nil {
		return err
	}
	log.Info("simulator producing", "brokers", *brokers, "rate", sim.Rate, "matches", sim.Matches)
	s.Run(ctx)
	return nil
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
	// Dev mode adds the results topic itself; a file that lists it too
	// (deploy/relay.example.yaml does) must not make it a duplicate.
	topics := cfg.Ingest.Topics[:0:0]
	for _, t := range cfg.Ingest.Topics {
		if t.Name != "results" {
			topics = append(topics, t)
		}
	}
	cfg.Ingest.Topics = topics
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("dev: %w (another edgerelay dev running? use --listen)", err)
	}
	return dev.Run(ctx, cfg, opts, ln, log, nil)
}
