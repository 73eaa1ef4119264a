package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// WorkerConfig is one swarm worker's share of a run.
type WorkerConfig struct {
	URL      string   `json:"url"`
	Source   string   `json:"source"` // local IP to connect from, e.g. 127.0.0.3
	Conns    int      `json:"conns"`
	Channels []string `json:"channels"` // client i subscribes to Channels[i%len]
	// Stalled clients subscribe and then never read again.
	Stalled int `json:"stalled"`
	// Ramp is connections opened per second (0: as fast as possible).
	Ramp float64 `json:"ramp"`
}

// WorkerResult is what one worker measured; results merge with Add.
type WorkerResult struct {
	Connected  int            `json:"connected"`
	Failed     int            `json:"failed"`
	FirstError string         `json:"first_error,omitempty"`
	Received   uint64         `json:"received"`     // publication pushes read by healthy clients
	Gaps       uint64         `json:"gaps"`         // sequence numbers skipped (conflated or lost)
	OutOfOrder uint64         `json:"out_of_order"` // a sequence number not above the previous
	Closes     map[string]int `json:"closes"`       // close codes seen, healthy and stalled
	Latency    Histogram      `json:"latency"`      // intended send time → read, healthy clients
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
	if r.Closes == nil {
		r.Closes = map[string]int{}
	}
	for k, v := range o.Closes {
		r.Closes[k] += v
	}
	r.Latency.Merge(&o.Latency)
}

// RunWorker opens cfg.Conns clients, calls ready once every client is
// subscribed (or failed), and measures until ctx is done.
func RunWorker(ctx context.Context, cfg WorkerConfig, ready func(connected, failed int)) WorkerResult {
	var (
		mu      sync.Mutex
		total   WorkerResult
		wg      sync.WaitGroup
		setup   sync.WaitGroup
		results = make([]clientResult, cfg.Conns)
	)
	total.Closes = map[string]int{}
	dialer := ws.Dialer{Timeout: 10 * time.Second, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		if cfg.Source != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.Source)}
		}
		return d.DialContext(ctx, network, addr)
	}}
	var tick <-chan time.Time
	if cfg.Ramp > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Ramp))
		defer t.Stop()
		tick = t.C
	}
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
			err := c.run(ctx, dialer, cfg.URL, cfg.Channels[i%len(cfg.Channels)], setup.Done)
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
	for i := range results {
		if results[i].subscribed {
			total.Connected++
		} else {
			total.Failed++
		}
	}
	ready(total.Connected, total.Failed)
	<-ctx.Done()
	wg.Wait()
	for i := range results {
		c := &results[i]
		if c.close != "" {
			total.Closes[c.close]++
		}
		if c.stalled {
			continue
		}
		total.Received += c.received
		total.Gaps += c.gaps
		total.OutOfOrder += c.outOfOrder
		total.Latency.Merge(&c.latency)
	}
	return total
}

type clientResult struct {
	stalled    bool
	subscribed bool
	received   uint64
	gaps       uint64
	outOfOrder uint64
	lastSeq    int64
	close      string
	latency    Histogram
}

var errClosed = errors.New("closed by server")

func (c *clientResult) run(ctx context.Context, d ws.Dialer, url, channel string, setupDone func()) error {
	once := sync.OnceFunc(setupDone)
	defer once()
	conn, _, _, err := d.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	sub := fmt.Sprintf("{\"id\":1,\"connect\":{\"name\":\"edgebench\"}}\n{\"id\":2,\"subscribe\":{\"channel\":%q}}", channel)
	if err := wsutil.WriteClientText(conn, []byte(sub)); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 4096)
	var payload []byte
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
		case ws.OpText:
		default:
			continue
		}
		for line := range bytes.SplitSeq(payload, []byte{'\n'}) {
			c.line(conn, line, now)
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

var (
	keyPush = []byte(`"push"`)
	keySub  = []byte(`"subscribe":{`)
	keyT    = []byte(`"t":`)
	keySeq  = []byte(`"seq":`)
)

func (c *clientResult) line(conn net.Conn, line []byte, now time.Time) {
	switch {
	case bytes.Equal(line, []byte("{}")):
		wsutil.WriteClientText(conn, line) // pong
	case bytes.Contains(line, keySub):
		// The cached value may come from an earlier run with other
		// sequence numbers: order is checked from the first live push.
		c.subscribed = true
	case bytes.Contains(line, keyPush):
		t, ok := intAfter(line, keyT)
		if !ok {
			return
		}
		c.received++
		c.latency.Record(now.Sub(time.Unix(0, t)))
		if seq, ok := intAfter(line, keySeq); ok {
			switch {
			case c.lastSeq != 0 && seq <= c.lastSeq:
				c.outOfOrder++
			case c.lastSeq != 0 && seq > c.lastSeq+1:
				c.gaps += uint64(seq - c.lastSeq - 1)
			}
			c.lastSeq = seq
		}
	}
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
