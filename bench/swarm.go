package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/edgerelay/edgerelay/delta"
)

// WorkerConfig is one swarm worker's share of a run.
type WorkerConfig struct {
	URL string `json:"url"`
	// URLs, when set, are the relays of a cluster run: the worker's client
	// i connects to URLs[(First+i) % len(URLs)], First being the run-wide
	// index of its first client, so that connections go round-robin over
	// the relays per connection, across all workers; the result then has
	// a part per relay (WorkerResult.Nodes).
	URLs     []string `json:"urls,omitempty"`
	First    int      `json:"first,omitempty"`
	Source   string   `json:"source"` // local IP to connect from, e.g. 127.0.0.3
	Conns    int      `json:"conns"`
	Channels []string `json:"channels"` // client i subscribes to Channels[i%len], or a mix (below)
	// The subscription mix: each client subscribes to ChannelsPerClient
	// channels (default 1); with Popular > 0 that share of them goes to the
	// hottest tenth of Channels and the rest to the long tail.
	ChannelsPerClient int     `json:"channels_per_client"`
	Popular           float64 `json:"popular"`
	// DeltaShare and DeflateShare: that fraction of clients subscribe with
	// delta / offer deflate (Delta and Deflate: all of them).
	DeltaShare   float64 `json:"delta_share"`
	DeflateShare float64 `json:"deflate_share"`
	// ProtobufShare: that fraction of clients speak the Protobuf encoding
	// (Protobuf: all of them).
	ProtobufShare float64 `json:"protobuf_share"`
	// Stalled clients subscribe and then never read again.
	Stalled int `json:"stalled"`
	// Ramp is connections opened per second (0: as fast as possible).
	Ramp float64 `json:"ramp"`
	// Delta subscribes with delta:"fossil" (values are rebuilt from the
	// patches before they are checked); Deflate offers permessage-deflate.
	Delta   bool `json:"delta"`
	Deflate bool `json:"deflate"`
	// Protobuf: clients offer the centrifuge-protobuf subprotocol and
	// speak the Protobuf encoding (binary frames), with the same checks.
	Protobuf bool `json:"protobuf"`
	// ReconnectEvery: every this long after all clients subscribed, every
	// healthy client drops its socket at the same moment and reconnects
	// and resubscribes at once (a reconnect storm); 0: never.
	ReconnectEvery time.Duration `json:"reconnect_every"`
	// Failover (a cluster run, JSON clients without delta): a client
	// whose socket the relay closes (a close frame, e.g. 3001 on drain) or
	// that loses its TCP connection reconnects at once to the next of
	// URLs (the one after, if that fails too, up to failoverAttempts) and
	// resubscribes with recover:true from the epoch and offset it last
	// read; the publications the reply recovers are checked like pushes,
	// so gaps and duplicates count across the switch.
	Failover bool `json:"failover,omitempty"`
}

// ChannelResult is what the healthy clients of one channel ended with.
type ChannelResult struct {
	Clients  int           `json:"clients"`
	Last     map[int64]int `json:"last"`     // last sequence number read → clients
	Priority uint64        `json:"priority"` // priority publications read, all clients
}

// WorkerResult is what one worker measured; results merge with Add.
type WorkerResult struct {
	Connected  int            `json:"connected"`
	Failed     int            `json:"failed"`
	FirstError string         `json:"first_error,omitempty"`
	Received   uint64         `json:"received"`     // publication pushes read by healthy clients
	Gaps       uint64         `json:"gaps"`         // sequence numbers skipped (conflated or lost)
	OutOfOrder uint64         `json:"out_of_order"` // a sequence number below the previous
	Duplicates uint64         `json:"duplicates"`   // a sequence number equal to the previous
	Closes     map[string]int `json:"closes"`       // close codes seen, healthy and stalled
	Latency    Histogram      `json:"latency"`      // intended send time → read, healthy clients
	// BadDeltas counts patches that did not apply or rebuilt no valid
	// value (delta clients).
	BadDeltas uint64 `json:"bad_deltas"`
	WireBytes uint64 `json:"wire_bytes"` // frames read by healthy clients, headers included
	// Channels: per channel, the healthy clients' final values and
	// priority publications, for the verdicts.
	Channels map[string]*ChannelResult `json:"channels"`
	// Series is, per unix second, the latency of what healthy clients read
	// in that second (N is deliveries); Connects the clients subscribed in
	// that second. For charts over time (edgebench report).
	Series   map[int64]*Histogram `json:"series"`
	Connects map[int64]int        `json:"connects"`
	// Reconnect storms: resubscriptions made, and the time from dropping
	// the socket to the subscribe reply; clients that could not come back.
	Reconnect       Histogram `json:"reconnect"`
	ReconnectFailed int       `json:"reconnect_failed"`
	// Failover (WorkerConfig.Failover): clients that moved to another
	// relay (Reconnect then holds the time from losing the socket to the
	// last subscribe reply), publications recovered in the subscribe
	// replies, and subscriptions the relay answered recovered:false (it
	// could not fill the gap; what was lost counts in Gaps).
	Moved        int    `json:"moved,omitempty"`
	Recovered    uint64 `json:"recovered,omitempty"`
	NotRecovered uint64 `json:"not_recovered,omitempty"`
	// Connect is, per client, the time from dialling to the last
	// subscribe reply of its first session.
	Connect Histogram `json:"connect"`
	// Nodes, in a cluster run (WorkerConfig.URLs), is the same per relay,
	// in URLs' order: the clients that connected (or tried) to it. Series,
	// Connects and FirstError are only in the total.
	Nodes []WorkerResult `json:"nodes,omitempty"`
}

// seriesSink collects a worker's per-second histograms; clients hand over
// a second's histogram once it is over, so the lock is taken about once a
// second per client.
type seriesSink struct {
	mu       sync.Mutex
	series   map[int64]*Histogram
	connects map[int64]int
}

func (s *seriesSink) add(sec int64, h *Histogram) {
	if h.N == 0 {
		return
	}
	s.mu.Lock()
	dst := s.series[sec]
	if dst == nil {
		dst = &Histogram{}
		s.series[sec] = dst
	}
	dst.Merge(h)
	s.mu.Unlock()
	*h = Histogram{}
}

func (s *seriesSink) connected(sec int64) {
	s.mu.Lock()
	s.connects[sec]++
	s.mu.Unlock()
}

// Add merges o into r.
func (r *WorkerResult) Add(o *WorkerResult) {
	r.Connected += o.Connected
	r.Failed += o.Failed
	if r.FirstError == "" {
		r.FirstError = o.FirstError
	}
	r.Received += o.Received
	r.Gaps += o.Gaps
	r.OutOfOrder += o.OutOfOrder
	r.Duplicates += o.Duplicates
	r.BadDeltas += o.BadDeltas
	r.WireBytes += o.WireBytes
	if r.Series == nil {
		r.Series, r.Connects = map[int64]*Histogram{}, map[int64]int{}
	}
	for sec, h := range o.Series {
		if r.Series[sec] == nil {
			r.Series[sec] = &Histogram{}
		}
		r.Series[sec].Merge(h)
	}
	for sec, n := range o.Connects {
		r.Connects[sec] += n
	}
	if r.Channels == nil {
		r.Channels = map[string]*ChannelResult{}
	}
	for ch, oc := range o.Channels {
		c := r.Channels[ch]
		if c == nil {
			c = &ChannelResult{Last: map[int64]int{}}
			r.Channels[ch] = c
		}
		c.Clients += oc.Clients
		c.Priority += oc.Priority
		for seq, n := range oc.Last {
			c.Last[seq] += n
		}
	}
	if r.Closes == nil {
		r.Closes = map[string]int{}
	}
	for k, v := range o.Closes {
		r.Closes[k] += v
	}
	r.Latency.Merge(&o.Latency)
	r.Reconnect.Merge(&o.Reconnect)
	r.ReconnectFailed += o.ReconnectFailed
	r.Moved += o.Moved
	r.Recovered += o.Recovered
	r.NotRecovered += o.NotRecovered
	r.Connect.Merge(&o.Connect)
	for i := range o.Nodes {
		for len(r.Nodes) <= i {
			r.Nodes = append(r.Nodes, WorkerResult{})
		}
		r.Nodes[i].Add(&o.Nodes[i])
	}
}

// addClient adds what client c measured (all but Connected and Failed).
func (r *WorkerResult) addClient(c *clientResult) {
	if r.Closes == nil {
		r.Closes, r.Channels = map[string]int{}, map[string]*ChannelResult{}
	}
	if c.close != "" {
		r.Closes[c.close]++
	}
	if c.subscribed {
		r.Connect.Record(c.connectTook)
	}
	if c.stalled {
		return
	}
	r.Received += c.received
	r.Gaps += c.gaps
	r.OutOfOrder += c.outOfOrder
	r.Duplicates += c.duplicates
	r.BadDeltas += c.badDeltas
	r.WireBytes += c.wireBytes
	r.Reconnect.Merge(&c.reconnect)
	if c.reconnectFailed {
		r.ReconnectFailed++
	}
	if c.moved {
		r.Moved++
	}
	r.Recovered += c.recovered
	r.NotRecovered += c.notRecovered
	if c.subscribed {
		for _, s := range c.subs {
			cr := r.Channels[s.name]
			if cr == nil {
				cr = &ChannelResult{Last: map[int64]int{}}
				r.Channels[s.name] = cr
			}
			cr.Clients++
			cr.Last[s.lastSeq]++
			cr.Priority += s.priority
		}
	}
	r.Latency.Merge(&c.latency)
}

// RunWorker opens cfg.Conns clients, calls ready once every client is
// subscribed (or failed), and measures until ctx is done.
func RunWorker(ctx context.Context, cfg WorkerConfig, ready func(connected, failed int)) WorkerResult {
	return runWorker(ctx, cfg, ready, nil)
}

// workerProbe lets a test see, while a worker runs, whether its clients
// hold the feed's final values (see holds), so that it can poll instead of
// sleeping. Set before ready is called.
type workerProbe struct {
	mu      sync.Mutex
	results []clientResult
}

// holds reports whether every healthy subscribed client's every
// subscription last read final[channel] (from a push or a resubscribe).
func (p *workerProbe) holds(final map[string]int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.results {
		c := &p.results[i]
		if c.stalled {
			continue
		}
		for _, s := range c.subs {
			if s.held.Load() != final[s.name] {
				return false
			}
		}
	}
	return true
}

// beyond reports whether some healthy client's subscription has read
// past sequence number seq.
func (p *workerProbe) beyond(seq int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.results {
		for _, s := range p.results[i].subs {
			if !p.results[i].stalled && s.held.Load() > seq {
				return true
			}
		}
	}
	return false
}

func runWorker(ctx context.Context, cfg WorkerConfig, ready func(connected, failed int), probe *workerProbe) WorkerResult {
	var (
		mu      sync.Mutex
		total   WorkerResult
		wg      sync.WaitGroup
		setup   sync.WaitGroup
		results = make([]clientResult, cfg.Conns)
	)
	total.Closes = map[string]int{}
	total.Channels = map[string]*ChannelResult{}
	plain := ws.Dialer{Timeout: 10 * time.Second, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		if cfg.Source != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.Source)}
		}
		return d.DialContext(ctx, network, addr)
	}}
	deflating := plain
	deflating.Extensions = deflateOffer(true)
	protobufProtocols := []string{pbSubprotocol}
	var tick <-chan time.Time
	if cfg.Ramp > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Ramp))
		defer t.Stop()
		tick = t.C
	}
	sink := &seriesSink{series: map[int64]*Histogram{}, connects: map[int64]int{}}
	allReady := &readiness{ch: make(chan struct{})} // storms count from when every client subscribed
	for i := 0; i < cfg.Conns; i++ {
		if tick != nil {
			<-tick
		}
		setup.Add(1)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := &results[i]
			c.stalled = i < cfg.Stalled
			c.url = cfg.URL
			if len(cfg.URLs) > 0 {
				c.node = (cfg.First + i) % len(cfg.URLs)
				c.url, c.at = cfg.URLs[c.node], c.node
			}
			c.dialled = time.Now()
			c.sink = sink
			c.allReady = allReady
			c.delta = cfg.Delta || share(i, cfg.DeltaShare)
			c.deflate = cfg.Deflate || share(i+50, cfg.DeflateShare)                  // offset: the two mixes overlap only partly
			c.protobuf = cfg.Protobuf || share(i+25, cfg.ProtobufShare)               // half on delta's clients, half on deflate's (at 50 % each)
			c.failover = cfg.Failover && len(cfg.URLs) > 1 && !c.delta && !c.protobuf // JSON full values only
			for _, ch := range channelsOf(cfg, i) {
				c.subs = append(c.subs, &chanState{name: ch})
			}
			d := plain
			if c.deflate {
				d = deflating
			}
			if c.protobuf {
				d.Protocols = protobufProtocols
			}
			err := c.run(ctx, d, cfg, setup.Done)
			if err != nil {
				mu.Lock()
				if total.FirstError == "" {
					total.FirstError = err.Error()
				}
				mu.Unlock()
			}
		}(i)
	}
	setup.Wait()
	if probe != nil {
		probe.mu.Lock()
		probe.results = results
		probe.mu.Unlock()
	}
	allReady.at = time.Now()
	close(allReady.ch)
	total.Nodes = make([]WorkerResult, len(cfg.URLs))
	for i := range results {
		n := &WorkerResult{} // the client's relay's part, or a throwaway
		if len(cfg.URLs) > 0 {
			n = &total.Nodes[results[i].node]
		}
		if results[i].subscribed {
			total.Connected++
			n.Connected++
		} else {
			total.Failed++
			n.Failed++
		}
	}
	ready(total.Connected, total.Failed)
	<-ctx.Done()
	wg.Wait()
	total.Series, total.Connects = sink.series, sink.connects
	for i := range results {
		c := &results[i]
		total.addClient(c)
		if len(cfg.URLs) > 0 {
			total.Nodes[c.node].addClient(c)
		}
	}
	return total
}

// chanState is one subscription of a client.
type chanState struct {
	name     string
	lastSeq  int64
	priority uint64 // priority publications read
	base     []byte // delta: the last value, what the next patch applies to
	scratch  []byte
	data     []byte // the push's data string, unescaped
	// held mirrors lastSeq for workerProbe (read by another goroutine).
	held atomic.Int64
	// Protobuf: the subscribe reply said delta (data is raw, a patch when
	// the publication says delta), and the channel's compact id.
	pbDelta bool
	id      int64
	// Failover: the stream position last read (subscribe reply or push),
	// where a resubscribe recovers from.
	epoch  string
	offset uint64
}

func (s *chanState) setSeq(seq int64) {
	s.lastSeq = seq
	s.held.Store(seq)
}

// share says whether client i is in the first fraction f of every 100.
func share(i int, f float64) bool { return f > 0 && float64(i%100) < f*100 }

// channelsOf is client i's subscriptions (see WorkerConfig).
func channelsOf(cfg WorkerConfig, i int) []string {
	k := max(cfg.ChannelsPerClient, 1)
	n := len(cfg.Channels)
	hot := max(n/10, 1)
	var out []string
	seen := map[string]bool{}
	for j := 0; j < k && len(out) < n; j++ {
		x := i*k + j
		var ch string
		switch {
		case cfg.Popular <= 0 || n == 1:
			ch = cfg.Channels[x%n]
		case float64((x*7919)%1000) < cfg.Popular*1000: // spread, not striped
			ch = cfg.Channels[x%hot]
		default:
			ch = cfg.Channels[hot+x%(n-hot)]
		}
		for seen[ch] { // pick the next one free
			x++
			ch = cfg.Channels[x%n]
		}
		seen[ch] = true
		out = append(out, ch)
	}
	return out
}

type clientResult struct {
	url            string // the relay it connects to
	node           int    // its index in WorkerConfig.URLs
	dialled        time.Time
	connectTook    time.Duration // dialled → subscribed, first session
	stalled        bool
	subscribed     bool
	received       uint64
	gaps           uint64
	outOfOrder     uint64
	duplicates     uint64
	badDeltas      uint64
	wireBytes      uint64
	delta, deflate bool
	protobuf       bool
	subs           []*chanState // in subscribe order: command id 2+i
	replied        int          // subscribe replies of the current session
	close          string
	latency        Histogram
	sink           *seriesSink
	allReady       *readiness
	// reconnect storms (WorkerConfig.ReconnectEvery)
	dropping        atomic.Bool  // the client itself closed the socket to reconnect
	subscribedAgain bool         // since the last drop
	droppedAt       atomic.Int64 // unix nanos of the last drop; 0: none yet
	reconnect       Histogram
	reconnectFailed bool
	sec             int64 // the second cur collects
	// failover (WorkerConfig.Failover): at is the index in URLs of the
	// relay it is on now (node stays the first, for the per-relay parts)
	failover     bool
	at           int
	moved        bool // it failed over at least once
	recovered    uint64
	notRecovered uint64
	cur          Histogram // this second's latencies, handed to sink when it is over
}

var errClosed = errors.New("closed by server")

// failoverAttempts bounds a failing-over client's connection attempts
// after one loss (WorkerConfig.Failover).
const failoverAttempts = 30

// readiness is closed (ch) once every client of a worker subscribed; at
// is when, written before the close.
type readiness struct {
	ch chan struct{}
	at time.Time
}

func (c *clientResult) run(ctx context.Context, d ws.Dialer, cfg WorkerConfig, setupDone func()) error {
	once := sync.OnceFunc(setupDone)
	defer once()
	defer func() { c.sink.add(c.sec, &c.cur) }()
	attempts := 0
	for storm := 1; ; storm++ {
		err := c.session(ctx, d, cfg, once, storm)
		if c.failover && ctx.Err() == nil && c.subscribed && !c.stalled && !c.dropping.Load() {
			// The relay closed the socket or the connection dropped:
			// on to the next relay, the lost time counted from the first
			// loss to the subscribe reply on the one that takes it.
			if c.subscribedAgain || c.droppedAt.Load() == 0 {
				c.droppedAt.Store(time.Now().UnixNano())
				c.subscribedAgain, attempts = false, 0
			}
			if attempts++; attempts > failoverAttempts {
				c.reconnectFailed = true
				return err
			}
			if attempts > len(cfg.URLs) {
				time.Sleep(100 * time.Millisecond) // every relay refused: wait a little
			}
			c.moved = true
			c.at = (c.at + 1) % len(cfg.URLs)
			c.url = cfg.URLs[c.at]
			storm-- // not a storm
			continue
		}
		if ctx.Err() != nil || !c.dropping.Load() {
			// A reconnect that failed on its own (not cut short by the
			// end of the run) is a failure.
			if ctx.Err() == nil && c.droppedAt.Load() != 0 && !c.subscribedAgain {
				c.reconnectFailed = true
			}
			return err
		}
		c.dropping.Store(false)
		c.subscribedAgain = false
		for _, s := range c.subs {
			s.base = nil // the subscribe reply brings the new base
			s.pbDelta, s.id = false, 0
		}
	}
}

// session is one connection: dial, subscribe, read until the socket ends.
// With ReconnectEvery it drops the socket itself at storm n (counted from
// when every client of the worker subscribed).
func (c *clientResult) session(ctx context.Context, d ws.Dialer, cfg WorkerConfig, once func(), n int) error {
	conn, _, hs, err := d.Dial(ctx, c.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	if c.deflate && len(hs.Extensions) == 0 {
		return fmt.Errorf("the relay did not accept permessage-deflate")
	}
	if c.protobuf && hs.Protocol != pbSubprotocol {
		return fmt.Errorf("the relay did not accept the %s subprotocol", pbSubprotocol)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		var storm <-chan time.Time
		if cfg.ReconnectEvery > 0 && !c.stalled {
			select {
			case <-c.allReady.ch:
			case <-done:
				return
			case <-ctx.Done():
				conn.Close()
				return
			}
			storm = time.After(time.Until(c.allReady.at.Add(time.Duration(n) * cfg.ReconnectEvery)))
		}
		select {
		case <-ctx.Done():
		case <-done:
			return
		case <-storm:
			c.droppedAt.Store(time.Now().UnixNano())
			c.dropping.Store(true)
		}
		conn.Close()
	}()
	c.replied = 0
	if err := c.subscribe(conn); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 4096)
	var payload []byte
	var inf inflater
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return err
		}
		if int64(cap(payload)) < h.Length {
			payload = make([]byte, h.Length)
		}
		payload = payload[:h.Length]
		if _, err := io.ReadFull(br, payload); err != nil {
			return err
		}
		now := time.Now()
		switch h.OpCode {
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(payload)
			c.close = strconv.Itoa(int(code))
			return errClosed
		case ws.OpPing:
			wsutil.WriteClientMessage(conn, ws.OpPong, payload)
			continue
		case ws.OpText, ws.OpBinary:
			if binary := h.OpCode == ws.OpBinary; binary != c.protobuf {
				return fmt.Errorf("%s frame on a %s connection", map[bool]string{true: "binary", false: "text"}[binary],
					map[bool]string{true: "Protobuf", false: "JSON"}[c.protobuf])
			}
		default:
			continue
		}
		text := payload
		if h.Rsv&4 != 0 { // RSV1: compressed
			if text, err = inf.inflate(payload); err != nil {
				return err
			}
		}
		if c.subscribed {
			c.wireBytes += uint64(int64(ws.HeaderSize(h)) + h.Length)
		}
		if c.protobuf {
			if err := c.protobufMessage(conn, text, now); err != nil {
				return err
			}
		} else {
			for line := range bytes.SplitSeq(text, []byte{'\n'}) {
				c.line(conn, line, now)
			}
		}
		if c.subscribed {
			once()
			if c.stalled {
				<-ctx.Done() // never read again
				return nil
			}
		}
	}
}

// subscribe sends connect and a subscribe per channel in one message, in
// the client's encoding.
func (c *clientResult) subscribe(conn net.Conn) error {
	if c.protobuf {
		cmds := pbAppendConnect(nil, 1, "edgebench")
		for i, s := range c.subs {
			cmds = pbAppendSubscribe(cmds, uint32(2+i), s.name, c.delta, false)
		}
		return wsutil.WriteClientBinary(conn, cmds)
	}
	opts := ""
	if c.delta {
		opts = `,"delta":"fossil"`
	}
	cmds := []byte(`{"id":1,"connect":{"name":"edgebench"}}`)
	for i, s := range c.subs {
		rec := ""
		if c.failover && (s.epoch != "" || s.offset > 0) {
			// With no epoch (the channel was empty at the first
			// subscribe) the relay cannot recover: it answers
			// recovered:false with the latest value, counted as such.
			rec = fmt.Sprintf(`,"recover":true,"epoch":%q,"offset":%d`, s.epoch, s.offset)
		}
		cmds = fmt.Appendf(cmds, "\n{\"id\":%d,\"subscribe\":{\"channel\":%q%s%s}}", 2+i, s.name, opts, rec)
	}
	return wsutil.WriteClientText(conn, cmds)
}

var (
	keyPush    = []byte(`"push"`)
	keySub     = []byte(`"subscribe":{`)
	keyT       = []byte(`"t":`)
	keySeq     = []byte(`"seq":`)
	keyID      = []byte(`{"id":`)
	keyChannel = []byte(`"channel":"`)
	// keyPriority marks the feed's priority records (see FeedConfig).
	keyPriority = []byte(`"p":1,`)
	// keyDeltaData: in a delta subscription the JSON protocol sends data
	// as a string, the full value or (with "delta":true) a patch.
	keyDeltaData = []byte(`"data":"`)
	keyDelta     = []byte(`"delta":true`)
	// keyOffset: a push's publication offset, after its data (failover).
	keyOffset = []byte(`"offset":`)
)

// failoverReply takes a subscribe reply of a failing-over client (JSON,
// full values): the first session's only sets the stream position; a
// resubscribe's recovered publications are checked as pushes, so that a
// gap or a duplicate across the switch counts. Then as subscribeReply.
func (c *clientResult) failoverReply(s *chanState, line []byte, now time.Time) {
	var r struct {
		Subscribe struct {
			Epoch         string `json:"epoch"`
			Offset        uint64 `json:"offset"`
			Recovered     bool   `json:"recovered"`
			WasRecovering bool   `json:"was_recovering"`
			Publications  []struct {
				Data   json.RawMessage `json:"data"`
				Offset uint64          `json:"offset"`
			} `json:"publications"`
		} `json:"subscribe"`
	}
	if json.Unmarshal(line, &r) != nil {
		return
	}
	res := &r.Subscribe
	if c.droppedAt.Load() != 0 && res.WasRecovering {
		if !res.Recovered {
			c.notRecovered++
		}
		for _, p := range res.Publications {
			if res.Recovered {
				c.recovered++
			}
			c.publication(s, p.Data, now)
		}
	}
	if res.Epoch != "" {
		s.epoch, s.offset = res.Epoch, max(res.Offset, s.offset)
	}
	c.subscribeReply(s, nil, now)
}

// rebuild returns the value a delta subscription's push carries: the data
// string itself, or the previous value patched. nil: it did not apply.
func (c *chanState) rebuild(line []byte) []byte {
	i := bytes.Index(line, keyDeltaData)
	if i < 0 {
		return nil
	}
	var ok bool
	c.data, ok = appendUnquoted(c.data[:0], line[i+len(keyDeltaData):])
	if !ok {
		return nil
	}
	return c.apply(c.data, bytes.Contains(line, keyDelta) && !bytes.Contains(line, keySub))
}

// apply returns the value a delta subscription's publication carries:
// data itself (kept as the next patch's base) or, if isPatch, the
// previous value patched. nil: the patch did not apply. data may alias
// c.data, never c.base or c.scratch.
func (c *chanState) apply(data []byte, isPatch bool) []byte {
	if !isPatch {
		c.base = append(c.base[:0], data...)
		return c.base
	}
	if c.base == nil {
		return nil // a patch with no base: the relay must never send one
	}
	out, err := delta.Decode(c.scratch[:0], c.base, data)
	if err != nil {
		return nil
	}
	c.scratch, c.base = c.base, out
	return c.base
}

// appendUnquoted appends the JSON string whose body starts at b (after
// the opening quote) to dst, unescaped. The load generator decodes every
// delta push, so this avoids encoding/json's allocations.
func appendUnquoted(dst, b []byte) ([]byte, bool) {
	for i := 0; i < len(b); i++ {
		switch ch := b[i]; ch {
		case '"':
			return dst, true
		case '\\':
			if i+1 >= len(b) {
				return dst, false
			}
			i++
			switch b[i] {
			case '"', '\\', '/':
				dst = append(dst, b[i])
			case 'n':
				dst = append(dst, '\n')
			case 't':
				dst = append(dst, '\t')
			case 'r':
				dst = append(dst, '\r')
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'u':
				if i+4 >= len(b) {
					return dst, false
				}
				r, err := strconv.ParseUint(string(b[i+1:i+5]), 16, 16)
				if err != nil || utf16.IsSurrogate(rune(r)) {
					// Fossil patches and our values are ASCII; a pair
					// would need joining, which the relay never sends.
					return dst, false
				}
				dst = utf8.AppendRune(dst, rune(r))
				i += 4
			default:
				return dst, false
			}
		default:
			dst = append(dst, ch)
		}
	}
	return dst, false
}

func (c *clientResult) line(conn net.Conn, line []byte, now time.Time) {
	switch {
	case bytes.Equal(line, []byte("{}")):
		wsutil.WriteClientText(conn, line) // pong
	case bytes.Contains(line, keySub):
		id, _ := intAfter(line, keyID)
		if id < 2 || int(id-2) >= len(c.subs) {
			return
		}
		s := c.subs[id-2]
		if c.failover {
			c.failoverReply(s, line, now)
			return
		}
		value := line
		if bytes.Contains(line, keyDeltaData) {
			value = s.rebuild(line)
		}
		c.subscribeReply(s, value, now)
	case bytes.Contains(line, keyPush):
		s := c.subOf(line)
		if s == nil {
			return
		}
		if c.failover {
			if off, ok := intAfter(line[max(bytes.LastIndex(line, keyOffset), 0):], keyOffset); ok {
				s.offset = uint64(off)
			}
		}
		if s.base != nil || bytes.Contains(line, keyDeltaData) {
			line = s.rebuild(line)
			if line == nil {
				c.badDeltas++
				return
			}
		}
		c.publication(s, line, now)
	}
}

// protobufMessage handles one message of a Protobuf client: its Replies
// are the pings, the subscribe replies and the pushes that the JSON
// client reads as lines, and they get the same checks. A malformed reply
// or an error reply ends the session.
func (c *clientResult) protobufMessage(conn net.Conn, msg []byte, now time.Time) error {
	for len(msg) > 0 {
		var r pbReply
		rest, err := r.decode(msg)
		if err != nil {
			return fmt.Errorf("malformed Protobuf reply %x: %w", msg[:min(len(msg), 64)], err)
		}
		msg = rest
		switch {
		case r.Empty:
			wsutil.WriteClientBinary(conn, pbPong)
		case r.HasError:
			return fmt.Errorf("reply %d: error %d: %s", r.ID, r.ErrCode, r.ErrMessage)
		case r.HasSub:
			if r.ID < 2 || int(r.ID-2) >= len(c.subs) {
				continue
			}
			s := c.subs[r.ID-2]
			s.pbDelta, s.id = r.Sub.Delta, r.Sub.ID
			var value []byte
			if r.Sub.Pubs > 0 {
				value = r.Sub.Last.Data
				if s.pbDelta {
					// Always full; its data is the base of the first patch.
					if value = s.apply(value, r.Sub.Last.Delta); value == nil {
						c.badDeltas++
					}
				}
			}
			c.subscribeReply(s, value, now)
		case r.HasPush && r.Push.HasPub:
			s := c.pbSubOf(&r.Push)
			if s == nil {
				continue
			}
			value := r.Push.Pub.Data
			if s.pbDelta || r.Push.Pub.Delta {
				if value = s.apply(value, r.Push.Pub.Delta); value == nil {
					c.badDeltas++
					continue
				}
			}
			c.publication(s, value, now)
		}
	}
	return nil
}

// pbSubOf is the subscription a Protobuf push is for, from its channel
// (or its compact id, should the relay send one).
func (c *clientResult) pbSubOf(p *pbPush) *chanState {
	if len(c.subs) == 1 {
		return c.subs[0]
	}
	for _, s := range c.subs {
		if (p.ID != 0 && p.ID == s.id) || (p.ID == 0 && string(p.Channel) == s.name) {
			return s
		}
	}
	return nil
}

// subscribeReply takes the reply to s's subscribe, whose cached
// publication (nil: none) carries value; the client is subscribed once
// every channel's reply is in.
func (c *clientResult) subscribeReply(s *chanState, value []byte, now time.Time) {
	// The cached value may come from an earlier run with other sequence
	// numbers: order is checked from the first live push. In a delta
	// subscription it is the base of the first patch.
	if c.droppedAt.Load() != 0 {
		// A resubscribe after a storm: the cached value is this run's,
		// the latest the client holds now; what it missed while away
		// counts as skipped.
		if seq, ok := intAfter(value, keySeq); ok && seq > s.lastSeq {
			c.gaps += uint64(seq - s.lastSeq - 1)
			s.setSeq(seq)
		}
	}
	if c.replied++; c.replied < len(c.subs) {
		return
	}
	if at := c.droppedAt.Load(); at != 0 && !c.subscribedAgain {
		c.subscribedAgain = true
		c.reconnect.Record(now.Sub(time.Unix(0, at)))
	} else if !c.subscribed {
		c.sink.connected(now.Unix())
		c.connectTook = now.Sub(c.dialled)
	}
	c.subscribed = true
}

// publication checks one publication of s, its value rebuilt: latency
// from the feed's intended send time, and order, duplicates and gaps from
// its per-channel sequence number.
func (c *clientResult) publication(s *chanState, value []byte, now time.Time) {
	t, ok := intAfter(value, keyT)
	if !ok {
		return
	}
	c.received++
	d := now.Sub(time.Unix(0, t))
	c.latency.Record(d)
	if sec := now.Unix(); sec != c.sec {
		c.sink.add(c.sec, &c.cur)
		c.sec = sec
	}
	c.cur.Record(d)
	if seq, ok := intAfter(value, keySeq); ok {
		switch {
		case s.lastSeq != 0 && seq == s.lastSeq:
			c.duplicates++
		case s.lastSeq != 0 && seq < s.lastSeq:
			c.outOfOrder++
		case seq > s.lastSeq+1: // the feed starts at 1 after every client subscribed
			c.gaps += uint64(seq - s.lastSeq - 1)
		}
		if bytes.Contains(value, keyPriority) {
			s.priority++
		}
		s.setSeq(seq) // last: workerProbe takes it as the end of this publication's counts
	}
}

// subOf is the subscription a push is for, from its "channel" field
// (these clients do not ask for channel compaction).
func (c *clientResult) subOf(line []byte) *chanState {
	if len(c.subs) == 1 {
		return c.subs[0]
	}
	i := bytes.Index(line, keyChannel)
	if i < 0 {
		return nil
	}
	rest := line[i+len(keyChannel):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	for _, s := range c.subs {
		if string(rest[:j]) == s.name {
			return s
		}
	}
	return nil
}

// intAfter parses the integer right after key in b.
func intAfter(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	var n int64
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	return n, j > 0
}
