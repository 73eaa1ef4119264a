// Command edgebench drives an edgerelay deployment to measure it.
//
//	edgebench broker  --port 9092                 a standalone embedded Kafka (kfake) for local runs
//	edgebench fanout  --url ws://… --conns 15000   clients over several processes + a timed feed
//	                  --url ws://a…,ws://b…        the same over a cluster, figures per relay
//	edgebench bets    --url ws://… --rate 20000    a bet storm: accepted bets/s and reply latency
//	edgebench run     bench/scenarios/smoke.yaml   a scenario file's steps, a table and a verdict
//	edgebench report  --html r.html a.json b.json  summary table and charts of saved results
//	edgebench feed    --rate 500 --matches 200     a realistic odds feed; --record / --replay --speed
//	edgebench swarm   --conns 15000 --matches 200  clients only, for a feed run elsewhere
//	edgebench maps    --sizes 1000,10000           map subscriptions: subscribe time and bytes,
//	                                               memory per entry, fan-out vs channels
//	edgebench ceiling --listen 127.0.0.1:8001      a bare writer to compare the relay's CPU against
//	edgebench trace   trace.out                    a relay execution trace: fan-out busy periods, GC
//
// "worker" is internal: fanout starts one worker process per --procs.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgerelay/edgerelay/bench"
)

const usage = `usage: edgebench <command> [flags]

commands:
  broker   run a standalone Kafka (franz-go kfake) on 127.0.0.1 for local runs
  fanout   open many WebSocket clients, feed Kafka at a fixed rate, report
           deliveries/s, latency percentiles and relay memory per connection
  wire     bytes on the wire per delivered update: full JSON vs channel ids, deflate,
           fossil delta, and the same in the Protobuf encoding
  feed     produce a realistic odds and scores feed into Kafka at a rate, record
           it to a file, or replay a recorded one at N x speed
  swarm    open many clients over several processes and hold them for a
           duration while a feed runs elsewhere (edgebench feed)
  run      run a scenario file (bench/scenarios/*.yaml), print a table and a
           verdict line; exit 1 when a correctness check fails
  report   merge JSON results (--out of fanout and run) into a Markdown summary
           and a self-contained HTML page of charts
  maps     map subscriptions: subscribe time and wire bytes per map size, page and
           encoding; relay memory per entry; fan-out of map updates against the
           same updates on ordinary channels (CPU per million deliveries, latency)
  ceiling  a bare writer for edgebench fanout's clients: reads the feed from
           Kafka and writes each record as the relay's push frame to every
           subscriber, with nothing else; the bound for the relay's CPU per delivery
  bets     a bet storm: many authenticated clients place bets at a fixed rate
           while reading odds; accepted bets/s and reply latency percentiles
  trace    read a relay's execution trace (/debug/pprof/trace): the writers'
           busy periods, what else ran in the longest, GC mark phases

Run "edgebench <command> -h" for flags.
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
	case "broker":
		err = broker(ctx, os.Args[2:])
	case "fanout":
		err = fanout(ctx, os.Args[2:])
	case "wire":
		err = wire(ctx, os.Args[2:])
	case "bets":
		err = betStorm(ctx, os.Args[2:])
	case "run":
		err = runScenario(ctx, os.Args[2:])
	case "feed":
		err = feedCmd(ctx, os.Args[2:])
	case "swarm":
		err = swarmCmd(ctx, os.Args[2:])
	case "trace":
		err = traceCmd(os.Args[2:])
	case "ceiling":
		err = ceilingCmd(ctx, os.Args[2:])
	case "report":
		err = reportCmd(os.Args[2:])
	case "maps":
		err = mapsCmd(ctx, os.Args[2:])
	case "worker":
		err = bench.Worker(os.Stdin, os.Stdout)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgebench: %v\n", err)
		os.Exit(1)
	}
}

func broker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("broker", flag.ExitOnError)
	port := fs.Int("port", 9092, "port on 127.0.0.1")
	topics := fs.String("topics", "odds,scores,bets", "topics to create (the relay's defaults: it reads and writes bets too)")
	partitions := fs.Int("partitions", 6, "partitions per topic")
	dir := fs.String("data-dir", "", "persist topics and records here (default: memory)")
	fs.Parse(args)
	opts := []kfake.Opt{kfake.Ports(*port), kfake.SeedTopics(int32(*partitions), strings.Split(*topics, ",")...)}
	if *dir != "" {
		opts = append(opts, kfake.DataDir(*dir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(os.Stderr, "edgebench: kafka listening on %s\n", strings.Join(c.ListenAddrs(), ","))
	<-ctx.Done()
	return nil
}

func fanout(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fanout", flag.ExitOnError)
	var cfg bench.FanoutConfig
	urls := fs.String("url", "ws://127.0.0.1:8000/connection/websocket", "relay WebSocket endpoint (its /metrics and /debug/gc are on the same host); "+
		"several, comma-separated, for a cluster: connections round-robin over them, figures per relay and in total")
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka seed brokers the relay reads")
	fs.StringVar(&cfg.Topic, "topic", "odds", "topic to feed")
	fs.IntVar(&cfg.Conns, "conns", 1000, "client connections")
	fs.IntVar(&cfg.Procs, "procs", 4, "worker processes (each from its own 127.0.0.x address)")
	fs.IntVar(&cfg.Channels, "channels", 1, "channels the clients are spread over")
	fs.Float64Var(&cfg.Stalled, "stalled", 0, "fraction of clients that stop reading after subscribing")
	fs.Float64Var(&cfg.Ramp, "ramp", 0, "connections per second per worker (0: unlimited)")
	fs.Float64Var(&cfg.Rate, "rate", 10, "feed records per second")
	fs.IntVar(&cfg.Size, "size", 300, "feed value size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "feed duration")
	fs.BoolVar(&cfg.Delta, "delta", false, "subscribe with fossil delta (values are rebuilt and checked)")
	fs.BoolVar(&cfg.Deflate, "deflate", false, "offer permessage-deflate")
	fs.BoolVar(&cfg.Protobuf, "protobuf", false, "speak the Protobuf encoding (subprotocol centrifuge-protobuf, binary frames), with the same checks")
	fs.BoolVar(&cfg.Failover, "reconnect", false, "cluster runs (JSON, no delta): a client whose socket is closed (3001 on drain) or drops "+
		"reconnects to the next --url and resubscribes with recover:true; reconnect time, recovered publications, gaps and duplicates across the switch")
	allowSkips := fs.Bool("allow-skips", true, "skipped updates are fine (conflation); false: every update must arrive")
	fs.IntVar(&cfg.PriorityEvery, "priority-every", 0, "mark every n-th record priority (100: 1 %); all must arrive (0: none)")
	out := fs.String("out", "", "also write the JSON report here")
	fs.Parse(args)
	cfg.Brokers = strings.Split(*brokers, ",")
	if err := setURLs(&cfg, *urls); err != nil {
		return err
	}
	if cfg.Conns < cfg.Procs || cfg.Channels < 1 || cfg.Rate <= 0 {
		return fmt.Errorf("need conns >= procs, channels >= 1, rate > 0")
	}
	if cfg.Failover && (len(cfg.URLs) < 2 || cfg.Delta || cfg.Protobuf) {
		return fmt.Errorf("--reconnect needs several --url and JSON clients without --delta")
	}
	rep, err := bench.RunFanout(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	if err := report(rep, rep.Markdown(), *out); err != nil {
		return err
	}
	if err := rep.Verdict(*allowSkips); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "edgebench: verdict: PASS (priority publications and final values reached every healthy client, in order)")
	return nil
}

func wire(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("wire", flag.ExitOnError)
	url := fs.String("url", "ws://127.0.0.1:8000/connection/websocket", "relay WebSocket endpoint")
	prefix := fs.String("prefix", "odds:", "subscribe to every cached channel with this prefix")
	d := fs.Duration("duration", 30*time.Second, "how long to listen")
	fs.Parse(args)
	res, err := bench.MeasureWire(ctx, *url, *prefix, *d)
	if err != nil {
		return err
	}
	fmt.Println("| mode | updates | wire bytes | bytes/update | vs full |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range res {
		fmt.Printf("| %s | %d | %d | %.1f | %.1f%% |\n", r.Mode, r.Updates, r.WireBytes, r.PerUpdate, 100*r.PerUpdate/res[0].PerUpdate)
	}
	return nil
}

func betStorm(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bets", flag.ExitOnError)
	var cfg bench.BetsConfig
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8000/connection/websocket", "relay WebSocket endpoint")
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka seed brokers the relay reads (edgebench publishes the market there)")
	fs.StringVar(&cfg.Topic, "topic", "odds", "odds topic the relay reads")
	fs.StringVar(&cfg.Market, "market", "odds:bench:storm:m-1:1x2", "market channel to bet on (published open by edgebench)")
	fs.IntVar(&cfg.Conns, "conns", 4000, "clients, one user each (rate/conns must stay under the relay's bets.rate_per_user)")
	fs.Float64Var(&cfg.Rate, "rate", 20000, "bets per second, all clients together")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long bets are sent")
	fs.DurationVar(&cfg.Drain, "drain", 6*time.Second, "how long to wait for the last replies")
	fs.StringVar(&cfg.Secret, "secret", "", "HS256 secret the relay accepts (auth.hmac_secrets); empty: dev tokens from /v1/dev/token")
	fs.StringVar(&cfg.Watch, "watch", "odds:", "clients also subscribe to cached channels with this prefix (empty: none)")
	fs.IntVar(&cfg.WatchPerClient, "watch-per-client", 3, "channels each client watches")
	out := fs.String("out", "", "also write the JSON report here")
	fs.Parse(args)
	cfg.Brokers = strings.Split(*brokers, ",")
	if cfg.Conns < 1 || cfg.Rate <= 0 || cfg.Duration <= 0 {
		return fmt.Errorf("need conns >= 1, rate > 0, duration > 0")
	}
	rep, err := bench.RunBets(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	if err := report(rep, rep.Markdown(), *out); err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("not every bet was accepted: %d of %d (rejected %v, unanswered %d, failed clients %d: %s)",
			rep.Accepted, rep.Sent, rep.Rejected, rep.Unanswered, rep.Failed, rep.FirstError)
	}
	return nil
}

// setURLs points cfg at the --url list.
func setURLs(cfg *bench.FanoutConfig, list string) error {
	urls, err := bench.ParseURLs(list)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	cfg.SetURLs(urls)
	return nil
}

// report prints the Markdown table and writes rep as JSON to out, if set.
func report(rep any, markdown, out string) error {
	fmt.Print(markdown)
	if out == "" {
		return nil
	}
	js, _ := json.MarshalIndent(rep, "", "  ")
	return os.WriteFile(out, js, 0o644)
}

func runScenario(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	url := fs.String("url", "", "relay WebSocket endpoint, or several comma-separated for a cluster (default: the scenario's, else edgerelay dev's)")
	brokers := fs.String("brokers", "", "Kafka seed brokers the relay reads (default: the scenario's, else 127.0.0.1:9092)")
	out := fs.String("out", "", "also write the JSON results here")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: edgebench run [flags] scenario.yaml")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	sc, err := bench.LoadScenario(fs.Arg(0))
	if err != nil {
		return err
	}
	if *url != "" {
		if sc.URL, err = bench.ParseURLs(*url); err != nil {
			return fmt.Errorf("--url: %w", err)
		}
	}
	if *brokers != "" {
		sc.Brokers = strings.Split(*brokers, ",")
	}
	results, err := bench.RunScenario(ctx, sc, os.Stderr)
	if len(results) > 0 {
		if werr := report(results, bench.ScenarioMarkdown(results), *out); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		if r.Verdict != "PASS" {
			failed++
			fmt.Printf("verdict: FAIL %s/%s: %s\n", sc.Name, r.Step.Name, r.Verdict)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s: %d of %d steps failed", sc.Name, failed, len(results))
	}
	fmt.Printf("verdict: PASS %s: %d steps, every check held\n", sc.Name, len(results))
	return nil
}

func reportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	htmlOut := fs.String("html", "", "also write a self-contained HTML page with charts here")
	timeline := fs.Bool("timeline", false, "also print, per run, every second's deliveries and p50/p99/max latency")
	medians := fs.Bool("medians", false, "also print one row per cell: the medians over its runs (files named like tail-10-1.json, tail-10-2.json ...)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: edgebench report [--medians] [--timeline] [--html report.html] result.json ...")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	runs, err := bench.LoadResults(fs.Args())
	if err != nil {
		return err
	}
	fmt.Print(bench.ReportMarkdown(runs))
	if *medians {
		fmt.Print("\n" + bench.MediansMarkdown(runs))
	}
	if *timeline {
		fmt.Print(bench.TimelineMarkdown(runs))
	}
	if *htmlOut == "" {
		return nil
	}
	f, err := os.Create(*htmlOut)
	if err != nil {
		return err
	}
	if err := bench.WriteHTML(f, runs); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func traceCmd(args []string) error {
	fs := flag.NewFlagSet("trace", flag.ExitOnError)
	gap := fs.Duration("gap", 2*time.Millisecond, "writer runs closer than this are one busy period")
	longest := fs.Int("longest", 10, "list this many of the longest busy periods")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: edgebench trace [--gap 2ms] [--longest 10] trace.out\n"+
			"  (a relay with debug on: curl -o trace.out '127.0.0.1:8000/debug/pprof/trace?seconds=30')")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	rep, err := bench.TraceSummary(bufio.NewReader(f), bench.TraceConfig{Gap: *gap, Longest: *longest})
	if err != nil {
		return err
	}
	fmt.Print(rep.Markdown())
	return nil
}

func feedCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("feed", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka seed brokers")
	topic := fs.String("topic", "odds", "topic to produce to (the relay reads it; the channel is in the \"channel\" header)")
	rate := fs.Float64("rate", 100, "records per second")
	duration := fs.Duration("duration", 30*time.Second, "how long to produce")
	matches := fs.Int("matches", 50, "matches (football, tennis, basketball; 3-4 markets and a score channel each)")
	move := fs.Float64("move", 0.3, "chance that each price of a market moves in an update")
	record := fs.String("record", "", "also write every record to this file (JSON lines) for --replay")
	replay := fs.String("replay", "", "replay this recorded file instead of generating")
	speed := fs.Float64("speed", 1, "replay speed (2: twice as fast)")
	fs.Parse(args)
	var res bench.FeedResult
	var err error
	if *replay != "" {
		f, ferr := os.Open(*replay)
		if ferr != nil {
			return ferr
		}
		defer f.Close()
		if *speed <= 0 {
			return fmt.Errorf("--speed must be positive")
		}
		res, err = bench.Replay(ctx, bench.ReplayConfig{Brokers: strings.Split(*brokers, ","), Topic: *topic, From: f, Speed: *speed})
	} else {
		if *rate <= 0 || *matches < 1 {
			return fmt.Errorf("need rate > 0 and matches >= 1")
		}
		odds := bench.NewOddsFeed(*matches, *move, uint64(time.Now().UnixNano()))
		cfg := bench.FeedConfig{Brokers: strings.Split(*brokers, ","), Topic: *topic, Channels: odds.Channels(), Rate: *rate, Duration: *duration, Odds: odds}
		if *record != "" {
			f, ferr := os.Create(*record)
			if ferr != nil {
				return ferr
			}
			w := bufio.NewWriter(f)
			defer func() { w.Flush(); f.Close() }()
			cfg.Record = w
		}
		res, err = bench.RunFeed(ctx, cfg)
	}
	if err != nil {
		return err
	}
	prio := int64(0)
	for _, n := range res.Priority {
		prio += n
	}
	fmt.Printf("sent %d records to %d channels (%d priority), %d failed; at worst %v behind schedule, slowest ack %v\n",
		res.Sent, len(res.Final), prio, res.Failed, res.Behind, res.SlowestAck)
	if res.Failed > 0 {
		return fmt.Errorf("%d records failed", res.Failed)
	}
	return nil
}

func swarmCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("swarm", flag.ExitOnError)
	cfg := bench.FanoutConfig{NoFeed: true}
	urls := fs.String("url", "ws://127.0.0.1:8000/connection/websocket", "relay WebSocket endpoint; several, comma-separated: round-robin over them")
	fs.IntVar(&cfg.Conns, "conns", 1000, "client connections")
	fs.IntVar(&cfg.Procs, "procs", 4, "worker processes (each from its own 127.0.0.x address)")
	fs.IntVar(&cfg.Channels, "channels", 1, "subscribe to bench:fanout:0..N-1 (edgebench fanout's channels)")
	fs.IntVar(&cfg.Matches, "matches", 0, "subscribe to the channels of edgebench feed --matches N instead")
	fs.IntVar(&cfg.ChannelsPerClient, "channels-per-client", 1, "subscriptions per client")
	fs.Float64Var(&cfg.Popular, "popular", 0, "share of subscriptions on the hottest tenth of channels")
	fs.Float64Var(&cfg.DeltaShare, "delta-share", 0, "share of clients subscribing with fossil delta")
	fs.Float64Var(&cfg.DeflateShare, "deflate-share", 0, "share of clients offering permessage-deflate")
	fs.Float64Var(&cfg.ProtobufShare, "protobuf-share", 0, "share of clients speaking the Protobuf encoding (centrifuge-protobuf)")
	fs.Float64Var(&cfg.Stalled, "stalled", 0, "fraction of clients that stop reading after subscribing")
	fs.Float64Var(&cfg.Ramp, "ramp", 0, "connections per second per worker (0: unlimited)")
	fs.DurationVar(&cfg.ReconnectEvery, "reconnect-every", 0, "every client drops and reconnects at once, this often (0: never)")
	fs.DurationVar(&cfg.Duration, "duration", 60*time.Second, "how long to hold the clients after all subscribed")
	out := fs.String("out", "", "also write the JSON report here")
	fs.Parse(args)
	if err := setURLs(&cfg, *urls); err != nil {
		return err
	}
	if cfg.Conns < cfg.Procs || (cfg.Channels < 1 && cfg.Matches < 1) || cfg.Duration <= 0 {
		return fmt.Errorf("need conns >= procs, channels or matches >= 1, duration > 0")
	}
	cfg.Rate = 1 // unused without a feed; kept positive for the report
	rep, err := bench.RunFanout(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	if err := report(rep, rep.Markdown(), *out); err != nil {
		return err
	}
	// Skips are expected (the feed may have started first); the rest must hold.
	if err := rep.Verdict(true); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "edgebench: verdict: PASS (in order, no duplicates, every patch applied, every client back after each storm)")
	return nil
}

func mapsCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("maps", flag.ExitOnError)
	var cfg bench.MapsConfig
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8000/connection/websocket", "relay WebSocket endpoint (its /metrics, /v1/channels and /debug/gc on the same host)")
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka seed brokers the relay reads")
	fs.StringVar(&cfg.Topic, "topic", "odds", "topic the relay reads (channel in the \"channel\" header)")
	fs.StringVar(&cfg.Prefix, "prefix", "bench:map:", "the prefix of a depth-1 rule in the relay's channels.maps.rules; the run's maps are <prefix><run>-…")
	sizes := fs.String("sizes", "1000,10000", "keys of the maps whose subscribe and memory are measured")
	pages := fs.String("pages", "0,25", "page limits the clients ask for (0: none, the relay's channels.maps.page_size)")
	encodings := fs.String("encodings", "json,protobuf", "json and/or protobuf")
	fs.IntVar(&cfg.Runs, "runs", 3, "subscribes per size, page and encoding (the median is reported)")
	fs.IntVar(&cfg.Size, "size", 120, "value bytes of every entry and update")
	fs.IntVar(&cfg.Subscribers, "subscribers", 1000, "fan-out: clients per set (0: no fan-out part)")
	fs.IntVar(&cfg.Keys, "keys", 20, "fan-out: entries of each map (the channel set subscribes to every one)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "fan-out: updates per second during a window")
	fs.DurationVar(&cfg.Window, "window", 5*time.Second, "fan-out: feed duration of each window")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "fan-out: rounds, each a map window then a channels window")
	fs.BoolVar(&cfg.FanoutProtobuf, "fanout-protobuf", false, "fan-out: the clients speak Protobuf (default JSON)")
	out := fs.String("out", "", "also write the JSON report here")
	fs.Parse(args)
	cfg.Brokers = strings.Split(*brokers, ",")
	cfg.Encodings = strings.Split(*encodings, ",")
	var err error
	if cfg.Sizes, err = intList(*sizes); err != nil || len(cfg.Sizes) == 0 || slices.Min(cfg.Sizes) < 1 {
		return fmt.Errorf("--sizes: %v", err)
	}
	if cfg.Pages, err = intList(*pages); err != nil || len(cfg.Pages) == 0 {
		return fmt.Errorf("--pages: %v", err)
	}
	for _, e := range cfg.Encodings {
		if e != "json" && e != "protobuf" {
			return fmt.Errorf("--encodings: %q is neither json nor protobuf", e)
		}
	}
	if cfg.Runs < 1 || cfg.Size < 60 || (cfg.Subscribers > 0 && (cfg.Keys < 1 || cfg.Rate <= 0 || cfg.Window <= 0 || cfg.Rounds < 1)) {
		return fmt.Errorf("need runs >= 1, size >= 60, and with subscribers: keys >= 1, rate > 0, window > 0, rounds >= 1")
	}
	rep, err := bench.RunMaps(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	if err := report(rep, rep.Markdown(), *out); err != nil {
		return err
	}
	if err := rep.Verdict(); err != nil {
		return err
	}
	fmt.Println("verdict: PASS maps: every state complete and in key order, every fan-out delivery made")
	return nil
}

// intList parses "1000,10000".
func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func ceilingCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:8001", "address to accept WebSocket connections on (any path)")
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka seed brokers")
	var cfg bench.CeilingConfig
	fs.StringVar(&cfg.Topic, "topic", "odds", "topic to read (the one edgebench fanout feeds)")
	fs.StringVar(&cfg.Header, "header", "channel", "record header naming the channel (else the record key)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here (go tool pprof)")
	fs.Parse(args)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	cfg.Brokers = strings.Split(*brokers, ",")
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "edgebench: ceiling listening on %s, reading %s from %s\n", ln.Addr(), cfg.Topic, *brokers)
	return bench.RunCeiling(ctx, cfg, ln, os.Stderr)
}
