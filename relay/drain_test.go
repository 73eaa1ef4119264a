package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const testOperatorToken = "operator-token-for-tests-0123456789"

// postDrain sends POST /v1/drain with the Authorization header auth ("":
// none).
func (r *testRelay) postDrain(t testing.TB, auth string) (int, string) {
	t.Helper()
	return r.request(t, http.MethodPost, "/v1/drain", auth)
}

// served waits up to d for Serve to return and gives back its error
// (the cleanup still finds it).
func (r *testRelay) served(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(d):
		t.Fatalf("Serve did not return within %v", d)
		return nil
	}
}

// TestDrainEndpoint: POST /v1/drain answers 403 without
// http.operator_token, 401 without the token, with a wrong one or another
// scheme, and 202 with it. The drain it starts: /readyz answers 503
// "draining" and /metrics edgerelay_draining 1 while WebSocket upgrades are
// still accepted for cluster.drain.lb_delay; then every client, the one
// that connected during lb_delay too, is closed with 3001, upgrades get
// 503, and Serve returns nil (the process exits 0).
func TestDrainEndpoint(t *testing.T) {
	kafka := newKafka(t)
	off := startRelay(t, testConfig(kafka.ListenAddrs()))
	off.waitReady(t)
	if code, body := off.postDrain(t, "Bearer "+testOperatorToken); code != http.StatusForbidden || !strings.Contains(body, "operator endpoints disabled") {
		t.Errorf("without http.operator_token: %d %s", code, body)
	}
	if code, body := off.get(t, "/readyz"); code != 200 {
		t.Errorf("a refused drain drained: readyz %d %s", code, body)
	}

	cfg := testConfig(kafka.ListenAddrs())
	cfg.HTTP.OperatorToken = testOperatorToken
	cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = 3*time.Second, 500*time.Millisecond
	r := startRelay(t, cfg)
	r.waitReady(t)
	for _, auth := range []string{"", "Bearer ", "Bearer wrong-token-of-some-length-000000", "Basic " + testOperatorToken, testOperatorToken} {
		if code, body := r.postDrain(t, auth); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d %s, want 401", auth, code, body)
		}
	}
	if code, body := r.get(t, "/readyz"); code != 200 {
		t.Fatalf("an unauthorized drain drained: readyz %d %s", code, body)
	}
	before := dial(t, r.url())
	before.connect()

	started := time.Now()
	if code, body := r.postDrain(t, "Bearer "+testOperatorToken); code != http.StatusAccepted || !strings.Contains(body, `"draining"`) {
		t.Fatalf("drain: %d %s", code, body)
	}
	if code, body := r.postDrain(t, "Bearer "+testOperatorToken); code != http.StatusAccepted || !strings.Contains(body, "already draining") {
		t.Errorf("second drain: %d %s", code, body)
	}
	if code, body := r.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"draining"`) {
		t.Errorf("readyz while draining: %d %s", code, body)
	}
	if _, body := r.get(t, "/metrics"); metric(body, "edgerelay_draining") != 1 {
		t.Errorf("edgerelay_draining: %v", metric(body, "edgerelay_draining"))
	}
	during := dial(t, r.url()) // the load balancer has not noticed yet
	during.connect()
	if d := time.Since(started); d >= cfg.Cluster.Drain.LBDelay {
		t.Fatalf("checks took %v, past lb_delay: the machine is too slow for this test", d)
	}

	for _, c := range []*wsClient{before, during} {
		c.expectClose(3001)
	}
	if d := time.Since(started); d < cfg.Cluster.Drain.LBDelay {
		t.Errorf("clients closed %v after the drain started, before lb_delay %v", d, cfg.Cluster.Drain.LBDelay)
	}
	// Past lb_delay an upgrade is refused, until HTTP stops with the rest.
	if _, _, _, err := ws.Dial(context.Background(), r.url()); err != ws.StatusError(http.StatusServiceUnavailable) {
		t.Errorf("upgrade after lb_delay: %v, want status 503", err)
	}
	if err := r.served(t, cfg.ShutdownTimeout); err != nil {
		t.Errorf("Serve after a drain: %v", err)
	}
}

// drainClient is a subscriber that, closed with 3001, reconnects to
// another node and recovers each channel from its last position,
// checking that every channel's seq goes up by one: no update missed
// (gap), none twice.
type drainClient struct {
	urls     []string
	channels []string

	mu     sync.Mutex
	node   int               // the node it is on, or dials
	online bool              // connected and every subscribe answered
	last   map[string]seenAt // per channel
	closes []time.Time       // when the server closed it with 3001
	moved  []time.Time       // when it was subscribed again after a close
	errs   []string
}

type seenAt struct {
	seq    int
	offset uint64
	epoch  string
}

type drainReply struct {
	ID        int             `json:"id"`
	Error     json.RawMessage `json:"error"`
	Connect   json.RawMessage `json:"connect"`
	Subscribe *struct {
		Epoch         string     `json:"epoch"`
		Recovered     bool       `json:"recovered"`
		WasRecovering bool       `json:"was_recovering"`
		Publications  []drainPub `json:"publications"`
	} `json:"subscribe"`
	Push *struct {
		Channel string    `json:"channel"`
		Pub     *drainPub `json:"pub"`
	} `json:"push"`
}

type drainPub struct {
	Data   struct{ Seq int } `json:"data"`
	Offset uint64            `json:"offset"`
}

func (c *drainClient) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// run connects, and reconnects after each close, until ctx is done.
func (c *drainClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		c.mu.Lock()
		url := c.urls[c.node]
		c.mu.Unlock()
		conn, _, _, err := ws.Dial(ctx, url)
		if err == nil {
			err = c.session(ctx, conn)
		}
		c.mu.Lock()
		c.online = false
		var ce wsutil.ClosedError
		if errors.As(err, &ce) && ce.Code == 3001 {
			c.closes = append(c.closes, time.Now())
		}
		c.node = (c.node + 1) % len(c.urls) // on to the next node
		c.mu.Unlock()
		if ctx.Err() == nil && !errors.As(err, &ce) {
			time.Sleep(20 * time.Millisecond) // refused: the SDKs back off too
		}
	}
}

// session speaks to one node until it closes the connection.
func (c *drainClient) session(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	cmds := []string{`{"id":1,"connect":{"name":"drain-test"}}`}
	c.mu.Lock()
	for i, ch := range c.channels {
		p := c.last[ch]
		cmds = append(cmds, fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q,"recover":%v,"offset":%d,"epoch":%q}}`, i+2, ch, p.offset > 0, p.offset, p.epoch))
	}
	c.mu.Unlock()
	if err := wsutil.WriteClientText(conn, []byte(strings.Join(cmds, "\n"))); err != nil {
		return err
	}
	subscribed := 0
	for {
		msg, err := wsutil.ReadServerText(conn)
		if err != nil {
			return err
		}
		c.mu.Lock()
		for _, line := range strings.Split(string(msg), "\n") {
			var r drainReply
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				c.fail("bad JSON %s: %v", line, err)
				continue
			}
			switch {
			case r.Error != nil:
				c.fail("error reply %s", line)
			case r.Subscribe != nil:
				ch := c.channels[r.ID-2]
				if r.Subscribe.WasRecovering && !r.Subscribe.Recovered {
					c.fail("%s: not recovered on %s: %s", ch, c.urls[c.node], line)
				}
				p := c.last[ch]
				p.epoch = r.Subscribe.Epoch
				c.last[ch] = p
				for _, pub := range r.Subscribe.Publications {
					c.seen(ch, pub)
				}
				if subscribed++; subscribed == len(c.channels) {
					c.online = true
					if len(c.closes) > len(c.moved) {
						c.moved = append(c.moved, time.Now())
					}
				}
			case r.Push != nil && r.Push.Pub != nil:
				c.seen(r.Push.Channel, *r.Push.Pub)
			}
		}
		c.mu.Unlock()
	}
}

// seen checks one publication against the last; c.mu held.
func (c *drainClient) seen(ch string, pub drainPub) {
	p := c.last[ch]
	if p.seq != 0 && pub.Data.Seq != p.seq+1 {
		c.fail("%s: seq %d after %d (offset %d after %d) on %s", ch, pub.Data.Seq, p.seq, pub.Offset, p.offset, c.urls[c.node])
	}
	p.seq, p.offset = pub.Data.Seq, pub.Offset
	c.last[ch] = p
}

// TestDrainMovesClientsToOtherNodes is issue 16's drain: three gossiping
// relays on one Kafka with history on, subscribers spread over them with
// recovery, a feed producing all along. The first node is drained (POST
// /v1/drain): the others see it draining; its clients are closed with
// 3001 spread over cluster.drain.period, not before lb_delay; each is
// subscribed on another node within lb_delay + period + 5 s of the drain;
// and no client, moved or not, missed an update or got one twice (each
// channel's seq goes up by one, across the move).
func TestDrainMovesClientsToOtherNodes(t *testing.T) {
	kafka := newKafka(t)
	lbDelay, period := time.Second, 2*time.Second
	var relays []*testRelay
	var seed string
	for i := range 3 {
		cfg := testConfig(kafka.ListenAddrs())
		cfg.Node = fmt.Sprintf("relay-%d", i+1)
		cfg.Cluster.Bind = fmt.Sprintf("127.0.0.%d:0", i+1)
		if seed != "" {
			cfg.Cluster.Seeds = []string{seed}
		}
		cfg.Channels.HistorySize = 1000
		cfg.HTTP.OperatorToken = testOperatorToken
		cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = lbDelay, period
		r := startRelay(t, cfg)
		if i == 0 {
			checkFor(t, 10*time.Second, func() error {
				if v := r.cluster(t); len(v.Members) != 1 || v.Members[0].Address == "" {
					return fmt.Errorf("relay-1 lists %+v", v.Members)
				}
				seed = r.cluster(t).Members[0].Address
				return nil
			})
		}
		relays = append(relays, r)
	}
	checkFor(t, 20*time.Second, func() error {
		for _, r := range relays {
			if v := r.cluster(t); len(v.Members) != 3 {
				return fmt.Errorf("%s lists %d members", v.Self, len(v.Members))
			}
		}
		return nil
	})
	for _, r := range relays {
		r.waitReady(t)
	}

	channels := []string{"odds:drain:m1", "odds:drain:m2", "odds:drain:m3", "odds:drain:m4"}
	stopFeed := startFeed(t, kafka.ListenAddrs(), channels, relays)

	const perNode = 8
	urls := []string{relays[0].url(), relays[1].url(), relays[2].url()}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var clients []*drainClient
	for i := range 3 * perNode {
		// The first node's clients go on to the second or the third.
		order := []string{urls[i%3], urls[(i%3+1+i/3%2)%3], urls[(i%3+2-i/3%2)%3]}
		c := &drainClient{urls: order, channels: channels, last: map[string]seenAt{}}
		clients = append(clients, c)
		wg.Go(func() { c.run(ctx) })
	}
	drained := func(c *drainClient) bool { return c.urls[0] == urls[0] }
	// Every client is subscribed and has had updates.
	checkFor(t, 20*time.Second, func() error {
		for i, c := range clients {
			c.mu.Lock()
			ok := c.online && c.last[channels[3]].seq > 0
			c.mu.Unlock()
			if !ok {
				return fmt.Errorf("client %d not receiving yet", i)
			}
		}
		return nil
	})

	// The others hear that the first is draining.
	sawDraining := make(chan bool, 1)
	go func() {
		deadline := time.Now().Add(lbDelay + period)
		for time.Now().Before(deadline) {
			if v, err := clusterOf(relays[1]); err == nil && v.Members[0].NodeState == "draining" {
				sawDraining <- true
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		sawDraining <- false
	}()
	started := time.Now()
	if code, body := relays[0].postDrain(t, "Bearer "+testOperatorToken); code != http.StatusAccepted {
		t.Fatalf("drain: %d %s", code, body)
	}
	bound := lbDelay + period + 5*time.Second
	checkFor(t, bound, func() error {
		for i, c := range clients {
			c.mu.Lock()
			ok := !drained(c) || c.online && len(c.moved) == 1
			c.mu.Unlock()
			if !ok {
				return fmt.Errorf("client %d of the drained node not subscribed elsewhere", i)
			}
		}
		return nil
	})
	movedIn := time.Since(started)
	if err := relays[0].served(t, 10*time.Second); err != nil {
		t.Errorf("drained relay's Serve: %v", err)
	}
	if !<-sawDraining {
		t.Error("relay-2 never listed relay-1 as draining")
	}

	// A little more feed, then every client must have every update.
	time.Sleep(200 * time.Millisecond)
	final := stopFeed()
	checkFor(t, 20*time.Second, func() error {
		for i, c := range clients {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, ch := range channels {
				if c.last[ch].seq != final {
					return fmt.Errorf("client %d at seq %d of %s, want %d", i, c.last[ch].seq, ch, final)
				}
			}
		}
		return nil
	})

	var closes, gaps []time.Duration
	for i, c := range clients {
		c.mu.Lock()
		for _, e := range c.errs {
			t.Errorf("client %d: %s", i, e)
		}
		switch {
		case drained(c) && (len(c.closes) != 1 || len(c.moved) != 1):
			t.Errorf("client %d of the drained node: closed %d times, moved %d times", i, len(c.closes), len(c.moved))
		case drained(c):
			closes = append(closes, c.closes[0].Sub(started))
			gaps = append(gaps, c.moved[0].Sub(c.closes[0]))
		case len(c.closes) != 0:
			t.Errorf("client %d of another node closed %d times", i, len(c.closes))
		}
		c.mu.Unlock()
	}
	if len(closes) != perNode {
		t.Fatalf("%d clients closed by the drain, want %d", len(closes), perNode)
	}
	slices.Sort(closes)
	slices.Sort(gaps)
	t.Logf("drain of %d clients, lb_delay %v, period %v: closed %v to %v after POST /v1/drain (spread %v); reconnected and recovered %v to %v after their close; all moved within %v; %d updates per channel",
		perNode, lbDelay, period, closes[0].Round(time.Millisecond), closes[len(closes)-1].Round(time.Millisecond),
		(closes[len(closes)-1] - closes[0]).Round(time.Millisecond), gaps[0].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond),
		movedIn.Round(time.Millisecond), final)
	if closes[0] < lbDelay {
		t.Errorf("first client closed %v after the drain started, before lb_delay %v", closes[0], lbDelay)
	}
	if spread := closes[len(closes)-1] - closes[0]; spread < period/4 {
		t.Errorf("closes spread over %v: a storm, not waves over %v", spread, period)
	}
}

// startFeed produces {"seq":1}, {"seq":2}, … to every channel, one
// round every 5 ms, until the returned stop, which gives the last seq;
// it returns once relays all cache the channels.
func startFeed(t *testing.T, brokers []string, channels []string, relays []*testRelay) (stop func() int) {
	prod := newProducer(t, brokers)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		seq := 0
		defer func() { done <- seq }()
		for ctx.Err() == nil {
			seq++
			for _, ch := range channels {
				r := &kgo.Record{Topic: "odds", Key: []byte(ch), Value: []byte(fmt.Sprintf(`{"seq":%d}`, seq)),
					Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(ch)}}}
				if err := prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
					t.Errorf("feed: %v", err)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var once sync.Once
	final := 0
	stop = func() int {
		once.Do(func() { cancel(); final = <-done })
		return final
	}
	t.Cleanup(func() { stop() })
	for _, r := range relays {
		for _, ch := range channels {
			r.waitCached(t, ch, 0)
		}
	}
	return stop
}

// clusterOf is testRelay.cluster for a goroutine that is not the test's.
func clusterOf(r *testRelay) (clusterView, error) {
	var v clusterView
	resp, err := http.Get("http://" + r.addr + "/v1/cluster")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || len(v.Members) == 0 {
		return v, fmt.Errorf("/v1/cluster: %v %+v", err, v)
	}
	return v, nil
}

// TestDrainWaitsForBetReplies: a connection whose bet Kafka has not
// acknowledged yet is passed over by the drain's waves, past
// cluster.drain.period, while an idle one is closed; once Kafka
// acknowledges, the bettor gets the accepted reply, then close 3001.
func TestDrainWaitsForBetReplies(t *testing.T) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Bets.Enabled = true
	cfg.Bets.Timeout = 8 * time.Second
	cfg.HTTP.OperatorToken = testOperatorToken
	cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = 0, 300*time.Millisecond
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:drain-1:1x2"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"status":"open"}`))

	release := make(chan struct{})
	var held atomic.Bool
	// Every produce from here on is the bet's (the odds are in).
	kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		held.Store(true)
		kafka.SleepControl(func() { <-release })
		return nil, nil, false
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })

	bettor := dial(t, r.url())
	bettor.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, "dora", time.Hour)))
	bettor.mustNext()
	bettor.send(fmt.Sprintf(`{"id":2,"rpc":{"method":"bet","data":{"bet_id":"drain-1","channel":%q,"selection":"home","odds":1.9,"stake":1}}}`, ch))
	checkFor(t, 10*time.Second, func() error {
		if !held.Load() {
			return errors.New("the bet has not reached Kafka")
		}
		return nil
	})
	idle := dial(t, r.url())
	idle.connect()

	started := time.Now()
	if code, body := r.postDrain(t, "Bearer "+testOperatorToken); code != http.StatusAccepted {
		t.Fatalf("drain: %d %s", code, body)
	}
	idle.expectClose(3001)
	// Past the period, and a few waves more, the bettor is still open.
	checkFor(t, 10*time.Second, func() error {
		if time.Since(started) < cfg.Cluster.Drain.Period+3*100*time.Millisecond {
			return errors.New("within the period")
		}
		return nil
	})
	idle.conn.Close()
	checkFor(t, 10*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		if d, c := metric(body, "edgerelay_drain_disconnects_total"), metric(body, "edgerelay_connections"); d != 1 || c != 1 {
			return fmt.Errorf("past the period with a bet in flight: disconnects %v, connections %v, want 1 and 1 (the bettor)", d, c)
		}
		return nil
	})
	once.Do(func() { close(release) })
	if rep := bettor.mustNext(); rep["rpc"] == nil {
		t.Fatalf("bet reply during the drain: %v", rep)
	}
	bettor.expectClose(3001)
	if err := r.served(t, cfg.ShutdownTimeout); err != nil {
		t.Errorf("Serve after a drain: %v", err)
	}
}

// TestRecoverAheadOfNode: a client that recovers on a node behind the one
// it left (the drained node had read two records further) gets
// recovered:true, keeps its position, and is not pushed the records it
// holds again, only those after (a duplicate TestDrainMovesClientsToOtherNodes
// caught).
func TestRecoverAheadOfNode(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Channels.HistorySize = 100
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "scores:drain:ahead"
	off := produce(t, prod, "scores", ch, `{"seq":1}`)
	r.waitCached(t, ch, off)
	epoch := r.srv.Hub().Last(ch).Epoch

	c := dial(t, r.url())
	c.connect()
	held := uint64(off) + 3 // seq 3, the protocol offset of Kafka offset off+2
	c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q,"recover":true,"epoch":%q,"offset":%d}}`, ch, epoch, held))
	sub := c.mustNext()["subscribe"].(map[string]any)
	if sub["recovered"] != true || sub["publications"] != nil || sub["offset"] != float64(held) {
		t.Fatalf("subscribe ahead of the node: %v, want recovered, no publications, offset %d", sub, held)
	}
	for seq := 2; seq <= 4; seq++ {
		if o := produce(t, prod, "scores", ch, fmt.Sprintf(`{"seq":%d}`, seq)); o != off+int64(seq)-1 {
			t.Fatalf("seq %d at Kafka offset %d, want %d: another record in the partition", seq, o, off+int64(seq)-1)
		}
	}
	_, data, offset, ok := pubOf(c.mustNext())
	if !ok || data["seq"] != 4.0 || offset != held+1 {
		t.Fatalf("first push %v at offset %d, want seq 4 at %d", data, offset, held+1)
	}
}
