package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FanoutConfig describes a fan-out run against a relay.
type FanoutConfig struct {
	URL string // relay WebSocket endpoint (a cluster run: the first of URLs)
	// URLs, when there are several relays (a cluster run; see SetURLs):
	// connections go round-robin over them per connection, run-wide
	// (client k of the run, counted over all workers, to URLs[k % len]),
	// and the report has a part per relay (Report.Nodes).
	URLs     []string `json:",omitempty"`
	Brokers  []string
	Topic    string
	Conns    int
	Procs    int     // worker processes
	Channels int     // clients spread over this many channels
	Stalled  float64 // fraction of clients that stop reading after subscribing
	Ramp     float64 // connections per second per worker (0: unlimited)
	Rate     float64 // feed records per second
	Size     int     // feed value size
	Duration time.Duration
	Delta    bool // clients subscribe with fossil delta and rebuild values
	Deflate  bool // clients offer permessage-deflate
	Protobuf bool // clients speak the Protobuf encoding (centrifuge-protobuf)
	// PriorityEvery marks every n-th record priority (0: none): those
	// must reach every healthy client.
	PriorityEvery int
	// NoFeed: the clients only listen for Duration (edgebench swarm; the
	// feed runs elsewhere, e.g. edgebench feed): no final-value or
	// priority verdicts, since what was produced is not known here.
	NoFeed bool
	// Odds, when Matches > 0: the feed is a realistic odds and scores feed
	// of that many matches (each price moving with chance Move per update;
	// see OddsFeed) instead of Channels fixed-size records.
	Matches int
	Move    float64
	// ReconnectEvery: reconnect storms; ChannelsPerClient, Popular,
	// DeltaShare, DeflateShare, ProtobufShare: the subscription mix (see
	// WorkerConfig).
	ReconnectEvery time.Duration
	// Failover: clients follow a closed or dropped socket to the next
	// relay of URLs and recover what they missed (WorkerConfig.Failover).
	Failover                 bool `json:",omitempty"`
	ChannelsPerClient        int
	Popular                  float64
	DeltaShare, DeflateShare float64
	ProtobufShare            float64
	// Worker is the command that runs one worker: it gets the worker's
	// config as JSON in EDGEBENCH_WORKER and must speak the worker protocol
	// (see Worker). Default: this executable with the argument "worker".
	Worker []string
}

// Report is the outcome of a fan-out run.
type Report struct {
	Config         FanoutConfig  `json:"config"`
	Clients        WorkerResult  `json:"clients"`
	Feed           FeedResult    `json:"feed"`
	Healthy        int           `json:"healthy_clients"`
	Expected       uint64        `json:"expected_deliveries"` // to healthy clients
	DeliveriesPerS float64       `json:"deliveries_per_s"`    // to healthy clients
	P50            time.Duration `json:"p50"`
	P99            time.Duration `json:"p99"`
	Max            time.Duration `json:"max"`
	// Connect time: per client, dial → last subscribe reply (p50/p99);
	// ConnectAll, from starting the workers until every client of every
	// worker was subscribed (or had failed).
	ConnectP50 time.Duration `json:"connect_p50"`
	ConnectP99 time.Duration `json:"connect_p99"`
	ConnectAll time.Duration `json:"connect_all"`
	RelayFigures
	// Nodes: a cluster run's figures per relay (FanoutConfig.URLs);
	// RelayFigures above are then their sums (CPU, memory) and the merged
	// latency histogram (age).
	Nodes []NodeReport `json:"nodes,omitempty"`
	// Verdicts.
	Skipped          float64 `json:"skipped"` // share of expected deliveries not made (conflated or lost)
	PriorityExpected uint64  `json:"priority_expected"`
	PriorityRead     uint64  `json:"priority_read"`
	FinalExpected    int     `json:"final_expected"` // healthy clients
	FinalCorrect     int     `json:"final_correct"`  // of them, ending on their channel's last value
	// Steal is the CPU time the hypervisor took from this machine during
	// the feed (nil: not measured, as off Linux); QuietLatency is the
	// latency of the seconds without any.
	Steal *Steal `json:"steal,omitempty"`
}

// RelayFigures is what the relay side of a run measured, of one relay or
// (the sums) of all.
type RelayFigures struct {
	RelayIdleBytes  int64   `json:"relay_rss_idle_delta_bytes"` // RSS after GC with clients minus before
	BytesPerConn    float64 `json:"bytes_per_conn"`
	RelayCPUSeconds float64 `json:"relay_cpu_seconds"` // during the feed
	// Age of delivered publications at the relay's socket write (Kafka
	// timestamp → writev, edgerelay_delivery_latency_seconds over the feed,
	// interpolated in its buckets); the client-side p50/p99 add the
	// clients' own delay. 0 when /metrics could not be read.
	RelayAgeP50 time.Duration `json:"relay_age_p50"`
	RelayAgeP99 time.Duration `json:"relay_age_p99"`
	// RelayAgeMax is the upper bound of the highest bucket holding an
	// observation: every delivery was written at most this old.
	RelayAgeMax time.Duration `json:"relay_age_max_bound"`
	// The part of the age before fan-out (Kafka timestamp → ingest hands
	// the batch to the hub, edgerelay_ingest_age_seconds, per batch): the
	// producer, the broker and the fetch. The rest of RelayAge is the
	// relay's own fan-out; the rest of the client-side figures, the
	// clients' reading.
	IngestAgeP99 time.Duration `json:"ingest_age_p99"`
	IngestAgeMax time.Duration `json:"ingest_age_max_bound"`
	// RelayResources says where relay memory and CPU were read: the
	// relay's /proc/<pid> when it listens on this machine, else /metrics.
	RelayResources string `json:"relay_resources"`
	// Relay RSS sampled every second during the feed: memory must stay flat.
	RelayRSSStart int64 `json:"relay_rss_start_bytes"`
	RelayRSSMax   int64 `json:"relay_rss_max_bytes"`
	RelayRSSEnd   int64 `json:"relay_rss_end_bytes"`
	// IdleMeasured says RelayIdleBytes and BytesPerConn were measured
	// (POST /debug/gc answered before and after the clients connected);
	// tables print "—" for them otherwise.
	IdleMeasured bool `json:"idle_measured"`
}

// NodeReport is one relay's part of a cluster run.
type NodeReport struct {
	URL     string       `json:"url"`
	Clients WorkerResult `json:"clients"` // of the clients that connected to it
	// Client-side delivery latency and connect time of its clients.
	P50        time.Duration `json:"p50"`
	P99        time.Duration `json:"p99"`
	ConnectP50 time.Duration `json:"connect_p50"`
	ConnectP99 time.Duration `json:"connect_p99"`
	// RelayRSS: its resident set after GC with every client subscribed.
	RelayRSS int64 `json:"relay_rss_bytes"`
	RelayFigures
}

// Verdict is nil when nothing was lost that must not be: every priority
// publication and every channel's final value reached every healthy
// client, in order, without duplicates, and every patch applied; and,
// unless allowSkips (a run that may conflate), every update.
func (r *Report) Verdict(allowSkips bool) error {
	var errs []string
	if !allowSkips && r.Clients.Gaps > 0 {
		errs = append(errs, fmt.Sprintf("%d updates missing", r.Clients.Gaps))
	}
	if r.Clients.ReconnectFailed > 0 {
		errs = append(errs, fmt.Sprintf("%d clients could not reconnect", r.Clients.ReconnectFailed))
	}
	if r.Clients.Duplicates > 0 {
		errs = append(errs, fmt.Sprintf("%d duplicates", r.Clients.Duplicates))
	}
	if r.PriorityRead != r.PriorityExpected {
		errs = append(errs, fmt.Sprintf("priority publications read %d of %d", r.PriorityRead, r.PriorityExpected))
	}
	if r.FinalCorrect != r.FinalExpected {
		errs = append(errs, fmt.Sprintf("clients ending on the final value %d of %d", r.FinalCorrect, r.FinalExpected))
	}
	if r.Clients.OutOfOrder > 0 {
		errs = append(errs, fmt.Sprintf("%d out of order", r.Clients.OutOfOrder))
	}
	if r.Clients.BadDeltas > 0 {
		errs = append(errs, fmt.Sprintf("%d bad deltas", r.Clients.BadDeltas))
	}
	if len(errs) > 0 {
		return fmt.Errorf("verdict: FAIL: %s", strings.Join(errs, "; "))
	}
	return nil
}

// relayNode is the parent's view of one relay during a run.
type relayNode struct {
	url, metrics string
	usage        relayUsageSource
	log          string // "" alone, "<url>: " in a cluster run
	rssBefore    int64  // after GC, before the clients; 0: not measured
	rssIdle      int64  // after GC, every client subscribed; 0: not measured
	cpuBefore    float64
	ageBefore    promHistogram
	ingestBefore promHistogram
	ingestErr    error
	ageErr       error
	fig          RelayFigures
}

// RunFanout runs workers, the feed, and samples the relay (every relay of
// cfg.URLs).
func RunFanout(ctx context.Context, cfg FanoutConfig, log io.Writer) (*Report, error) {
	rep := &Report{Config: cfg}
	urls := cfg.URLs
	if len(urls) == 0 {
		urls = []string{cfg.URL}
	}
	nodes := make([]*relayNode, len(urls))
	for i, u := range urls {
		m, err := metricsURLOf(u)
		if err != nil {
			return nil, err
		}
		nodes[i] = &relayNode{url: u, metrics: m}
		if len(cfg.URLs) > 0 {
			nodes[i].log = u + ": "
		}
	}
	var odds *OddsFeed
	channels := make([]string, cfg.Channels)
	for i := range channels {
		channels[i] = fmt.Sprintf("bench:fanout:%d", i)
	}
	if cfg.Matches > 0 {
		odds = NewOddsFeed(cfg.Matches, cfg.Move, 1)
		channels = odds.Channels()
		rep.Config.Channels = len(channels)
	}
	for _, n := range nodes {
		n.usage = relayUsage(n.url, n.metrics)
		n.fig.RelayResources = n.usage.source
	}
	if cfg.Failover && !cfg.NoFeed && odds == nil {
		if err := primeChannels(ctx, cfg, channels, nodes); err != nil {
			return nil, err
		}
	}
	gcErrs := make([]error, len(nodes))
	eachNode(nodes, func(i int, n *relayNode) { n.rssBefore, gcErrs[i] = relayRSSAfterGC(n.metrics, n.usage) })
	for i, err := range gcErrs {
		if err != nil {
			fmt.Fprintf(log, "edgebench: %s%v (memory per connection will not be reported)\n", nodes[i].log, err)
		}
	}
	rep.RelayResources = nodes[0].usage.source

	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	type worker struct {
		cmd   *exec.Cmd
		ready chan [2]int
		done  chan WorkerResult
		err   chan error
	}
	var workers []*worker
	per := cfg.Conns / cfg.Procs
	stalledTotal := int(float64(cfg.Conns) * cfg.Stalled)
	started := time.Now()
	for i := 0; i < cfg.Procs; i++ {
		n := per
		if i == cfg.Procs-1 {
			n = cfg.Conns - per*(cfg.Procs-1)
		}
		wc := WorkerConfig{URL: cfg.URL, URLs: cfg.URLs, First: per * i, Source: fmt.Sprintf("127.0.0.%d", 10+i), Conns: n, Channels: channels,
			Stalled: stalledTotal / cfg.Procs, Ramp: cfg.Ramp, Delta: cfg.Delta, Deflate: cfg.Deflate, Protobuf: cfg.Protobuf,
			ReconnectEvery: cfg.ReconnectEvery, Failover: cfg.Failover, ChannelsPerClient: cfg.ChannelsPerClient, Popular: cfg.Popular,
			DeltaShare: cfg.DeltaShare, DeflateShare: cfg.DeflateShare, ProtobufShare: cfg.ProtobufShare}
		js, _ := json.Marshal(wc)
		argv := cfg.Worker
		if len(argv) == 0 {
			self, err := os.Executable()
			if err != nil {
				return nil, err
			}
			argv = []string{self, "worker"}
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "EDGEBENCH_WORKER="+string(js))
		cmd.Stderr = log
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		w := &worker{cmd: cmd, ready: make(chan [2]int, 1), done: make(chan WorkerResult, 1), err: make(chan error, 1)}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		defer cmd.Process.Kill() // only matters on early returns; Wait reaps below
		go func() { <-wctx.Done(); stdin.Close() }()
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for sc.Scan() {
				var msg struct {
					Ready  *[2]int       `json:"ready"`
					Result *WorkerResult `json:"result"`
				}
				if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
					continue
				}
				if msg.Ready != nil {
					w.ready <- *msg.Ready
				}
				if msg.Result != nil {
					w.done <- *msg.Result
					return
				}
			}
			w.err <- fmt.Errorf("worker exited without a result: %v", cmd.Wait())
		}()
		workers = append(workers, w)
	}
	connected := 0
	for i, w := range workers {
		select {
		case r := <-w.ready:
			fmt.Fprintf(log, "edgebench: worker %d: %d connected, %d failed\n", i, r[0], r[1])
			connected += r[0]
		case err := <-w.err:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rep.ConnectAll = time.Since(started)
	fmt.Fprintf(log, "edgebench: %d clients subscribed in %v\n", connected, rep.ConnectAll.Round(time.Millisecond))
	eachNode(nodes, func(_ int, n *relayNode) {
		if n.rssBefore > 0 {
			if after, err := relayRSSAfterGC(n.metrics, n.usage); err == nil {
				n.rssIdle = after
			}
		}
	})
	if connected == 0 {
		return nil, fmt.Errorf("no client could connect to %s (is the relay there?)", strings.Join(urls, ", "))
	}
	for _, n := range nodes {
		_, n.cpuBefore, _ = n.usage.read()
		n.ageBefore, n.ageErr = scrapeHistogram(n.metrics, "edgerelay_delivery_latency_seconds")
		n.ingestBefore, n.ingestErr = scrapeHistogram(n.metrics, "edgerelay_ingest_age_seconds")
	}
	fmt.Fprintf(log, "edgebench: all clients subscribed; feeding %.0f records/s for %v\n", cfg.Rate, cfg.Duration)
	stopSteal := startSteal(ctx)
	defer stopSteal()
	sampled := make(chan struct{})
	feedDone := make(chan struct{})
	go func() { // relay memory during the feed
		defer close(sampled)
		for {
			var sum int64
			read := 0
			for _, n := range nodes {
				if v, _, err := n.usage.read(); err == nil {
					n.fig.sampleRSS(v)
					sum += v
					read++
				}
			}
			if read == len(nodes) {
				rep.sampleRSS(sum)
			}
			select {
			case <-feedDone:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	var err error
	if cfg.NoFeed {
		err = waitUntil(ctx, time.Now().Add(cfg.Duration), new(time.Duration))
	} else {
		rep.Feed, err = RunFeed(ctx, FeedConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, Channels: channels, Rate: cfg.Rate, Size: cfg.Size,
			Duration: cfg.Duration, PriorityEvery: cfg.PriorityEvery, Odds: odds})
	}
	close(feedDone)
	<-sampled
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Second) // let the last records arrive
	if rep.Steal = stopSteal(); rep.Steal != nil {
		fmt.Fprintf(log, "edgebench: CPU time the hypervisor took (steal) during the feed: %.1f ms/s, per CPU %.1f\n", rep.Steal.Total(), rep.Steal.PerCPU)
	}
	var age, ingest promHistogram
	ageOK, ingestOK := true, true
	for _, n := range nodes {
		if _, cpuAfter, err := n.usage.read(); err == nil { // a relay that exited (drained, killed) has none
			n.fig.RelayCPUSeconds = cpuAfter - n.cpuBefore
			rep.RelayCPUSeconds += n.fig.RelayCPUSeconds
		}
		if after, err := scrapeHistogram(n.metrics, "edgerelay_ingest_age_seconds"); err == nil && n.ingestErr == nil {
			d := after.since(n.ingestBefore)
			n.fig.IngestAgeP99, n.fig.IngestAgeMax = d.quantile(0.99), d.maxBound()
			ingest = ingest.plus(d)
		} else {
			ingestOK = false
		}
		ageAfter, err := scrapeHistogram(n.metrics, "edgerelay_delivery_latency_seconds")
		if err != nil || n.ageErr != nil {
			ageOK = false
			continue
		}
		d := ageAfter.since(n.ageBefore)
		n.fig.RelayAgeP50, n.fig.RelayAgeP99, n.fig.RelayAgeMax = d.quantile(0.5), d.quantile(0.99), d.maxBound()
		age = age.plus(d)
	}
	if ageOK {
		rep.RelayAgeP50, rep.RelayAgeP99, rep.RelayAgeMax = age.quantile(0.5), age.quantile(0.99), age.maxBound()
		fmt.Fprintf(log, "edgebench: relay-side age at the socket write: p50 %v, p99 %v, max ≤ %v\n", rep.RelayAgeP50, rep.RelayAgeP99, rep.RelayAgeMax)
	}
	if ingestOK {
		rep.IngestAgeP99, rep.IngestAgeMax = ingest.quantile(0.99), ingest.maxBound()
		fmt.Fprintf(log, "edgebench: age when ingest hands a batch to the hub (producer, broker, fetch): p99 %v, max ≤ %v\n", rep.IngestAgeP99, rep.IngestAgeMax)
	}
	stopWorkers()
	for _, w := range workers {
		select {
		case r := <-w.done:
			rep.Clients.Add(&r)
		case err := <-w.err:
			return nil, err
		}
		w.cmd.Wait()
	}
	rep.IdleMeasured = true
	for i, n := range nodes {
		if n.rssIdle == 0 {
			rep.IdleMeasured = false
			continue
		}
		n.fig.IdleMeasured = true
		n.fig.RelayIdleBytes = n.rssIdle - n.rssBefore
		rep.RelayIdleBytes += n.fig.RelayIdleBytes
		if len(cfg.URLs) > 0 && rep.Clients.Nodes[i].Connected > 0 {
			n.fig.BytesPerConn = float64(n.fig.RelayIdleBytes) / float64(rep.Clients.Nodes[i].Connected)
		}
	}
	if rep.IdleMeasured {
		rep.BytesPerConn = float64(rep.RelayIdleBytes) / float64(cfg.Conns)
	} else {
		rep.RelayIdleBytes = 0
	}
	for i, n := range nodes {
		if len(cfg.URLs) == 0 {
			break
		}
		c := rep.Clients.Nodes[i]
		rep.Nodes = append(rep.Nodes, NodeReport{URL: n.url, Clients: c, RelayRSS: n.rssIdle, RelayFigures: n.fig,
			P50: c.Latency.Quantile(0.5), P99: c.Latency.Quantile(0.99), ConnectP50: c.Connect.Quantile(0.5), ConnectP99: c.Connect.Quantile(0.99)})
	}
	rep.Healthy = rep.Clients.Connected - stalledTotal/cfg.Procs*cfg.Procs
	rep.DeliveriesPerS = float64(rep.Clients.Received) / cfg.Duration.Seconds()
	if !cfg.NoFeed {
		rep.Expected = rep.Feed.Sent * uint64(rep.Healthy) / uint64(len(channels)) // judge makes it exact from the channels
		rep.judge()
	}
	rep.P50 = rep.Clients.Latency.Quantile(0.5)
	rep.P99 = rep.Clients.Latency.Quantile(0.99)
	rep.Max = rep.Clients.Latency.Max
	rep.ConnectP50, rep.ConnectP99 = rep.Clients.Connect.Quantile(0.5), rep.Clients.Connect.Quantile(0.99)
	return rep, nil
}

// primeChannels gives every channel a value on every relay before the
// clients subscribe (a failover run): the first subscribe reply then
// carries the stream's epoch, which a recovering resubscribe names (the
// relay answers an empty channel without one; a resubscribe without
// epoch recovers only from a position the node holds). One record per
// channel; the run's feed starts its sequence numbers at 1 again, and the
// clients check order from the first live push.
func primeChannels(ctx context.Context, cfg FanoutConfig, channels []string, nodes []*relayNode) error {
	fr, err := RunFeed(ctx, FeedConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, Channels: channels, Rate: float64(len(channels)) * 10,
		Size: cfg.Size, Duration: 100 * time.Millisecond})
	if err != nil || fr.Failed > 0 {
		return fmt.Errorf("priming the channels: %+v, %v", fr, err)
	}
	for _, n := range nodes {
		if err := waitCached(n.metrics, channels[len(channels)-1], 10*time.Second); err != nil {
			return fmt.Errorf("priming: %w", err)
		}
	}
	return nil
}

// eachNode runs f for every relay at once (each waits half a second
// after its GC) and returns when all are done.
func eachNode(nodes []*relayNode, f func(int, *relayNode)) {
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { f(i, n) })
	}
	wg.Wait()
}

// sampleRSS takes one reading of the relay's resident set during the feed.
func (f *RelayFigures) sampleRSS(v int64) {
	if f.RelayRSSStart == 0 {
		f.RelayRSSStart = v
	}
	f.RelayRSSMax, f.RelayRSSEnd = max(f.RelayRSSMax, v), v
}

// judge fills the verdict fields from the clients' per-channel results
// and the feed's final sequence numbers.
func (rep *Report) judge() {
	var expected uint64
	for ch, cr := range rep.Clients.Channels {
		final := rep.Feed.Final[ch]
		expected += uint64(cr.Clients) * uint64(final)
		rep.FinalExpected += cr.Clients
		rep.FinalCorrect += cr.Last[final]
		rep.PriorityExpected += uint64(cr.Clients) * uint64(rep.Feed.Priority[ch])
		rep.PriorityRead += cr.Priority
	}
	if expected > 0 {
		rep.Expected = expected // exact for any subscription mix
	}
	if rep.Expected > 0 {
		rep.Skipped = float64(rep.Clients.Gaps) / float64(rep.Expected)
	}
}

// Worker is the worker process's side: it reads its config from
// EDGEBENCH_WORKER, prints {"ready":[connected,failed]} once subscribed,
// measures until stdin closes, then prints {"result":{…}}.
func Worker(stdin io.Reader, stdout io.Writer) error {
	var cfg WorkerConfig
	if err := json.Unmarshal([]byte(os.Getenv("EDGEBENCH_WORKER")), &cfg); err != nil {
		return fmt.Errorf("EDGEBENCH_WORKER: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, stdin); cancel() }()
	enc := json.NewEncoder(stdout)
	res := RunWorker(ctx, cfg, func(c, f int) { enc.Encode(map[string]any{"ready": [2]int{c, f}}) })
	return enc.Encode(map[string]any{"result": res})
}

func metricsURLOf(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	u.Scheme = strings.Replace(u.Scheme, "ws", "http", 1)
	u.Path = ""
	return u.String(), nil
}

// relayUsageSource reads the relay's RSS and CPU seconds.
type relayUsageSource struct {
	source string
	read   func() (rss int64, cpu float64, err error)
}

// relayUsage reads /proc for a relay on this machine, else its /metrics.
func relayUsage(wsURL, metricsURL string) relayUsageSource {
	if p := relayProc(wsURL); p != nil {
		return relayUsageSource{fmt.Sprintf("/proc/%d", p.pid), p.sample}
	}
	return relayUsageSource{"/metrics", func() (int64, float64, error) {
		rss, err := scrape(metricsURL, "process_resident_memory_bytes")
		if err != nil {
			return 0, 0, err
		}
		cpu, err := scrape(metricsURL, "process_cpu_seconds_total")
		return int64(rss), cpu, err
	}}
}

// relayRSSAfterGC asks the relay to collect garbage and return memory to
// the OS (POST /debug/gc, served when the relay runs with debug: true),
// then reads its resident set size.
func relayRSSAfterGC(base string, usage relayUsageSource) (int64, error) {
	resp, err := http.Post(base+"/debug/gc", "", nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("POST /debug/gc: %s (run the relay with EDGERELAY_DEBUG=true)", resp.Status)
	}
	time.Sleep(500 * time.Millisecond)
	v, _, err := usage.read()
	return int64(v), err
}

// scrape reads one unlabelled metric from the relay's /metrics.
func scrape(base, name string) (v float64, err error) {
	err = readMetrics(base, func(sc *bufio.Scanner) error {
		for sc.Scan() {
			if text, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				v, err = strconv.ParseFloat(text, 64)
				return err
			}
		}
		return fmt.Errorf("metric %s not found", name)
	})
	return v, err
}

// mode names the clients' subscription mode, "protobuf …" when every
// client speaks Protobuf.
func (r *Report) mode() string {
	enc := ""
	if r.Config.Protobuf {
		enc = "protobuf "
	}
	switch {
	case r.Config.DeltaShare > 0 || r.Config.DeflateShare > 0 || r.Config.ProtobufShare > 0:
		pb := ""
		if r.Config.ProtobufShare > 0 {
			pb = fmt.Sprintf(", protobuf %.0f%%", r.Config.ProtobufShare*100)
		}
		return fmt.Sprintf("%smixed (delta %.0f%%, deflate %.0f%%%s)", enc, r.Config.DeltaShare*100, r.Config.DeflateShare*100, pb)
	case r.Config.Delta && r.Config.Deflate:
		return enc + "delta+deflate"
	case r.Config.Delta:
		return enc + "delta"
	case r.Config.Deflate:
		return enc + "deflate"
	}
	return enc + "full"
}

// Markdown renders the report as a table row with a header.
func (r *Report) Markdown() string {
	var b strings.Builder
	mode := r.mode()
	perDelivery := 0.0
	if r.Clients.Received > 0 {
		perDelivery = float64(r.Clients.WireBytes) / float64(r.Clients.Received)
	}
	fmt.Fprintf(&b, "| conns | stalled | channels | rate/s | size B | mode | deliveries/s | expected | p50 | p99 | max | gaps | out of order | bad deltas | wire B/delivery | relay B/conn idle | relay CPU s | closes | skipped | priority read | final values | relay RSS MB start/max/end | relay age p50/p99 |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d | %.0f%% | %d | %.0f | %d | %s | %.0f | %d | %v | %v | %v | %d | %d | %d | %.0f | %s | %.1f | %v | %.1f%% | %d/%d | %d/%d | %s | %s |\n",
		r.Clients.Connected, r.Config.Stalled*100, r.Config.Channels, r.Config.Rate, r.Config.Size, mode,
		r.DeliveriesPerS, r.Expected, r.P50, r.P99, r.Max, r.Clients.Gaps, r.Clients.OutOfOrder, r.Clients.BadDeltas,
		perDelivery, r.idleCell(), r.RelayCPUSeconds, r.Clients.Closes, r.Skipped*100, r.PriorityRead, r.PriorityExpected,
		r.FinalCorrect, r.FinalExpected, r.rssCell(), r.ageCell(r.RelayAgeP50)+"/"+r.ageCell(r.RelayAgeP99))
	b.WriteString(r.NodesMarkdown())
	b.WriteString(r.FailoverMarkdown())
	return b.String()
}

// FailoverMarkdown renders a failover run's reconnects (after a blank
// line); "" without FanoutConfig.Failover.
func (r *Report) FailoverMarkdown() string {
	if !r.Config.Failover {
		return ""
	}
	c := &r.Clients
	return fmt.Sprintf("\n| clients moved | reconnect p50 | reconnect p99 | reconnect max | could not reconnect | publications recovered | not recovered | missed (gaps) | duplicates | out of order |\n"+
		"|---|---|---|---|---|---|---|---|---|---|\n| %d | %v | %v | %v | %d | %d | %d | %d | %d | %d |\n",
		c.Moved, c.Reconnect.Quantile(0.5), c.Reconnect.Quantile(0.99), c.Reconnect.Max, c.ReconnectFailed, c.Recovered, c.NotRecovered,
		c.Gaps, c.Duplicates, c.OutOfOrder)
}

// NodesMarkdown renders a cluster run's figures per relay and in total as
// a table (after a blank line); "" for a run against one relay.
func (r *Report) NodesMarkdown() string {
	if len(r.Nodes) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n| relay | conns | failed | connect p50 | connect p99 | delivery p50 | delivery p99 | gaps | duplicates | relay RSS MB | relay B/conn idle | relay CPU s | relay age p50/p99 |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var rss int64
	for _, n := range r.Nodes {
		rss += n.RelayRSS
		fmt.Fprintf(&b, "| %s | %d | %d | %v | %v | %v | %v | %d | %d | %s | %s | %.1f | %s |\n", n.URL, n.Clients.Connected, n.Clients.Failed,
			n.ConnectP50, n.ConnectP99, n.P50, n.P99, n.Clients.Gaps, n.Clients.Duplicates, mbCell(n.RelayRSS), n.idleCell(),
			n.RelayCPUSeconds, n.ageCell(n.RelayAgeP50)+"/"+n.ageCell(n.RelayAgeP99))
	}
	fmt.Fprintf(&b, "| all %d (every client subscribed in %v) | %d | %d | %v | %v | %v | %v | %d | %d | %s | %s | %.1f | %s |\n", len(r.Nodes),
		r.ConnectAll.Round(time.Millisecond), r.Clients.Connected, r.Clients.Failed, r.ConnectP50, r.ConnectP99, r.P50, r.P99,
		r.Clients.Gaps, r.Clients.Duplicates, mbCell(rss), r.idleCell(), r.RelayCPUSeconds, r.ageCell(r.RelayAgeP50)+"/"+r.ageCell(r.RelayAgeP99))
	return b.String()
}

// mbCell is a byte count in MB, or "—" for 0 (not measured).
func mbCell(v int64) string {
	if v == 0 {
		return unmeasured
	}
	return fmt.Sprintf("%.1f", float64(v)/(1<<20))
}

// unmeasured is what tables print for a figure the run did not measure,
// rather than a 0 that reads as a measurement.
const unmeasured = "—"

// idleCell is relay bytes per idle connection, or "—".
func (r *RelayFigures) idleCell() string {
	if !r.IdleMeasured {
		return unmeasured
	}
	return fmt.Sprintf("%.0f", r.BytesPerConn)
}

// ageCell is a relay-side age, or "—" when /metrics could not be read.
func (r *RelayFigures) ageCell(d time.Duration) string {
	if d == 0 {
		return unmeasured
	}
	return d.String()
}

// rssCell is the relay's RSS start/max/end in MB, or "—".
func (r *RelayFigures) rssCell() string {
	if r.RelayRSSMax == 0 {
		return unmeasured
	}
	return fmt.Sprintf("%d/%d/%d", r.RelayRSSStart>>20, r.RelayRSSMax>>20, r.RelayRSSEnd>>20)
}
