package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/relay/auth"
)

// BetsConfig is a bet storm: Conns authenticated clients, one user each,
// place bets on one open market at a fixed total Rate, open loop, while
// every client also reads the odds channels under Watch.
type BetsConfig struct {
	URL     string   // relay WebSocket endpoint
	Brokers []string // Kafka the relay reads: edgebench publishes the market there
	Topic   string   // odds topic the relay reads
	Market  string   // market channel bet on; edgebench publishes it open
	Conns   int
	Rate    float64 // bets per second, all clients together
	// Duration of the schedule; replies are awaited up to Drain after it.
	Duration, Drain time.Duration
	// Secret signs HS256 tokens for users bench-0…; "" fetches dev tokens
	// from the relay's /v1/dev/token (edgerelay dev).
	Secret string
	// Watch: each client also subscribes to WatchPerClient of the cached
	// channels with this prefix (round robin), so odds fan-out runs during
	// the storm ("" for none).
	Watch          string
	WatchPerClient int
}

// BetsReport is the outcome of a bet storm.
type BetsReport struct {
	Config     BetsConfig     `json:"config"`
	Connected  int            `json:"connected"`
	Failed     int            `json:"failed"`
	FirstError string         `json:"first_error,omitempty"`
	Watched    int            `json:"watched_channels"`
	Sent       uint64         `json:"sent"`
	Accepted   uint64         `json:"accepted"`
	Rejected   map[string]int `json:"rejected"`   // error code → count
	Unanswered uint64         `json:"unanswered"` // no reply within Drain
	// AcceptedPerS is accepted bets over the schedule's duration.
	AcceptedPerS float64       `json:"accepted_per_s"`
	P50          time.Duration `json:"p50"` // intended send time → reply, accepted bets
	P99          time.Duration `json:"p99"`
	Max          time.Duration `json:"max"`
	Pushes       uint64        `json:"odds_pushes"` // publications the clients read meanwhile
	PushesPerS   float64       `json:"odds_pushes_per_s"`
	// RelayCPUSeconds is the relay's CPU time over the run (from /metrics).
	RelayCPUSeconds float64 `json:"relay_cpu_seconds"`
	// KafkaAck* and RelayReply*: the relay's own histograms over the run
	// (interpolated in bucket bounds; 0 if the relay did not show them):
	// produce → Kafka's ack (edgerelay_bet_kafka_ack_seconds), and bet
	// read → reply queued (edgerelay_bet_reply_seconds). What the client
	// waits beyond RelayReply is the sockets, the relay's writer and the
	// generator's own scheduling.
	KafkaAckP50   time.Duration `json:"kafka_ack_p50"`
	KafkaAckP99   time.Duration `json:"kafka_ack_p99"`
	KafkaAckMax   time.Duration `json:"kafka_ack_max"`
	RelayReplyP50 time.Duration `json:"relay_reply_p50"`
	RelayReplyP99 time.Duration `json:"relay_reply_p99"`
	RelayReplyMax time.Duration `json:"relay_reply_max"`
	Latency       Histogram     `json:"latency"`
	// Start is when the schedule began (Unix ns); Seconds is its timeline,
	// each second of intended send times with its bets' latency.
	Start   int64       `json:"start_unix_ns"`
	Seconds []BetSecond `json:"seconds"`
	// Steal is the CPU time the hypervisor took from this machine during
	// the bets (nil: not measured).
	Steal *Steal `json:"steal,omitempty"`
}

// BetSecond is one second of a bet storm's schedule: the accepted bets
// meant to be sent in it and their latency.
type BetSecond struct {
	Second   int           `json:"second"` // since the schedule began
	Accepted uint64        `json:"accepted"`
	P99      time.Duration `json:"p99"`
	Max      time.Duration `json:"max"`
}

// betSeries is the clients' shared timeline: a histogram per second of
// intended send time.
type betSeries struct {
	mu   sync.Mutex
	secs []Histogram
}

func (s *betSeries) record(intended, d time.Duration) {
	i := int(intended / time.Second)
	s.mu.Lock()
	for len(s.secs) <= i {
		s.secs = append(s.secs, Histogram{})
	}
	s.secs[i].Record(d)
	s.mu.Unlock()
}

func (s *betSeries) seconds() []BetSecond {
	out := make([]BetSecond, len(s.secs))
	for i := range s.secs {
		h := &s.secs[i]
		out[i] = BetSecond{Second: i, Accepted: h.N, P99: h.Quantile(0.99), Max: h.Max}
	}
	return out
}

// worst is the n seconds of the timeline with the highest p99, worst first.
func worst(secs []BetSecond, n int) []BetSecond {
	w := slices.Clone(secs)
	slices.SortStableFunc(w, func(a, b BetSecond) int { return cmp.Compare(b.P99, a.P99) })
	return w[:min(n, len(w))]
}

// OK says whether every bet was accepted.
func (r *BetsReport) OK() bool {
	return r.Failed == 0 && r.Accepted == r.Sent && r.Sent > 0
}

// RunBets publishes the market, connects the clients, runs the schedule and
// waits for the replies.
func RunBets(ctx context.Context, cfg BetsConfig, log io.Writer) (*BetsReport, error) {
	rep := &BetsReport{Config: cfg, Rejected: map[string]int{}}
	base, err := metricsURLOf(cfg.URL)
	if err != nil {
		return nil, err
	}
	if err := publishMarket(ctx, cfg, base); err != nil {
		return nil, err
	}
	var watch []string
	if cfg.Watch != "" {
		if watch, err = cachedChannels(base, cfg.Watch); err != nil {
			return nil, err
		}
	}
	rep.Watched = len(watch)
	tokens, err := betTokens(cfg, base)
	if err != nil {
		return nil, err
	}

	run := fmt.Sprintf("%x", time.Now().UnixNano()) // bet ids never repeat an earlier run's
	interval := time.Duration(float64(cfg.Conns) / cfg.Rate * float64(time.Second))
	clients := make([]betClient, cfg.Conns)
	series := &betSeries{}
	var setup, wg sync.WaitGroup
	start := make(chan time.Time, cfg.Conns)
	for i := range clients {
		c := &clients[i]
		c.name = fmt.Sprintf("%s-%d", run, i)
		c.series = series
		var mine []string
		for j := range min(cfg.WatchPerClient, len(watch)) {
			mine = append(mine, watch[(i*cfg.WatchPerClient+j)%len(watch)])
		}
		setup.Add(1)
		wg.Go(func() {
			c.run(ctx, cfg, tokens[i], mine, interval, time.Duration(i)*interval/time.Duration(cfg.Conns), setup.Done, start)
		})
	}
	setup.Wait()
	for i := range clients {
		if clients[i].err != nil {
			rep.Failed++
			if rep.FirstError == "" {
				rep.FirstError = clients[i].err.Error()
			}
		} else {
			rep.Connected++
		}
	}
	fmt.Fprintf(log, "edgebench: %d clients connected (%d failed), %d odds channels watched; %.0f bets/s for %v\n",
		rep.Connected, rep.Failed, len(watch), cfg.Rate, cfg.Duration)
	cpuBefore, _ := scrape(base, "process_cpu_seconds_total")
	relayHists := histogramsSince(base, "edgerelay_bet_kafka_ack_seconds", "edgerelay_bet_reply_seconds")
	stopSteal := startSteal(ctx)
	defer stopSteal()
	t0 := time.Now().Add(50 * time.Millisecond)
	rep.Start = t0.UnixNano()
	for range cfg.Conns {
		start <- t0
	}
	wg.Wait()
	rep.Steal = stopSteal()
	cpuAfter, _ := scrape(base, "process_cpu_seconds_total")
	rep.RelayCPUSeconds = cpuAfter - cpuBefore
	h := relayHists()
	rep.KafkaAckP50, rep.KafkaAckP99, rep.KafkaAckMax = h[0].quantile(0.5), h[0].quantile(0.99), h[0].maxBound()
	rep.RelayReplyP50, rep.RelayReplyP99, rep.RelayReplyMax = h[1].quantile(0.5), h[1].quantile(0.99), h[1].maxBound()
	for i := range clients {
		c := &clients[i]
		rep.Sent += c.sent
		rep.Accepted += c.accepted
		rep.Pushes += c.pushes
		for code, n := range c.rejected {
			rep.Rejected[code] += n
		}
		rep.Latency.Merge(&c.latency)
	}
	rep.Unanswered = rep.Sent - rep.Accepted
	for _, n := range rep.Rejected {
		rep.Unanswered -= uint64(n)
	}
	rep.AcceptedPerS = float64(rep.Accepted) / cfg.Duration.Seconds()
	rep.PushesPerS = float64(rep.Pushes) / cfg.Duration.Seconds()
	rep.P50, rep.P99, rep.Max = rep.Latency.Quantile(0.5), rep.Latency.Quantile(0.99), rep.Latency.Max
	rep.Seconds = series.seconds()
	for _, s := range worst(rep.Seconds, 3) {
		fmt.Fprintf(log, "edgebench: second %d of the schedule: %d accepted, p99 %v, max %v\n", s.Second, s.Accepted, s.P99, s.Max)
	}
	return rep, nil
}

// publishMarket produces cfg.Market as an open market and waits until the
// relay has cached it.
func publishMarket(ctx context.Context, cfg BetsConfig, base string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ClientID("edgebench-bets"))
	if err != nil {
		return err
	}
	defer cl.Close()
	value := fmt.Appendf(nil, `{"market":"storm","status":"open","selections":[{"id":"home","odds":2.1},{"id":"away","odds":1.8}],"t":%d}`, time.Now().UnixNano())
	r := &kgo.Record{Topic: cfg.Topic, Key: []byte(cfg.Market), Value: value, Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(cfg.Market)}}}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(pctx, r).FirstErr(); err != nil {
		return fmt.Errorf("publishing the market to %s: %w", cfg.Topic, err)
	}
	for {
		chans, err := cachedChannels(base, cfg.Market)
		if err == nil && len(chans) > 0 {
			return nil
		}
		select {
		case <-pctx.Done():
			return fmt.Errorf("the relay did not cache %s from topic %s within 10s (does it read that topic?)", cfg.Market, cfg.Topic)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cachedChannels lists the relay's cached channels with prefix.
func cachedChannels(base, prefix string) ([]string, error) {
	resp, err := http.Get(base + "/v1/channels?limit=10000&prefix=" + url.QueryEscape(prefix))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Channels []struct{ Channel string } `json:"channels"`
		Error    string                     `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error != "" {
		return nil, fmt.Errorf("/v1/channels: %s %v %s", resp.Status, err, body.Error)
	}
	var out []string
	for _, c := range body.Channels {
		out = append(out, c.Channel)
	}
	sort.Strings(out)
	return out, nil
}

// betTokens signs one token per client, or fetches dev tokens.
func betTokens(cfg BetsConfig, base string) ([]string, error) {
	toks := make([]string, cfg.Conns)
	exp := time.Now().Add(time.Hour).Unix()
	for i := range toks {
		user := fmt.Sprintf("bench-%d", i)
		if cfg.Secret != "" {
			tok, err := auth.SignHS256([]byte(cfg.Secret), map[string]any{"sub": user, "exp": exp})
			if err != nil {
				return nil, err
			}
			toks[i] = tok
			continue
		}
		resp, err := http.Get(base + "/v1/dev/token?user=" + user)
		if err != nil {
			return nil, err
		}
		var body struct{ Token string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || body.Token == "" {
			return nil, fmt.Errorf("GET /v1/dev/token: %s %v (not edgerelay dev? pass --secret)", resp.Status, err)
		}
		toks[i] = body.Token
	}
	return toks, nil
}

// betClient is one bettor. Bet k is sent at start+offset+k*interval and
// has command id k+firstBetID (setup commands have smaller ids), so the
// reader knows its intended send time from the reply alone.
type betClient struct {
	name     string
	err      error
	sent     uint64
	accepted uint64
	pushes   uint64
	rejected map[string]int
	latency  Histogram
	series   *betSeries
}

const firstBetID = 1 << 20

func (c *betClient) run(ctx context.Context, cfg BetsConfig, token string, watch []string, interval, offset time.Duration, setupDone func(), start <-chan time.Time) {
	c.rejected = map[string]int{}
	conn, _, _, err := ws.Dialer{Timeout: 10 * time.Second}.Dial(ctx, cfg.URL)
	if err != nil {
		c.err = err
		setupDone()
		<-start
		return
	}
	defer conn.Close()
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return wsutil.WriteClientText(conn, b)
	}
	var hello bytes.Buffer
	fmt.Fprintf(&hello, `{"id":1,"connect":{"token":%q,"name":"edgebench-bets"}}`, token)
	for i, ch := range append([]string{cfg.Market}, watch...) {
		fmt.Fprintf(&hello, "\n{\"id\":%d,\"subscribe\":{\"channel\":%q}}", 2+i, ch)
	}
	if err := write(hello.Bytes()); err != nil {
		c.err = err
		setupDone()
		<-start
		return
	}
	br := bufio.NewReaderSize(conn, 8192)
	// Setup: read until the connect reply and every subscribe reply came.
	want := 1 + 1 + len(watch)
	for want > 0 && c.err == nil {
		c.err = c.readFrame(conn, br, write, func(line []byte) {
			if bytes.HasPrefix(line, []byte(`{"id":`)) {
				if bytes.Contains(line, []byte(`"error"`)) {
					c.err = fmt.Errorf("setup: %s", line)
				}
				want--
			}
		})
	}
	setupDone()
	t0 := <-start
	if c.err != nil {
		return
	}
	n := int(cfg.Duration / interval)
	if time.Duration(n)*interval+offset < cfg.Duration {
		n++
	}
	go func() { // the schedule
		for k := range n {
			intended := t0.Add(offset + time.Duration(k)*interval)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(intended)):
			}
			cmd := fmt.Appendf(nil, `{"id":%d,"rpc":{"method":"bet","data":{"bet_id":"%s-%d","channel":%q,"selection":"home","odds":2.1,"stake":5}}}`,
				k+firstBetID, c.name, k, cfg.Market)
			if write(cmd) != nil {
				return
			}
		}
	}()
	c.sent = uint64(n)
	conn.SetReadDeadline(t0.Add(cfg.Duration + cfg.Drain))
	go func() { <-ctx.Done(); conn.SetReadDeadline(time.Now()) }()
	replies := 0
	for replies < n {
		err := c.readFrame(conn, br, write, func(line []byte) {
			id, ok := intAfter(line, []byte(`{"id":`))
			if !ok || id < firstBetID {
				if bytes.HasPrefix(line, []byte(`{"push"`)) {
					c.pushes++
				}
				return
			}
			if id-firstBetID >= int64(n) {
				return // not a bet of this schedule (a relay that made up an id)
			}
			replies++
			if bytes.Contains(line, []byte(`"error":`)) {
				code, _ := intAfter(line, []byte(`"code":`))
				c.rejected[strconv.FormatInt(code, 10)]++
				return
			}
			c.accepted++
			intended := offset + time.Duration(id-firstBetID)*interval
			d := time.Since(t0.Add(intended))
			c.latency.Record(d)
			c.series.record(intended, d)
		})
		if err != nil {
			return // the deadline: the rest are unanswered
		}
	}
}

// readFrame reads one frame and hands each protocol line of a text frame
// to fn; it answers pings and the protocol's {} ping.
func (c *betClient) readFrame(conn net.Conn, br *bufio.Reader, write func([]byte) error, fn func([]byte)) error {
	h, err := ws.ReadHeader(br)
	if err != nil {
		return err
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(br, payload); err != nil {
		return err
	}
	switch h.OpCode {
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(payload)
		return fmt.Errorf("closed by the relay: %d %s", code, reason)
	case ws.OpPing:
		wsutil.WriteClientMessage(conn, ws.OpPong, payload)
		return nil
	case ws.OpText:
	default:
		return nil
	}
	for line := range bytes.SplitSeq(payload, []byte{'\n'}) {
		if string(line) == "{}" {
			write(line)
			continue
		}
		fn(line)
	}
	return nil
}

// Markdown renders the report as a table with a header.
func (r *BetsReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| clients | rate/s | accepted/s | sent | accepted | rejected | unanswered | p50 | p99 | max | relay reply p50 / p99 | Kafka ack p50 / p99 | odds pushes/s | relay CPU s |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d | %.0f | %.0f | %d | %d | %v | %d | %v | %v | %v | %v / %v | %v / %v | %.0f | %.1f |\n",
		r.Connected, r.Config.Rate, r.AcceptedPerS, r.Sent, r.Accepted, r.Rejected, r.Unanswered,
		r.P50, r.P99, r.Max, r.RelayReplyP50, r.RelayReplyP99, r.KafkaAckP50, r.KafkaAckP99, r.PushesPerS, r.RelayCPUSeconds)
	return b.String()
}
