package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
)

// Map subscriptions (docs/protocol.md, "Map subscriptions") measured from
// outside, as the SDK's map subscription drives them: state pages by
// cursor, then the stream phase from the first page's position, until the
// reply that subscribes (edgebench maps). Three parts, one relay:
//
//   - memory: the relay's RSS and Go heap after a forced GC, before and
//     after filling maps of MapsConfig.Sizes keys through Kafka, and the
//     same number of channels in no map (what the map adds per entry);
//   - subscribe: per map size, page limit and encoding, a fresh client's
//     time from its first subscribe command to the reply that subscribes
//     it, and the wire bytes both ways in between;
//   - fan-out: Subscribers clients with one map subscription each to a map
//     of Keys entries, and as many with an ordinary subscription to every
//     channel of a second map of the same shape; the feed updates one map
//     at a time, alternating, so each window's deliveries go to one set:
//     relay CPU seconds per million deliveries and latency per set.
//
// The relay must make <Prefix><anything> maps of depth 1
// (channels.maps.rules: [{prefix: <Prefix>, depth: 1}]) and read Topic
// with the channel in the "channel" header; memory needs debug: true.
// Entries are produced keyed by their map (one partition: positions are
// Kafka's). The clients run in this process, one goroutine each.

// MapsConfig is an edgebench maps run.
type MapsConfig struct {
	URL     string
	Brokers []string
	Topic   string
	Prefix  string // a depth-1 map rule's prefix on the relay
	Sizes   []int  // keys of the maps whose subscribe is measured (and whose memory)
	// Pages are the limits the clients ask for (0: none, the relay's
	// channels.maps.page_size); Encodings "json" and/or "protobuf".
	Pages     []int
	Encodings []string
	Runs      int // subscribes per size, page and encoding (the median is reported)
	Size      int // value bytes of every entry and update
	// Fan-out: Subscribers clients per set, maps of Keys entries, Rate
	// updates/s during each Window, Rounds pairs of windows (map first,
	// then channels). Subscribers 0: no fan-out part.
	Subscribers int
	Keys        int
	Rate        float64
	Window      time.Duration
	Rounds      int
	// FanoutProtobuf: the fan-out clients speak Protobuf (else JSON).
	FanoutProtobuf bool
}

// MapsReport is what an edgebench maps run measured.
type MapsReport struct {
	Config         MapsConfig         `json:"config"`
	Run            string             `json:"run"` // in the names of the run's maps
	RelayResources string             `json:"relay_resources"`
	Memory         []MapMemory        `json:"memory"`
	Subscribe      []MapSubscribe     `json:"subscribe"`
	Windows        []MapFanoutWindow  `json:"windows,omitempty"`
	Fanout         []MapFanoutSummary `json:"fanout,omitempty"`
}

// MapMemory is the relay's growth after GC from filling entries.
type MapMemory struct {
	What         string  `json:"what"`
	Entries      int     `json:"entries"`
	Measured     bool    `json:"measured"` // POST /debug/gc answered
	RSSDelta     int64   `json:"rss_delta_bytes"`
	HeapDelta    int64   `json:"heap_delta_bytes"` // go_memstats_heap_alloc_bytes
	RSSPerEntry  float64 `json:"rss_per_entry"`
	HeapPerEntry float64 `json:"heap_per_entry"`
}

// MapSubscribe is one size, page and encoding: Runs flows.
type MapSubscribe struct {
	Keys     int             `json:"keys"`
	Page     int             `json:"page"` // the limit asked for; 0: none
	Encoding string          `json:"encoding"`
	Requests int             `json:"requests"` // subscribe commands of one flow
	Times    []time.Duration `json:"times"`    // first command → subscribed, per run
	Median   time.Duration   `json:"median"`
	// Decode: of the median run's time, the client's own decoding of the
	// replies (encoding/json, or protowire).
	Decode   time.Duration `json:"client_decode"`
	BytesIn  int64         `json:"bytes_in"`  // relay → client, frame headers included (one flow)
	BytesOut int64         `json:"bytes_out"` // client → relay
}

// MapFanoutWindow is one window of the fan-out part.
type MapFanoutWindow struct {
	Round         int           `json:"round"`
	Mode          string        `json:"mode"` // "map" or "channels"
	Records       uint64        `json:"records"`
	Expected      uint64        `json:"expected"` // records × subscribers
	Received      uint64        `json:"received"`
	CPUSeconds    float64       `json:"relay_cpu_seconds"`
	CPUPerMillion float64       `json:"relay_cpu_s_per_million"`
	P50           time.Duration `json:"p50"`
	P99           time.Duration `json:"p99"`
	Latency       Histogram     `json:"latency"`
}

// MapFanoutSummary is one mode over every round.
type MapFanoutSummary struct {
	Mode          string        `json:"mode"`
	Encoding      string        `json:"encoding"`
	Subscribers   int           `json:"subscribers"`
	Subscriptions int           `json:"subscriptions_per_client"`
	Expected      uint64        `json:"expected"`
	Received      uint64        `json:"received"`
	CPUPerMillion []float64     `json:"relay_cpu_s_per_million"` // per round
	Median        float64       `json:"median_cpu_s_per_million"`
	P50           time.Duration `json:"p50"`
	P99           time.Duration `json:"p99"`
}

// RunMaps runs the three parts against one relay.
func RunMaps(ctx context.Context, cfg MapsConfig, log io.Writer) (*MapsReport, error) {
	base, err := metricsURLOf(cfg.URL)
	if err != nil {
		return nil, err
	}
	usage := relayUsage(cfg.URL, base)
	rep := &MapsReport{Config: cfg, Run: strconv.FormatInt(time.Now().UnixNano()/int64(time.Millisecond)%1e9, 36), RelayResources: usage.source}
	prod, err := newFeedProducer(ctx, cfg.Brokers, "edgebench-maps")
	if err != nil {
		return nil, err
	}
	defer prod.Close()
	mapName := func(s string) string { return cfg.Prefix + rep.Run + "-" + s }

	// Memory: every size's map, then as many channels in no map as the
	// largest has keys.
	largest := slices.Max(cfg.Sizes)
	mem := func(what string, n int, fill func() error) error {
		m := MapMemory{What: what, Entries: n}
		rss0, gcErr := relayRSSAfterGC(base, usage)
		heap0, _ := scrape(base, "go_memstats_heap_alloc_bytes")
		if err := fill(); err != nil {
			return err
		}
		if gcErr == nil {
			rss1, err1 := relayRSSAfterGC(base, usage)
			heap1, err2 := scrape(base, "go_memstats_heap_alloc_bytes")
			if err1 == nil && err2 == nil {
				m.Measured, m.RSSDelta, m.HeapDelta = true, rss1-rss0, int64(heap1-heap0)
				m.RSSPerEntry, m.HeapPerEntry = float64(m.RSSDelta)/float64(n), float64(m.HeapDelta)/float64(n)
			}
		} else {
			fmt.Fprintf(log, "edgebench: %v (no memory figures)\n", gcErr)
		}
		rep.Memory = append(rep.Memory, m)
		return nil
	}
	for _, n := range cfg.Sizes {
		name := mapName("n" + strconv.Itoa(n))
		fmt.Fprintf(log, "edgebench: filling map %s with %d keys\n", name, n)
		if err := mem(fmt.Sprintf("map of %d keys", n), n, func() error {
			return fillMap(ctx, prod, cfg, base, name, entryChannels(name, n))
		}); err != nil {
			return nil, err
		}
	}
	plain := make([]string, largest)
	for i := range plain {
		plain[i] = fmt.Sprintf("bench:plain:%s:k%05d", rep.Run, i)
	}
	if err := mem(fmt.Sprintf("%d channels in no map", largest), largest, func() error {
		return fillMap(ctx, prod, cfg, base, "bench:plain:"+rep.Run, plain)
	}); err != nil {
		return nil, err
	}

	// Subscribe time and bytes.
	for _, n := range cfg.Sizes {
		for _, page := range cfg.Pages {
			for _, enc := range cfg.Encodings {
				s := MapSubscribe{Keys: n, Page: page, Encoding: enc}
				var bytesIn, bytesOut []int64
				var decodes []time.Duration
				for range cfg.Runs {
					c, err := dialMap(ctx, cfg.URL, enc == "protobuf")
					if err != nil {
						return nil, err
					}
					start := time.Now()
					reqs, entries, err := c.subscribeMap(mapName("n"+strconv.Itoa(n)), page)
					took := time.Since(start)
					c.conn.Close()
					if err != nil {
						return nil, fmt.Errorf("subscribing to the %d-key map (page %d, %s): %w", n, page, enc, err)
					}
					if entries != n {
						return nil, fmt.Errorf("the %d-key map's state (page %d, %s) had %d entries", n, page, enc, entries)
					}
					s.Requests = reqs
					s.Times = append(s.Times, took)
					bytesIn, bytesOut = append(bytesIn, c.in-c.connectIn), append(bytesOut, c.out-c.connectOut)
					decodes = append(decodes, c.decode-c.connectDecode)
				}
				s.Median, s.BytesIn, s.BytesOut = median(s.Times), median(bytesIn), median(bytesOut)
				s.Decode = decodes[slices.Index(s.Times, s.Median)]
				fmt.Fprintf(log, "edgebench: %d keys, page %d, %s: %d requests, median %v, %d B in\n", n, page, enc, s.Requests, s.Median, s.BytesIn)
				rep.Subscribe = append(rep.Subscribe, s)
			}
		}
	}
	if cfg.Subscribers > 0 {
		if err := rep.fanout(ctx, cfg, prod, base, usage, mapName, log); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// entryChannels are the channels of n entries of map name, in key order.
func entryChannels(name string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s:k%05d", name, i)
	}
	return out
}

// fillMap produces one record per channel, keyed by key (one partition,
// in order), and waits until the relay holds the last.
func fillMap(ctx context.Context, prod *kgo.Client, cfg MapsConfig, base, key string, channels []string) error {
	pad := strings.Repeat("o", max(cfg.Size-50, 1))
	recs := make([]*kgo.Record, len(channels))
	for i, ch := range channels {
		recs[i] = &kgo.Record{Topic: cfg.Topic, Key: []byte(key), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}},
			Value: fmt.Appendf(nil, `{"seq":1,"t":%d,"pad":"%s"}`, time.Now().UnixNano(), pad)}
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return err
	}
	return waitCached(base, channels[len(channels)-1], 30*time.Second)
}

// waitCached waits until the relay at base holds a value of channel
// (GET /v1/channels/…).
func waitCached(base, channel string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; {
		resp, err := http.Get(base + "/v1/channels/" + url.PathEscape(channel))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: channel %s has no value %v after it was produced", base, channel, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func median[T int64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// fanoutSet is one set of fan-out clients.
type fanoutSet struct {
	mode     string
	encoding string
	clients  []*mapConn
	received atomic.Uint64
	bad      atomic.Uint64 // pushes of the other shape (a key missing, or there)
}

func (rep *MapsReport) fanout(ctx context.Context, cfg MapsConfig, prod *kgo.Client, base string, usage relayUsageSource,
	mapName func(string) string, log io.Writer) error {
	maps := [2]string{mapName("fan-map"), mapName("fan-channels")}
	var chans [2][]string
	for i, m := range maps {
		chans[i] = entryChannels(m, cfg.Keys)
		if err := fillMap(ctx, prod, cfg, base, m, chans[i]); err != nil {
			return err
		}
	}
	enc := map[bool]string{false: "json", true: "protobuf"}[cfg.FanoutProtobuf]
	sets := [2]*fanoutSet{{mode: "map", encoding: enc}, {mode: "channels", encoding: enc}}
	fctx, stop := context.WithCancel(ctx) // closes every client
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for si, set := range sets {
		for range cfg.Subscribers {
			c, err := dialMap(ctx, cfg.URL, cfg.FanoutProtobuf)
			if err != nil {
				return err
			}
			context.AfterFunc(fctx, func() { c.conn.Close() })
			if si == 0 {
				if _, n, err := c.subscribeMap(maps[0], 0); err != nil || n != cfg.Keys {
					return fmt.Errorf("map subscription: %d entries, %v", n, err)
				}
			} else if err := c.subscribeChannels(chans[1]); err != nil {
				return err
			}
			set.clients = append(set.clients, c)
			wg.Go(func() { c.readPushes(set, si == 0) })
		}
	}
	fmt.Fprintf(log, "edgebench: %d map subscribers and %d subscribers of %d channels each (%s); %d rounds of %v windows at %.0f updates/s\n",
		cfg.Subscribers, cfg.Subscribers, cfg.Keys, enc, cfg.Rounds, cfg.Window, cfg.Rate)
	for round := 1; round <= cfg.Rounds; round++ {
		for si, set := range sets {
			w := MapFanoutWindow{Round: round, Mode: set.mode}
			set.received.Store(0)
			_, cpu0, err := usage.read()
			if err != nil {
				return err
			}
			fr, err := RunFeed(ctx, FeedConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, Channels: chans[si], Rate: cfg.Rate, Size: cfg.Size,
				Duration: cfg.Window, Key: maps[si]})
			if err != nil {
				return err
			}
			w.Records, w.Expected = fr.Sent, fr.Sent*uint64(cfg.Subscribers)
			for deadline := time.Now().Add(5 * time.Second); set.received.Load() < w.Expected && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			_, cpu1, err := usage.read()
			if err != nil {
				return err
			}
			w.Received, w.CPUSeconds = set.received.Load(), cpu1-cpu0
			if w.Received > 0 {
				w.CPUPerMillion = w.CPUSeconds / float64(w.Received) * 1e6
			}
			for _, c := range set.clients {
				c.mu.Lock()
				w.Latency.Merge(&c.hist)
				c.hist = Histogram{}
				c.mu.Unlock()
			}
			w.P50, w.P99 = w.Latency.Quantile(0.5), w.Latency.Quantile(0.99)
			fmt.Fprintf(log, "edgebench: round %d, %s: %d of %d deliveries, relay %.2f CPU s (%.2f s per million), p50 %v, p99 %v\n",
				round, set.mode, w.Received, w.Expected, w.CPUSeconds, w.CPUPerMillion, w.P50, w.P99)
			rep.Windows = append(rep.Windows, w)
			time.Sleep(500 * time.Millisecond) // a gap between windows
		}
	}
	for si, set := range sets {
		s := MapFanoutSummary{Mode: set.mode, Encoding: set.encoding, Subscribers: cfg.Subscribers, Subscriptions: 1}
		if si == 1 {
			s.Subscriptions = cfg.Keys
		}
		var h Histogram
		for _, w := range rep.Windows {
			if w.Mode == set.mode {
				s.Expected += w.Expected
				s.Received += w.Received
				s.CPUPerMillion = append(s.CPUPerMillion, w.CPUPerMillion)
				h.Merge(&w.Latency)
			}
		}
		sorted := slices.Sorted(slices.Values(s.CPUPerMillion))
		s.Median = sorted[len(sorted)/2]
		s.P50, s.P99 = h.Quantile(0.5), h.Quantile(0.99)
		rep.Fanout = append(rep.Fanout, s)
		if n := set.bad.Load(); n > 0 {
			return fmt.Errorf("%s subscribers: %d pushes of the wrong shape", set.mode, n)
		}
	}
	return nil
}

// Verdict is nil when every fan-out delivery arrived.
func (rep *MapsReport) Verdict() error {
	for _, s := range rep.Fanout {
		if s.Received != s.Expected {
			return fmt.Errorf("verdict: FAIL: %s subscribers got %d of %d deliveries", s.Mode, s.Received, s.Expected)
		}
	}
	return nil
}

// Markdown renders the report's three tables.
func (rep *MapsReport) Markdown() string {
	var b strings.Builder
	b.WriteString("| memory (after GC) | entries | RSS Δ | RSS B/entry | heap Δ | heap B/entry |\n|---|---|---|---|---|---|\n")
	for _, m := range rep.Memory {
		if !m.Measured {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", m.What, m.Entries, unmeasured, unmeasured, unmeasured, unmeasured)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f MB | %.0f | %.1f MB | %.0f |\n", m.What, m.Entries, float64(m.RSSDelta)/1e6, m.RSSPerEntry,
			float64(m.HeapDelta)/1e6, m.HeapPerEntry)
	}
	b.WriteString("\n| map keys | page | encoding | requests | subscribe time (median) | of it client decode | runs | bytes in | bytes out | bytes in/entry |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range rep.Subscribe {
		page := strconv.Itoa(s.Page)
		if s.Page == 0 {
			page = "default"
		}
		runs := make([]string, len(s.Times))
		for i, t := range s.Times {
			runs[i] = t.Round(10 * time.Microsecond).String()
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %d | %v | %v | %s | %d | %d | %.1f |\n", s.Keys, page, s.Encoding, s.Requests,
			s.Median.Round(10*time.Microsecond), s.Decode.Round(10*time.Microsecond), strings.Join(runs, ", "), s.BytesIn, s.BytesOut, float64(s.BytesIn)/float64(s.Keys))
	}
	if len(rep.Fanout) > 0 {
		b.WriteString("\n| fan-out | encoding | subscribers | subscriptions each | deliveries | relay CPU s per million deliveries (median; per round) | p50 | p99 |\n|---|---|---|---|---|---|---|---|\n")
		for _, s := range rep.Fanout {
			rounds := make([]string, len(s.CPUPerMillion))
			for i, v := range s.CPUPerMillion {
				rounds[i] = fmt.Sprintf("%.2f", v)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %d/%d | **%.2f** (%s) | %v | %v |\n", s.Mode, s.Encoding, s.Subscribers, s.Subscriptions, s.Received, s.Expected,
				s.Median, strings.Join(rounds, ", "), s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond))
		}
	}
	return b.String()
}

// mapConn is one client of a maps run: JSON or Protobuf, counting the
// wire bytes both ways (frame headers included).
type mapConn struct {
	conn                  net.Conn
	br                    *bufio.Reader
	protobuf              bool
	in, out               int64
	connectIn, connectOut int64 // of the connect exchange
	// decode: time spent decoding replies other than pushes
	decode, connectDecode time.Duration
	nextID                uint32
	pending               [][]byte // messages of the last frame not yet read
	// Fan-out: the latency of the pushes read (readPushes), taken by the
	// run after each window.
	mu   sync.Mutex
	hist Histogram
}

// dialMap connects a client and sends connect.
func dialMap(ctx context.Context, wsURL string, protobuf bool) (*mapConn, error) {
	d := ws.Dialer{Timeout: 10 * time.Second}
	if protobuf {
		d.Protocols = []string{pbSubprotocol}
	}
	conn, br, hs, err := d.Dial(ctx, wsURL)
	if err != nil {
		return nil, err
	}
	if protobuf && hs.Protocol != pbSubprotocol {
		conn.Close()
		return nil, fmt.Errorf("the relay did not accept the %s subprotocol", pbSubprotocol)
	}
	if br == nil {
		br = bufio.NewReader(conn)
	}
	c := &mapConn{conn: conn, br: br, protobuf: protobuf, nextID: 1}
	var cmd []byte
	if protobuf {
		cmd = pbAppendConnect(nil, 1, "edgebench-maps")
	} else {
		cmd = []byte(`{"id":1,"connect":{"name":"edgebench-maps"}}`)
	}
	if err := c.write(cmd); err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := c.reply(1); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	c.connectIn, c.connectOut, c.connectDecode = c.in, c.out, c.decode
	return c, nil
}

func (c *mapConn) write(msg []byte) error {
	op := ws.OpText
	if c.protobuf {
		op = ws.OpBinary
	}
	c.out += int64(ws.HeaderSize(ws.Header{Length: int64(len(msg)), Masked: true})) + int64(len(msg))
	return wsutil.WriteClientMessage(c.conn, op, msg)
}

// frame reads the relay's next data frame, answering WebSocket pings.
func (c *mapConn) frame() ([]byte, error) {
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return nil, err
		}
		c.in += int64(ws.HeaderSize(h)) + h.Length
		switch h.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			return nil, fmt.Errorf("closed by the relay: %d %s", code, reason)
		case ws.OpPing:
			wsutil.WriteClientMessage(c.conn, ws.OpPong, payload)
		case ws.OpText, ws.OpBinary:
			return payload, nil
		}
	}
}

// message returns the next protocol message: a JSON line, or one
// Protobuf Reply (still delimited).
func (c *mapConn) message() ([]byte, error) {
	for len(c.pending) == 0 {
		f, err := c.frame()
		if err != nil {
			return nil, err
		}
		if !c.protobuf {
			c.pending = bytes.Split(f, []byte("\n"))
			continue
		}
		for len(f) > 0 {
			_, n := protowire.ConsumeBytes(f)
			if n < 0 {
				return nil, fmt.Errorf("malformed Protobuf frame %x", f[:min(len(f), 64)])
			}
			c.pending, f = append(c.pending, f[:n]), f[n:]
		}
	}
	m := c.pending[0]
	c.pending = c.pending[1:]
	return m, nil
}

// mapReply is the part of a reply a maps client reads.
type mapReply struct {
	phase          int32
	cursor, epoch  string
	offset         uint64
	keys           []string // state entries
	isPush, isPing bool
	data           []byte // a push's publication data
	hasKey         bool   // a push's publication has a key
}

// read reads one message into a mapReply; an error reply is an error.
func (c *mapConn) read() (id uint32, r mapReply, err error) {
	m, err := c.message()
	if err != nil {
		return 0, r, err
	}
	start := time.Now()
	defer func() {
		if !r.isPush {
			c.decode += time.Since(start)
		}
	}()
	if c.protobuf {
		var pr pbReply
		if _, err := pr.decode(m); err != nil {
			return 0, r, fmt.Errorf("malformed Protobuf reply: %w", err)
		}
		switch {
		case pr.Empty:
			r.isPing = true
		case pr.HasError:
			return pr.ID, r, fmt.Errorf("reply %d: error %d: %s", pr.ID, pr.ErrCode, pr.ErrMessage)
		case pr.HasPush:
			r.isPush, r.data, r.hasKey = pr.Push.HasPub, pr.Push.Pub.Data, len(pr.Push.Pub.Key) > 0
		case pr.HasSub:
			s := &pr.Sub
			r.phase, r.cursor, r.epoch, r.offset = s.Phase, string(s.Cursor), string(s.Epoch), s.Offset
			for _, k := range s.StateKeys {
				r.keys = append(r.keys, string(k))
			}
		}
		return pr.ID, r, nil
	}
	switch {
	case len(m) == 0:
		return c.read()
	case bytes.Equal(m, []byte("{}")):
		r.isPing = true
		return 0, r, nil
	case bytes.HasPrefix(m, keyPushPrefix):
		r.isPush, r.data, r.hasKey = true, m, bytes.Contains(m, keyMapKey)
		return 0, r, nil
	}
	var jr struct {
		ID    uint32 `json:"id"`
		Error *struct {
			Code    uint32 `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Subscribe *struct {
			Phase  int32  `json:"phase"`
			Cursor string `json:"cursor"`
			Epoch  string `json:"epoch"`
			Offset uint64 `json:"offset"`
			State  []struct {
				Key string `json:"key"`
			} `json:"state"`
		} `json:"subscribe"`
	}
	if err := json.Unmarshal(m, &jr); err != nil {
		return 0, r, fmt.Errorf("reply %.80q: %w", m, err)
	}
	if jr.Error != nil {
		return jr.ID, r, fmt.Errorf("reply %d: error %d: %s", jr.ID, jr.Error.Code, jr.Error.Message)
	}
	if s := jr.Subscribe; s != nil {
		r.phase, r.cursor, r.epoch, r.offset = s.Phase, s.Cursor, s.Epoch, s.Offset
		for _, e := range s.State {
			r.keys = append(r.keys, e.Key)
		}
	}
	return jr.ID, r, nil
}

var (
	keyPushPrefix = []byte(`{"push"`)
	keyMapKey     = []byte(`"key":"`)
)

// reply waits for the reply to command id, answering pings; pushes before
// it are skipped, another reply is an error.
func (c *mapConn) reply(id uint32) (mapReply, error) {
	for {
		got, r, err := c.read()
		if err != nil {
			return r, err
		}
		switch {
		case r.isPing:
			c.pong()
		case r.isPush:
		case got != id:
			return r, fmt.Errorf("reply %d while waiting for %d", got, id)
		default:
			return r, nil
		}
	}
}

func (c *mapConn) pong() {
	if c.protobuf {
		wsutil.WriteClientBinary(c.conn, pbPong)
	} else {
		wsutil.WriteClientText(c.conn, []byte("{}"))
	}
}

// mapCommand is the JSON subscribe of a map flow.
type mapCommand struct {
	Channel string `json:"channel"`
	Type    int32  `json:"type"`
	Phase   int32  `json:"phase"`
	Cursor  string `json:"cursor,omitempty"`
	Limit   int32  `json:"limit,omitempty"`
	Epoch   string `json:"epoch,omitempty"`
	Offset  uint64 `json:"offset,omitempty"`
	Flag    int64  `json:"flag"`
}

// subscribeMap runs the SDK's flow for a map subscription with page
// limit (0: none): state pages until the cursor is empty (after the first
// with the first page's position, as the SDK sends them), then the stream
// phase from that position until the reply that subscribes. It returns
// the commands sent and the state's entries, whose keys must come in
// strictly increasing order.
func (c *mapConn) subscribeMap(channel string, limit int) (requests, entries int, err error) {
	send := func(phase int32, cursor, epoch string, offset uint64) (mapReply, error) {
		c.nextID++
		requests++
		var cmd []byte
		if c.protobuf {
			cmd = pbAppendMapSubscribe(nil, c.nextID, channel, phase, cursor, int32(limit), epoch, offset)
		} else {
			cmd, _ = json.Marshal(map[string]any{"id": c.nextID, "subscribe": mapCommand{Channel: channel, Type: 1, Phase: phase, Cursor: cursor,
				Limit: int32(limit), Epoch: epoch, Offset: offset, Flag: 1}})
		}
		if err := c.write(cmd); err != nil {
			return mapReply{}, err
		}
		return c.reply(c.nextID)
	}
	var epoch, cursor, last string
	var offset uint64
	for first := true; ; first = false {
		r, err := send(2, cursor, epoch, offset)
		if err != nil {
			return requests, entries, err
		}
		if r.phase != 2 {
			return requests, entries, fmt.Errorf("state page answered with phase %d", r.phase)
		}
		if first {
			epoch, offset = r.epoch, r.offset
		}
		for _, k := range r.keys {
			if entries > 0 && k <= last {
				return requests, entries, fmt.Errorf("state key %q after %q", k, last)
			}
			last = k
			entries++
		}
		if cursor = r.cursor; cursor == "" {
			break
		}
	}
	for {
		r, err := send(1, "", epoch, offset)
		if err != nil {
			return requests, entries, err
		}
		switch {
		case r.epoch != epoch:
			return requests, entries, fmt.Errorf("the map's epoch changed during the flow (%q → %q)", epoch, r.epoch)
		case r.phase == 0:
			return requests, entries, nil
		case r.phase != 1:
			return requests, entries, fmt.Errorf("stream page answered with phase %d", r.phase)
		}
		offset = r.offset
	}
}

// subscribeChannels subscribes to every channel, ordinary subscriptions
// in one frame (no channel compaction, so that pushes name the channel as
// map pushes name the map), and waits for every reply.
func (c *mapConn) subscribeChannels(channels []string) error {
	var cmds []byte
	first := c.nextID + 1
	for _, ch := range channels {
		c.nextID++
		if c.protobuf {
			cmds = pbAppendSubscribe(cmds, c.nextID, ch, false, false)
		} else {
			if len(cmds) > 0 {
				cmds = append(cmds, '\n')
			}
			cmds = fmt.Appendf(cmds, `{"id":%d,"subscribe":{"channel":%q}}`, c.nextID, ch)
		}
	}
	if err := c.write(cmds); err != nil {
		return err
	}
	for id := first; id <= c.nextID; id++ {
		if _, err := c.reply(id); err != nil {
			return err
		}
	}
	return nil
}

// readPushes reads until the connection closes, counting each push into
// set and its latency (the value's intended send time "t" → now).
func (c *mapConn) readPushes(set *fanoutSet, wantKey bool) {
	for {
		_, r, err := c.read()
		if err != nil {
			return
		}
		switch {
		case r.isPing:
			c.pong()
		case r.isPush:
			now := time.Now()
			if r.hasKey != wantKey {
				set.bad.Add(1)
			}
			if t, ok := intAfter(r.data, keyT); ok {
				c.mu.Lock()
				c.hist.Record(now.Sub(time.Unix(0, t)))
				c.mu.Unlock()
			}
			set.received.Add(1)
		}
	}
}
