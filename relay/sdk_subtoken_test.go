package relay_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/auth"
)

const disconnects3006 = `edgerelay_disconnects_total{code="3006"}`

// TestSDKSubscriptionAccess: channel access (docs/protocol.md, "Access") as
// the stock centrifuge SDK (JSON and Protobuf builds) uses it, with
// tests/js/subtoken.mjs, whose subscription getToken asks this test. The
// raw-protocol versions are TestNamespaceRules and
// TestServerSideSubscriptions.
//
//   - refresh: a subscription to a channel of a `token` namespace, created
//     with a getToken, gets 3 s subscription tokens; the SDK refreshes each
//     with sub_refresh on the same subscription and WebSocket, never
//     resubscribing or reconnecting, and receives every publication
//     produced into Kafka for 10 s (several lifetimes).
//   - reject: the subscription's getToken rejects at refresh: the SDK emits
//     a subscription 'error' type refreshToken (code 9) and would retry in
//     10-20 s; the relay closes the connection with 3006 "subscription
//     expired", not before exp + auth.leeway. SDK 5.8.0 then: 'connecting'
//     3006, the subscription 'subscribing', reconnects, resubscribes with the
//     token it holds (the expired one), gets 109 (subscription 'error' type
//     subscribe, code 109), calls getToken and subscribes, recovered; never
//     'disconnected' nor 'unsubscribed'. The test checks the 3006, that
//     'connecting', that it is subscribed again and receives what is
//     produced next; the steps in between are logged (-v).
//   - server: a connection token with a channels claim (the user's personal
//     channel): the SDK reports the server-side subscription (client
//     'subscribed') and delivers the cached value and every publication
//     produced after it as client 'publication' events naming the channel.
func TestSDKSubscriptionAccess(t *testing.T) {
	tests := []struct {
		name     string
		encoding string
		mode     string // refresh, reject, server
	}{
		{"json/refresh", "json", "refresh"},
		{"json/reject", "json", "reject"},
		{"json/server", "json", "server"},
		{"protobuf/refresh", "protobuf", "refresh"},
		{"protobuf/reject", "protobuf", "reject"},
		{"protobuf/server", "protobuf", "server"},
	}
	dir := jsTestDir(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			switch tt.mode {
			case "refresh":
				testSDKSubRefresh(t, dir, tt.encoding)
			case "reject":
				testSDKSubExpiry(t, dir, tt.encoding)
			case "server":
				testSDKServerSubs(t, dir, tt.encoding)
			}
		})
	}
}

// eventChannel is the channel an event of subtoken.mjs names.
func eventChannel(e refreshEvent) string {
	var v struct{ Channel string }
	json.Unmarshal([]byte(e.line), &v)
	return v.Channel
}

// subSetup starts Kafka and the relay with auth.leeway refreshLeeway and
// the `token` namespace vip, and a vip channel whose cached value is
// {"seq":0}. produceSeq produces {"seq":N} to it and returns the offset the
// SDK reports (Kafka offset + 1); cached is that of the cached value.
func subSetup(t *testing.T, encoding string) (r *testRelay, ch string, produceSeq func(seq int) uint64, cached uint64) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Auth.Leeway = refreshLeeway
	cfg.Channels.Namespaces = []relay.NamespaceConfig{{Name: "vip", Read: "token"}}
	r = startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	ch = "vip:football:epl:subtoken-" + encoding + ":1x2"
	produceSeq = func(seq int) uint64 {
		return uint64(produce(t, prod, "odds", ch, fmt.Sprintf(`{"seq":%d}`, seq))) + 1
	}
	cached = produceSeq(0)
	r.waitCached(t, ch, int64(cached-1))
	return r, ch, produceSeq, cached
}

func testSDKSubRefresh(t *testing.T, dir, encoding string) {
	const user = "subtoken-user"
	r, ch, produceSeq, cached := subSetup(t, encoding)
	s := startScript(t, dir, "subtoken.mjs", r, encoding, ch, token(t, user, time.Hour))

	var (
		produced     = []uint64{cached} // offsets, in order; the subscribe reply carries the cached value
		got          []uint64
		seqs         []int
		seq          int
		tokens       int // getToken calls answered: the subscribe's, then one per refresh
		replies      []refreshEvent
		connected    bool
		subscribedAt time.Time
		finishing    bool // producing no more: wait for what was produced
		deadline     = time.Now().Add(60 * time.Second)
		pace         = time.NewTicker(250 * time.Millisecond) // paces the producer, asserts nothing
	)
	defer pace.Stop()
	for !finishing || len(got) < len(produced) {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %d tokens given, %d of %d publications; it printed:\n%s", tokens, len(got), len(produced), s.history())
		}
		e, ok := s.nextOr(pace.C)
		if !ok {
			// Enough once several lifetimes passed with 3 refreshes or
			// more and, on JSON, every refresh was answered.
			switch {
			case subscribedAt.IsZero() || finishing:
			case time.Since(subscribedAt) >= refreshSpan && tokens >= 4 && (encoding != "json" || len(replies) == tokens-1):
				finishing = true
			default:
				seq++
				produced = append(produced, produceSeq(seq))
			}
			continue
		}
		switch e.Event {
		case "need_token":
			if c := eventChannel(e); c != ch {
				t.Fatalf("getToken for channel %q, want %q; it printed:\n%s", c, ch, s.history())
			}
			tokens++
			s.giveToken(subToken(t, user, ch, refreshLifetime))
		case "connected":
			if connected {
				t.Fatalf("connected again: the SDK reconnected; it printed:\n%s", s.history())
			}
			connected = true
		case "connecting":
			if connected {
				t.Fatalf("connecting after connected: the SDK reconnects; it printed:\n%s", s.history())
			}
		case "subscribing":
			if !subscribedAt.IsZero() {
				t.Fatalf("subscribing after subscribed: the SDK resubscribes; it printed:\n%s", s.history())
			}
		case "subscribed":
			subscribedAt = time.Now()
		case "sub_refresh_reply":
			if e.Error != nil || e.Refresh["expires"] != true {
				t.Fatalf("sub_refresh reply %s: want expires; it printed:\n%s", e.line, s.history())
			}
			if ttl, _ := e.Refresh["ttl"].(float64); ttl < 1 || ttl > refreshLifetime.Seconds() {
				t.Fatalf("sub_refresh reply %s: want a ttl of 1-%v s; it printed:\n%s", e.line, refreshLifetime.Seconds(), s.history())
			}
			replies = append(replies, e)
		case "publication":
			if c := eventChannel(e); c != ch {
				t.Fatalf("publication on %q, want %q; it printed:\n%s", c, ch, s.history())
			}
			n, _ := e.Data["seq"].(float64)
			got, seqs = append(got, e.Offset), append(seqs, int(n))
		case "socket_open":
			if e.Socket != 1 {
				t.Fatalf("a second WebSocket: %s; it printed:\n%s", e.line, s.history())
			}
		default: // disconnected, socket_close, socket_error, error, sub_error, unsubscribed, server_*
			t.Fatalf("unexpected %s; it printed:\n%s", e.line, s.history())
		}
	}
	s.stop()

	if tokens < 4 {
		t.Errorf("getToken called %d times, want 4 or more (subscribe, then a refresh every %v for %v)", tokens, refreshLifetime, refreshSpan)
	}
	if fmt.Sprint(got) != fmt.Sprint(produced) {
		t.Errorf("publications at offsets %v, want %v", got, produced)
	}
	for i, n := range seqs {
		if n != i {
			t.Fatalf("publications seq %v, want 0..%d", seqs, len(produced)-1)
		}
	}
	if _, body := r.get(t, "/metrics"); metric(body, disconnects3006) > 0 {
		t.Errorf("%s = %v, want none", disconnects3006, metric(body, disconnects3006))
	}
	t.Logf("%s: %d subscription tokens over %v on one subscription and WebSocket, %d publications, %d sub_refresh replies seen (JSON only)",
		encoding, tokens, time.Since(subscribedAt).Round(time.Second), len(got), len(replies))
}

func testSDKSubExpiry(t *testing.T, dir, encoding string) {
	const user = "subexpiry-user"
	r, ch, produceSeq, _ := subSetup(t, encoding)
	s := startScript(t, dir, "subtoken.mjs", r, encoding, ch, token(t, user, time.Hour))

	var (
		exp        int64 // of the first subscription token, unix ms
		expired    bool  // the relay closed the first socket with 3006
		rejected   int   // getToken calls rejected before that
		connects   int
		subscribes int
		subErrs    []string     // the subscription's error events: type and code
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
			if c := eventChannel(e); c != ch {
				t.Fatalf("getToken for channel %q, want %q; it printed:\n%s", c, ch, s.history())
			}
			switch {
			case exp == 0:
				tok := subToken(t, user, ch, refreshLifetime)
				exp = tokenExp(t, tok)
				s.giveToken(tok)
			case expired:
				s.giveToken(subToken(t, user, ch, time.Hour))
			default:
				rejected++
				s.failToken("the test has no token for you")
			}
		case "socket_close":
			if expired {
				continue // a socket of the reconnect: logged; the SDK must go on
			}
			if e.Socket != 1 {
				t.Fatalf("unexpected %s; it printed:\n%s", e.line, s.history())
			}
			if e.Code != 3006 || e.Reason != "subscription expired" {
				t.Fatalf("first socket closed %d %q, want 3006 \"subscription expired\"; it printed:\n%s", e.Code, e.Reason, s.history())
			}
			// Not before exp + auth.leeway (a correctness bound, not a timing one).
			if e.T < exp+refreshLeeway.Milliseconds() {
				t.Fatalf("closed at %d, before exp %d + leeway %v; it printed:\n%s", e.T, exp, refreshLeeway, s.history())
			}
			expired = true
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
			if subscribes > 1 && !expired {
				t.Fatalf("subscribed again before the relay closed the first socket; it printed:\n%s", s.history())
			}
			if subscribes == 2 {
				produced = produceSeq(1)
			}
		case "sub_error":
			subErrs = append(subErrs, fmt.Sprintf("%s %d", e.Type, e.Code))
		case "publication":
			if produced != 0 && e.Offset == produced {
				if e.Data["seq"] != 1.0 {
					t.Fatalf("publication %s, want seq 1", e.line)
				}
				done = true
			}
		case "disconnected", "unsubscribed", "error":
			t.Fatalf("unexpected %s: the SDK gave up; it printed:\n%s", e.line, s.history())
		}
	}
	s.stop()
	t.Logf("%s, subscription getToken rejects: what the SDK printed:\n%s", encoding, s.history())

	if rejected == 0 {
		t.Errorf("getToken was not called to refresh before the subscription token expired")
	}
	if reconnect.Code != 3006 || reconnect.Reason != "subscription expired" {
		t.Errorf("after the close the SDK emitted connecting %d %q, want 3006 \"subscription expired\"", reconnect.Code, reconnect.Reason)
	}
	if len(subErrs) == 0 || subErrs[0] != "refreshToken 9" {
		t.Errorf("subscription errors %v: want refreshToken 9 first (the rejected getToken)", subErrs)
	}
	if _, body := r.get(t, "/metrics"); metric(body, disconnects3006) != 1 {
		t.Errorf("%s = %v, want 1", disconnects3006, metric(body, disconnects3006))
	}
}

func testSDKServerSubs(t *testing.T, dir, encoding string) {
	user := "server-" + encoding
	ch := "bets:#" + user
	kafka := newBetsKafka(t)
	r := startRelay(t, betsConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	produceSeq := func(seq int) uint64 {
		return uint64(produce(t, prod, "results", ch, fmt.Sprintf(`{"seq":%d}`, seq))) + 1
	}
	cached := produceSeq(0)
	r.waitCached(t, ch, int64(cached-1))
	tok, err := auth.SignHS256([]byte(testSecret), map[string]any{"sub": user, "exp": time.Now().Add(time.Hour).Unix(), "channels": []string{ch}})
	if err != nil {
		t.Fatal(err)
	}
	s := startScript(t, dir, "subtoken.mjs", r, encoding, "", tok)

	const live = 5 // publications produced after the cached one
	var (
		produced   = []uint64{cached}
		got        []uint64
		seqs       []int
		connected  bool
		subscribed bool
		deadline   = time.Now().Add(60 * time.Second)
	)
	for len(got) < live+1 {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %d of %d publications; it printed:\n%s", len(got), live+1, s.history())
		}
		e := s.next()
		switch e.Event {
		case "socket_open":
			if e.Socket != 1 {
				t.Fatalf("a second WebSocket: %s; it printed:\n%s", e.line, s.history())
			}
		case "connecting":
			if connected {
				t.Fatalf("connecting after connected: the SDK reconnects; it printed:\n%s", s.history())
			}
		case "connected":
			connected = true
		case "server_subscribed":
			if c := eventChannel(e); c != ch || subscribed || !connected {
				t.Fatalf("server-side subscribed %s, want %q once, after connected; it printed:\n%s", e.line, ch, s.history())
			}
			subscribed = true
		case "server_publication":
			if c := eventChannel(e); c != ch || !subscribed {
				t.Fatalf("server-side publication %s, want one on %q after subscribed; it printed:\n%s", e.line, ch, s.history())
			}
			n, _ := e.Data["seq"].(float64)
			got, seqs = append(got, e.Offset), append(seqs, int(n))
			// The next is produced once the previous arrived: each is a
			// live one, after the cached value.
			if len(produced) < live+1 {
				produced = append(produced, produceSeq(len(produced)))
			}
		default: // disconnected, error, socket_close, socket_error, server_subscribing, server_unsubscribed, need_token, ...
			t.Fatalf("unexpected %s; it printed:\n%s", e.line, s.history())
		}
	}
	s.stop()

	if fmt.Sprint(got) != fmt.Sprint(produced) {
		t.Errorf("publications at offsets %v, want %v", got, produced)
	}
	for i, n := range seqs {
		if n != i {
			t.Fatalf("publications seq %v, want 0..%d", seqs, live)
		}
	}
	t.Logf("%s: server-side subscription to %s, %d publications; it printed:\n%s", encoding, ch, len(got), s.history())
}
