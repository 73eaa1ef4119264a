package relay_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadBalancer is a TCP load balancer in front of relays, as the drain
// expects one: round robin over the relays whose /readyz answered 200 at
// the last health check (every check).
type loadBalancer struct {
	ln      net.Listener
	relays  []*testRelay
	healthy []atomic.Bool
	next    atomic.Uint32

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startLoadBalancer(t *testing.T, relays []*testRelay, check time.Duration) *loadBalancer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &loadBalancer{ln: ln, relays: relays, healthy: make([]atomic.Bool, len(relays)), conns: map[net.Conn]struct{}{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	lb.checkHealth(check / 2)
	wg.Go(func() {
		tick := time.NewTicker(check)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				lb.checkHealth(check / 2)
			}
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go lb.forward(c)
		}
	})
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		lb.mu.Lock()
		for c := range lb.conns {
			c.Close()
		}
		lb.mu.Unlock()
		wg.Wait()
	})
	return lb
}

func (lb *loadBalancer) url() string {
	return "ws://" + lb.ln.Addr().String() + "/connection/websocket"
}

func (lb *loadBalancer) checkHealth(timeout time.Duration) {
	cl := &http.Client{Timeout: timeout}
	for i, r := range lb.relays {
		resp, err := cl.Get("http://" + r.addr + "/readyz")
		lb.healthy[i].Store(err == nil && resp.StatusCode == http.StatusOK)
		if err == nil {
			resp.Body.Close()
		}
	}
}

// forward pipes c to the next healthy relay; with none, it closes c.
func (lb *loadBalancer) forward(c net.Conn) {
	defer c.Close()
	var up net.Conn
	for range lb.relays {
		i := int(lb.next.Add(1)-1) % len(lb.relays)
		if !lb.healthy[i].Load() {
			continue
		}
		var err error
		if up, err = net.Dial("tcp", lb.relays[i].addr); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	lb.mu.Lock()
	lb.conns[c], lb.conns[up] = struct{}{}, struct{}{}
	lb.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done // either side gone: both go
	lb.mu.Lock()
	delete(lb.conns, c)
	delete(lb.conns, up)
	lb.mu.Unlock()
}

// sdkDrainEvent is one line of tests/js/drain.mjs.
type sdkDrainEvent struct {
	Event         string `json:"event"`
	C             int    `json:"c"`
	Ch            string `json:"ch"`
	Seq           int    `json:"seq"`
	Code          int    `json:"code"`
	Msg           string `json:"msg"`
	Recovered     bool   `json:"recovered"`
	WasRecovering bool   `json:"was_recovering"`
	at            time.Time
}

// TestSDKDrain is the drain with the unmodified npm centrifuge SDK behind
// a load balancer (health check every 200 ms) over three relays, a feed
// producing all along: the drained relay's clients (a third) are closed
// with 3001 after lb_delay, spread over the period; the SDK reconnects
// through the load balancer, which has taken the drained relay out, and
// recovers; no client misses an update or gets one twice.
func TestSDKDrain(t *testing.T) {
	dir := jsTestDir(t)
	kafka := newKafka(t)
	lbDelay, period := time.Second, 2*time.Second
	var relays []*testRelay
	for range 3 {
		cfg := testConfig(kafka.ListenAddrs())
		cfg.Channels.HistorySize = 1000
		cfg.HTTP.OperatorToken = testOperatorToken
		cfg.Cluster.Drain.LBDelay, cfg.Cluster.Drain.Period = lbDelay, period
		r := startRelay(t, cfg)
		r.waitReady(t)
		relays = append(relays, r)
	}
	channels := []string{"odds:sdkdrain:m1", "odds:sdkdrain:m2"}
	stopFeed := startFeed(t, kafka.ListenAddrs(), channels, relays)
	lb := startLoadBalancer(t, relays, 200*time.Millisecond)

	const clients = 12
	script := startNode[sdkDrainEvent](t, dir, "drain.mjs",
		[]string{"EDGERELAY_URL=" + lb.url(), "CHANNELS=" + strings.Join(channels, ","), "CLIENTS=" + strconv.Itoa(clients)}, nil)
	stdin := script.stdin
	var mu sync.Mutex
	var events []sdkDrainEvent
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for e := range script.events {
			e.at = time.Now()
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}
	}()
	// state folds the events: the latest seq per client and channel, and
	// the failures.
	type key struct {
		c  int
		ch string
	}
	state := func() (last map[key]int, subscribed map[key]int, closed []sdkDrainEvent, errs []string) {
		mu.Lock()
		defer mu.Unlock()
		last, subscribed = map[key]int{}, map[key]int{}
		for _, e := range events {
			k := key{e.C, e.Ch}
			switch e.Event {
			case "pub":
				if p, ok := last[k]; ok && e.Seq != p+1 {
					errs = append(errs, fmt.Sprintf("client %d %s: seq %d after %d", e.C, e.Ch, e.Seq, p))
				}
				last[k] = e.Seq
			case "subscribed":
				subscribed[k]++
				if e.WasRecovering && !e.Recovered {
					errs = append(errs, fmt.Sprintf("client %d %s: not recovered", e.C, e.Ch))
				}
			case "connecting":
				if e.Code == 3001 {
					closed = append(closed, e)
				}
			case "fail":
				errs = append(errs, e.Msg)
			}
		}
		return
	}
	checkFor(t, 30*time.Second, func() error {
		last, _, _, errs := state()
		if len(errs) > 0 {
			t.Fatalf("before the drain: %v", errs)
		}
		if len(last) != clients*len(channels) {
			return fmt.Errorf("%d of %d subscriptions receiving", len(last), clients*len(channels))
		}
		return nil
	})

	started := time.Now()
	if code, body := relays[0].postDrain(t, "Bearer "+testOperatorToken); code != http.StatusAccepted {
		t.Fatalf("drain: %d %s", code, body)
	}
	if err := relays[0].served(t, 15*time.Second); err != nil {
		t.Errorf("drained relay's Serve: %v", err)
	}
	// Every closed client resubscribed (elsewhere: the drained relay is
	// gone) to every channel.
	checkFor(t, 10*time.Second, func() error {
		_, subscribed, closed, _ := state()
		for _, e := range closed {
			for _, ch := range channels {
				if subscribed[key{e.C, ch}] < 2 {
					return fmt.Errorf("client %d not subscribed to %s again", e.C, ch)
				}
			}
		}
		return nil
	})
	movedIn := time.Since(started)
	time.Sleep(200 * time.Millisecond) // a little more feed
	final := stopFeed()
	checkFor(t, 20*time.Second, func() error {
		last, _, _, _ := state()
		for k, seq := range last {
			if seq != final {
				return fmt.Errorf("client %d at seq %d of %s, want %d", k.c, seq, k.ch, final)
			}
		}
		return nil
	})
	io.WriteString(stdin, "stop\n")
	<-exited

	last, _, closed, errs := state()
	for _, e := range errs {
		t.Error(e)
	}
	if len(last) != clients*len(channels) {
		t.Errorf("%d subscriptions, want %d", len(last), clients*len(channels))
	}
	if len(closed) != clients/3 {
		t.Fatalf("%d clients closed with 3001, want %d (the drained relay's third)", len(closed), clients/3)
	}
	var at []time.Duration
	for _, e := range closed {
		at = append(at, e.at.Sub(started))
	}
	slices.Sort(at)
	t.Logf("SDK drain of %d of %d clients, lb_delay %v, period %v: closed %v to %v after POST /v1/drain (spread %v); all subscribed elsewhere %v after; %d updates per channel",
		len(closed), clients, lbDelay, period, at[0].Round(time.Millisecond), at[len(at)-1].Round(time.Millisecond),
		(at[len(at)-1] - at[0]).Round(time.Millisecond), movedIn.Round(time.Millisecond), final)
	if at[0] < lbDelay {
		t.Errorf("first client closed %v after the drain started, before lb_delay %v", at[0], lbDelay)
	}
	if spread := at[len(at)-1] - at[0]; spread < period/4 {
		t.Errorf("closes spread over %v: a storm, not waves over %v", spread, period)
	}
}
