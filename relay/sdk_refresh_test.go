package relay_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Token lifetimes of TestSDKTokenRefresh: short, so that a run spans several.
const (
	refreshLifetime = 3 * time.Second  // of every token the test hands out
	refreshSpan     = 10 * time.Second // the refresh case runs at least this long
	// refreshLeeway is auth.leeway: the close comes at the relay's first
	// check (once a second) after exp + leeway. The SDK calls getToken when
	// the ttl of the last connect/refresh reply runs out; that ttl is
	// rounded to whole seconds, so the refresh can come up to half a second
	// after exp (Centrifugo's ttl is even up to a second late; it closes only
	// 25 s after exp). The leeway covers that half second and getToken.
	refreshLeeway = time.Second
)

// TestSDKTokenRefresh: token lifetime as the stock centrifuge SDK (JSON and
// Protobuf builds) expects it (docs/bets.md, "Expiry on a live
// connection"), with tests/js/refresh.mjs, whose getToken asks this test.
//
//   - refresh: a client connected with a 3 s token and a working getToken
//     refreshes on the same WebSocket, never reconnecting, and receives
//     every publication produced into Kafka for 10 s (several lifetimes).
//   - reject / withhold: a client whose getToken rejects (the SDK emits
//     'error' type refreshToken, code 6, and would retry in 5-10 s), or
//     gets no answer, is closed by the relay with 3005 "connection expired",
//     not before exp + auth.leeway. The SDK does not give up: 'connecting'
//     with code 3005 "connection expired", its subscription 'subscribing'
//     (1 "transport closed"), never 'disconnected'. SDK 5.8.0 then
//     reconnects at once with the token it holds, the expired one, gets 109
//     ('error' type connect, code 109), calls getToken, connects on a third
//     socket and resubscribes, recovered. The test checks the 3005, that
//     'connecting', that the client is connected and subscribed again and
//     receives what is produced next; the steps in between are logged (-v).
func TestSDKTokenRefresh(t *testing.T) {
	tests := []struct {
		name     string
		encoding string
		mode     string // refresh, reject, withhold
	}{
		{"json/refresh", "json", "refresh"},
		{"json/reject", "json", "reject"},
		{"json/withhold", "json", "withhold"},
		{"protobuf/refresh", "protobuf", "refresh"},
		{"protobuf/reject", "protobuf", "reject"},
		{"protobuf/withhold", "protobuf", "withhold"},
	}
	dir := jsTestDir(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.mode == "refresh" {
				testSDKRefresh(t, dir, tt.encoding)
			} else {
				testSDKExpiry(t, dir, tt.encoding, tt.mode)
			}
		})
	}
}

// refreshEvent is one line printed by tests/js/refresh.mjs.
type refreshEvent struct {
	Event   string         `json:"event"`
	T       int64          `json:"t"` // Date.now()
	N       int            `json:"n"`
	Socket  int            `json:"socket"`
	Sockets int            `json:"sockets"`
	Code    int            `json:"code"`
	Reason  string         `json:"reason"`
	Type    string         `json:"type"`
	Message string         `json:"message"`
	Msg     string         `json:"msg"`
	Client  string         `json:"client"`
	Data    map[string]any `json:"data"`
	Offset  uint64         `json:"offset"`
	Refresh map[string]any `json:"refresh"`
	Error   map[string]any `json:"error"`

	line string // as printed
}

// refreshScript runs tests/js/refresh.mjs and keeps every line it printed.
type refreshScript struct {
	t *testing.T
	*nodeScript[refreshEvent]
	log   []string
	start int64 // T of the first event
}

// startScript runs script (refresh.mjs, or subtoken.mjs, which prints
// the same events and speaks the same stdin protocol for getToken; its
// channel "" subscribes to nothing client-side).
func startScript(t *testing.T, dir, script string, r *testRelay, encoding, channel, tok string) *refreshScript {
	t.Helper()
	env := []string{"EDGERELAY_URL=" + r.url(), "ENCODING=" + encoding, "CHANNEL=" + channel, "TOKEN=" + tok}
	s := &refreshScript{t: t, nodeScript: startNode(t, dir, script, env, func(e *refreshEvent, line string) { e.line = line })}
	return s
}

// next returns the next event; it fails the test if the script exits,
// fails, or prints nothing for 30 s.
func (s *refreshScript) next() refreshEvent {
	s.t.Helper()
	e, _ := s.nextOr(nil)
	return e
}

// nextOr is next, or ok=false if tick fires first.
func (s *refreshScript) nextOr(tick <-chan time.Time) (e refreshEvent, ok bool) {
	s.t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			s.t.Fatalf("refresh.mjs exited early; it printed:\n%s", s.history())
		}
		if s.start == 0 {
			s.start = e.T
		}
		s.log = append(s.log, fmt.Sprintf("+%5dms %s", e.T-s.start, e.line))
		if e.Event == "fail" {
			s.t.Fatalf("refresh.mjs: %s; it printed:\n%s", e.line, s.history())
		}
		return e, true
	case <-tick:
		return refreshEvent{}, false
	case <-time.After(30 * time.Second):
		s.t.Fatalf("refresh.mjs printed nothing for 30 s; it printed:\n%s", s.history())
	}
	panic("unreachable")
}

func (s *refreshScript) history() string { return strings.Join(s.log, "\n") }

func (s *refreshScript) write(v any) {
	s.t.Helper()
	b, _ := json.Marshal(v)
	if _, err := s.stdin.Write(append(b, '\n')); err != nil {
		s.t.Fatalf("writing to refresh.mjs: %v", err)
	}
}

func (s *refreshScript) giveToken(tok string) { s.write(map[string]string{"token": tok}) }
func (s *refreshScript) failToken(msg string) { s.write(map[string]string{"fail": msg}) }

// stop ends the script and waits for it; the SDK's socket is closed by the
// client then.
func (s *refreshScript) stop() {
	s.t.Helper()
	s.write(map[string]bool{"stop": true})
	for e := s.next(); e.Event != "done"; e = s.next() {
	}
	for range s.events {
	}
	if err := s.wait(); err != nil {
		s.t.Fatalf("refresh.mjs: %v; it printed:\n%s", err, s.history())
	}
}

// tokenExp returns the exp claim of a JWT, in unix milliseconds.
func tokenExp(t *testing.T, tok string) int64 {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct{ Exp int64 }
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.Exp == 0 {
		t.Fatalf("token %s: no exp (%v)", tok, err)
	}
	return c.Exp * 1000
}

// refreshSetup starts Kafka and the relay with auth.leeway refreshLeeway
// and a channel whose cached value is {"seq":0}. produceSeq produces
// {"seq":N} to it and returns the offset the SDK reports (Kafka offset + 1);
// cached is that of the cached value.
func refreshSetup(t *testing.T, encoding string) (r *testRelay, ch string, produceSeq func(seq int) uint64, cached uint64) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Auth.Leeway = refreshLeeway
	r = startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	ch = "odds:football:epl:refresh-" + encoding + ":1x2"
	produceSeq = func(seq int) uint64 {
		return uint64(produce(t, prod, "odds", ch, fmt.Sprintf(`{"seq":%d}`, seq))) + 1
	}
	cached = produceSeq(0)
	r.waitCached(t, ch, int64(cached-1))
	return r, ch, produceSeq, cached
}

const disconnects3005 = `edgerelay_disconnects_total{code="3005"}`

func testSDKRefresh(t *testing.T, dir, encoding string) {
	const user = "refresh-user"
	r, ch, produceSeq, cached := refreshSetup(t, encoding)
	s := startScript(t, dir, "refresh.mjs", r, encoding, ch, token(t, user, refreshLifetime))

	var (
		produced    = []uint64{cached} // offsets, in order; the subscribe reply carries the cached value
		got         []uint64
		seqs        []int
		seq         int
		tokens      int // getToken calls answered
		replies     []refreshEvent
		client      string
		subscribed  bool
		finishing   bool // producing no more: wait for what was produced
		connectedAt time.Time
		deadline    = time.Now().Add(60 * time.Second)
		pace        = time.NewTicker(250 * time.Millisecond) // paces the producer, asserts nothing
	)
	defer pace.Stop()
	for !finishing || len(got) < len(produced) {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %d tokens given, %d of %d publications; it printed:\n%s", tokens, len(got), len(produced), s.history())
		}
		e, ok := s.nextOr(pace.C)
		if !ok {
			// Enough once several lifetimes passed and, on JSON, every
			// refresh was answered.
			switch {
			case !subscribed || finishing:
			case time.Since(connectedAt) >= refreshSpan && tokens >= 3 && (encoding != "json" || len(replies) == tokens):
				finishing = true
			default:
				seq++
				produced = append(produced, produceSeq(seq))
			}
			continue
		}
		switch e.Event {
		case "need_token":
			tokens++
			s.giveToken(token(t, user, refreshLifetime))
		case "connected":
			if !connectedAt.IsZero() {
				t.Fatalf("connected again: the SDK reconnected; it printed:\n%s", s.history())
			}
			connectedAt, client = time.Now(), e.Client
		case "connecting":
			if !connectedAt.IsZero() {
				t.Fatalf("connecting after connected: the SDK reconnects; it printed:\n%s", s.history())
			}
		case "subscribing":
			if subscribed {
				t.Fatalf("subscribing after subscribed: the SDK resubscribes; it printed:\n%s", s.history())
			}
		case "subscribed":
			subscribed = true
		case "refresh_reply":
			if e.Error != nil || e.Refresh["expires"] != true || e.Refresh["client"] != client {
				t.Fatalf("refresh reply %s: want expires and client %q; it printed:\n%s", e.line, client, s.history())
			}
			if ttl, _ := e.Refresh["ttl"].(float64); ttl < 1 || ttl > refreshLifetime.Seconds() {
				t.Fatalf("refresh reply %s: want a ttl of 1-%v s; it printed:\n%s", e.line, refreshLifetime.Seconds(), s.history())
			}
			replies = append(replies, e)
		case "publication":
			n, _ := e.Data["seq"].(float64)
			got, seqs = append(got, e.Offset), append(seqs, int(n))
		case "socket_open":
			if e.Socket != 1 {
				t.Fatalf("a second WebSocket: %s; it printed:\n%s", e.line, s.history())
			}
		default: // disconnected, socket_close, socket_error, error, sub_error, unsubscribed
			t.Fatalf("unexpected %s; it printed:\n%s", e.line, s.history())
		}
	}
	s.stop()

	if tokens < 3 {
		t.Errorf("getToken called %d times, want 3 or more (a refresh every %v for %v)", tokens, refreshLifetime, refreshSpan)
	}
	if fmt.Sprint(got) != fmt.Sprint(produced) {
		t.Errorf("publications at offsets %v, want %v", got, produced)
	}
	for i, n := range seqs {
		if n != i {
			t.Fatalf("publications seq %v, want 0..%d", seqs, len(produced)-1)
		}
	}
	if _, body := r.get(t, "/metrics"); metric(body, disconnects3005) > 0 {
		t.Errorf("%s = %v, want none", disconnects3005, metric(body, disconnects3005))
	}
	t.Logf("%s: %d tokens over %v on one WebSocket, %d publications, %d refresh replies seen (JSON only)",
		encoding, tokens, time.Since(connectedAt).Round(time.Second), len(got), len(replies))
}

func testSDKExpiry(t *testing.T, dir, encoding, mode string) {
	const user = "expiry-user"
	r, ch, produceSeq, _ := refreshSetup(t, encoding)
	tok := token(t, user, refreshLifetime)
	exp := tokenExp(t, tok)
	s := startScript(t, dir, "refresh.mjs", r, encoding, ch, tok)

	var (
		expired    bool // the relay closed the first socket with 3005
		asked      int  // getToken calls before that
		withheld   int  // of those, left unanswered (mode withhold)
		connects   int
		subscribes int
		errs       []string     // the SDK's error events: type and code
		reconnect  refreshEvent // the first connecting after connected
		produced   uint64       // offset of {"seq":1}, produced once subscribed again
		done       bool
		deadline   = time.Now().Add(60 * time.Second)
	)
	for !done {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s; it printed:\n%s", s.history())
		}
		e := s.next()
		switch e.Event {
		case "need_token":
			switch {
			case expired:
				s.giveToken(token(t, user, time.Hour))
			case mode == "reject":
				asked++
				s.failToken("the test has no token for you")
			default:
				asked++
				withheld++
			}
		case "socket_close":
			if expired {
				// A socket of the reconnect: the one whose connect carried
				// the expired token ends once its 109 is answered (closed
				// by the SDK, or by the relay); the SDK must go on.
				continue
			}
			if e.Socket != 1 {
				t.Fatalf("unexpected %s; it printed:\n%s", e.line, s.history())
			}
			if e.Code != 3005 || e.Reason != "connection expired" {
				t.Fatalf("first socket closed %d %q, want 3005 \"connection expired\"; it printed:\n%s", e.Code, e.Reason, s.history())
			}
			// Not before exp + auth.leeway (a correctness bound, not a timing one).
			if e.T < exp+refreshLeeway.Milliseconds() {
				t.Fatalf("closed at %d, before exp %d + leeway %v; it printed:\n%s", e.T, exp, refreshLeeway, s.history())
			}
			expired = true
			for ; withheld > 0; withheld-- {
				s.giveToken(token(t, user, time.Hour))
			}
		case "socket_error":
			if !expired {
				t.Fatalf("unexpected %s; it printed:\n%s", e.line, s.history())
			}
		case "connecting":
			if connects > 0 && reconnect.Event == "" {
				reconnect = e
			}
		case "connected":
			connects++
			if connects > 1 && !expired {
				t.Fatalf("connected again before the relay closed the first socket; it printed:\n%s", s.history())
			}
		case "subscribed":
			subscribes++
			if subscribes == 2 {
				produced = produceSeq(1)
			}
		case "error":
			errs = append(errs, fmt.Sprintf("%s %d", e.Type, e.Code))
		case "publication":
			if produced != 0 && e.Offset == produced {
				if e.Data["seq"] != 1.0 {
					t.Fatalf("publication %s, want seq 1", e.line)
				}
				done = true
			}
		case "disconnected", "unsubscribed", "sub_error":
			t.Fatalf("unexpected %s: the SDK gave up; it printed:\n%s", e.line, s.history())
		}
	}
	s.stop()
	t.Logf("%s, getToken %s: what the SDK printed:\n%s", encoding, mode, s.history())

	if asked == 0 {
		t.Errorf("getToken was not called before the token expired")
	}
	if reconnect.Code != 3005 || reconnect.Reason != "connection expired" {
		t.Errorf("after the close the SDK emitted connecting %d %q, want 3005 \"connection expired\"", reconnect.Code, reconnect.Reason)
	}
	if mode == "reject" && (len(errs) == 0 || !strings.HasPrefix(errs[0], "refreshToken ")) {
		t.Errorf("SDK errors %v: want a refreshToken error first (the rejected getToken)", errs)
	}
	if _, body := r.get(t, "/metrics"); metric(body, disconnects3005) != 1 {
		t.Errorf("%s = %v, want 1", disconnects3005, metric(body, disconnects3005))
	}
}
