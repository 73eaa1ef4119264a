package relay_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/auth"
)

// getAs is a GET of path with token as its bearer token ("" none).
func (r *testRelay) getAs(t testing.TB, path, token string) (int, string) {
	t.Helper()
	if token != "" {
		token = "Bearer " + token
	}
	return r.request(t, http.MethodGet, path, token)
}

// TestPersonalDataEverySurface: a bettor's personal channel is served only
// to a request carrying that bettor's token, on the WebSocket (subscribe,
// history) and over REST (the channel, the listing); nobody else gets the
// data, nor learns whether there is any.
func TestPersonalDataEverySurface(t *testing.T) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Auth.Anonymous = true
	cfg.Channels.HistorySize = 10
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const mine, payout = "bets:#alice", `{"bet_id":"x1","status":"won","payout":10.5}`
	r.waitCached(t, mine, produce(t, prod, "results", mine, payout))
	r.waitCached(t, "odds:m:1x2", produce(t, prod, "odds", "odds:m:1x2", `{"home":2}`))
	alice, bob := token(t, "alice", time.Hour), token(t, "bob", time.Hour)
	esc := "/v1/channels/" + url.PathEscape(mine)

	for _, tt := range []struct {
		name, token string
		want        int
	}{
		{"anonymous", "", 401},
		{"another user", bob, 403},
		{"a bad token", "not.a.jwt", 401},
		{"an expired token", token(t, "alice", -time.Hour), 401},
		{"the owner", alice, 200},
	} {
		t.Run("REST channel, "+tt.name, func(t *testing.T) {
			code, body := r.getAs(t, esc, tt.token)
			if code != tt.want || (code != 200) == strings.Contains(body, "payout") {
				t.Fatalf("%d %s, want %d (data only to the owner)", code, body, tt.want)
			}
		})
	}
	t.Run("REST channel with no value yet: the same refusal", func(t *testing.T) {
		if code, _ := r.getAs(t, "/v1/channels/"+url.PathEscape("bets:#carol"), bob); code != 403 {
			t.Fatalf("%d, want 403 as for a channel with a value", code)
		}
	})
	for _, tt := range []struct {
		name, token string
		listed      bool
	}{{"anonymous", "", false}, {"another user", bob, false}, {"the owner", alice, true}} {
		t.Run("REST listing, "+tt.name, func(t *testing.T) {
			code, body := r.getAs(t, "/v1/channels?prefix=", tt.token)
			var v struct{ Channels []struct{ Channel string } }
			json.Unmarshal([]byte(body), &v)
			var names []string
			for _, c := range v.Channels {
				names = append(names, c.Channel)
			}
			if code != 200 || strings.Contains(fmt.Sprint(names), mine) != tt.listed || !strings.Contains(fmt.Sprint(names), "odds:m:1x2") {
				t.Fatalf("%d, channels %v; want %s listed: %v", code, names, mine, tt.listed)
			}
		})
	}
	for _, tt := range []struct {
		name, token string
		want        int // reply error; 0: the data
	}{{"anonymous", "", 103}, {"another user", bob, 103}, {"the owner", alice, 0}} {
		t.Run("WebSocket subscribe and history, "+tt.name, func(t *testing.T) {
			c := dial(t, r.url())
			c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tt.token))
			c.mustNext()
			c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, mine), fmt.Sprintf(`{"id":3,"history":{"channel":%q,"limit":-1}}`, mine))
			for _, id := range []float64{2, 3} {
				rep := c.mustNext()
				b, _ := json.Marshal(rep)
				if rep["id"] != id || errorCode(rep) != tt.want || (tt.want == 0) != strings.Contains(string(b), "payout") {
					t.Fatalf("reply %s, want error %d", b, tt.want)
				}
			}
		})
	}
}

// TestUserIDs: a token whose sub could not name its personal channel
// unambiguously is refused; a channel with two '#' is nobody's.
func TestUserIDs(t *testing.T) {
	kafka := newBetsKafka(t)
	r := startRelay(t, betsConfig(kafka.ListenAddrs()))
	for _, sub := range []string{"a#b", "a:b", "has space", strings.Repeat("u", 129), "ünï"} {
		t.Run(sub, func(t *testing.T) {
			c := dial(t, r.url())
			c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, sub, time.Hour)))
			c.expectClose(3500)
		})
	}
	c := dial(t, r.url())
	c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, "b", time.Hour)))
	c.mustNext()
	c.send(`{"id":2,"subscribe":{"channel":"bets:#a#b"}}`, `{"id":3,"subscribe":{"channel":"bets:#b"}}`)
	if rep := c.mustNext(); errorCode(rep) != 103 {
		t.Fatalf("user b on bets:#a#b: %v, want 103", rep)
	}
	if rep := c.mustNext(); rep["subscribe"] == nil {
		t.Fatalf("user b on bets:#b: %v", rep)
	}
}

// TestTokenExpiry: the connect reply says when the connection expires; a
// refresh with a new token of the same user extends it; without one the
// connection is closed with 3005 at expiry; another user's token closes
// it with 3500.
func TestTokenExpiry(t *testing.T) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Auth.Leeway = 0
	r := startRelay(t, cfg)
	connect := func(tok string) (*wsClient, map[string]any) {
		c := dial(t, r.url())
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok))
		rep := c.mustNext()
		conn, _ := rep["connect"].(map[string]any)
		return c, conn
	}
	t.Run("expires without refresh", func(t *testing.T) {
		c, conn := connect(token(t, "alice", 2*time.Second))
		if conn["expires"] != true || conn["ttl"] == nil || conn["ttl"].(float64) < 1 || conn["ttl"].(float64) > 2 {
			t.Fatalf("connect reply %v: want expires and a ttl of 1-2 s", conn)
		}
		c.expectClose(3005)
	})
	t.Run("refresh extends", func(t *testing.T) {
		c, _ := connect(token(t, "alice", 2*time.Second))
		c.send(fmt.Sprintf(`{"id":2,"refresh":{"token":%q}}`, token(t, "alice", time.Hour)))
		rep := c.mustNext()
		ref, _ := rep["refresh"].(map[string]any)
		if ref["expires"] != true || ref["ttl"].(float64) < 3500 || ref["client"] == nil {
			t.Fatalf("refresh reply %v", rep)
		}
		// Past the first token's expiry the connection still answers.
		deadline := time.Now().Add(3 * time.Second)
		for i := 10; time.Now().Before(deadline); i++ {
			c.send(fmt.Sprintf(`{"id":%d,"ping":{}}`, i))
			if rep := c.mustNext(); rep["ping"] == nil {
				t.Fatalf("after the refresh: %v", rep)
			}
			time.Sleep(200 * time.Millisecond) // pacing, not an assertion
		}
	})
	t.Run("refresh with an expired token", func(t *testing.T) {
		c, _ := connect(token(t, "alice", time.Hour))
		c.send(fmt.Sprintf(`{"id":2,"refresh":{"token":%q}}`, token(t, "alice", -time.Minute)))
		if rep := c.mustNext(); errorCode(rep) != 109 {
			t.Fatalf("refresh reply %v, want 109", rep)
		}
	})
	t.Run("an expired connect with subscribes in its message", func(t *testing.T) {
		// As the SDKs reconnect: connect and subscribes in one frame. The
		// subscribes are dropped, not answered as commands before
		// connect (3501, terminal); the client retries with a new token.
		c := dial(t, r.url())
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, "alice", -time.Minute)), `{"id":2,"subscribe":{"channel":"odds:a"}}`)
		if rep := c.mustNext(); errorCode(rep) != 109 {
			t.Fatalf("reply %v, want 109", rep)
		}
		c.send(fmt.Sprintf(`{"id":3,"connect":{"token":%q}}`, token(t, "alice", time.Hour)))
		if rep := c.mustNext(); rep["id"] != 3.0 || rep["connect"] == nil {
			t.Fatalf("retry on the same socket: %v", rep)
		}
	})
	t.Run("refresh as another user", func(t *testing.T) {
		c, _ := connect(token(t, "alice", time.Hour))
		c.send(fmt.Sprintf(`{"id":2,"refresh":{"token":%q}}`, token(t, "mallory", time.Hour)))
		c.expectClose(3500)
	})
}

// subToken is a subscription token: user may read channel until exp.
func subToken(t testing.TB, user, channel string, exp time.Duration) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), map[string]any{"sub": user, "channel": channel, "exp": time.Now().Add(exp).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestNamespaceRules: channels.namespaces says who reads what, on the
// WebSocket and over REST: anyone, authenticated connections, owners of
// personal channels, or holders of a subscription token for the channel,
// which expires (3006) unless refreshed with sub_refresh.
func TestNamespaceRules(t *testing.T) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Auth.Anonymous = true
	cfg.Auth.Leeway = 0
	cfg.Channels.HistorySize = 4
	cfg.Channels.Namespaces = []relay.NamespaceConfig{{Name: "members", Read: "authenticated"}, {Name: "vip", Read: "token"}, {Name: "inbox", Read: "owner"}}
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	for _, ch := range []string{"odds:m:1", "members:m:1", "vip:m:1", "inbox:x"} {
		r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"v":1}`))
	}
	connect := func(tok string) *wsClient {
		c := dial(t, r.url())
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok))
		c.mustNext()
		return c
	}
	anon, alice := connect(""), connect(token(t, "alice", time.Hour))
	for _, tt := range []struct {
		name      string
		c         *wsClient
		channel   string
		token     string
		wantError int
	}{
		{"open namespace, anonymous", anon, "odds:m:1", "", 0},
		{"authenticated namespace, anonymous", anon, "members:m:1", "", 103},
		{"authenticated namespace, a user", alice, "members:m:1", "", 0},
		{"token namespace without a token", alice, "vip:m:1", "", 103},
		{"token namespace, token for another channel", alice, "vip:m:1", subToken(t, "alice", "vip:m:2", time.Hour), 103},
		{"token namespace, token for another user", alice, "vip:m:1", subToken(t, "bob", "vip:m:1", time.Hour), 103},
		{"token namespace, expired token", alice, "vip:m:1", subToken(t, "alice", "vip:m:1", -time.Minute), 109},
		{"owner namespace, not a personal channel", alice, "inbox:x", "", 103},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q,"token":%q}}`, tt.channel, tt.token))
			rep := tt.c.mustNext()
			if errorCode(rep) != tt.wantError {
				t.Fatalf("reply %v, want error %d", rep, tt.wantError)
			}
			if tt.wantError == 0 {
				tt.c.send(fmt.Sprintf(`{"id":3,"unsubscribe":{"channel":%q}}`, tt.channel))
				tt.c.mustNext()
			}
		})
	}
	t.Run("REST", func(t *testing.T) {
		for _, tt := range []struct {
			channel, token string
			want           int
		}{
			{"odds:m:1", "", 200}, {"members:m:1", "", 401}, {"members:m:1", token(t, "alice", time.Hour), 200},
			{"vip:m:1", token(t, "alice", time.Hour), 403}, {"vip:m:1", "", 401},
		} {
			if code, _ := r.getAs(t, "/v1/channels/"+url.PathEscape(tt.channel), tt.token); code != tt.want {
				t.Errorf("GET %s with token %v: %d, want %d", tt.channel, tt.token != "", code, tt.want)
			}
		}
	})
	t.Run("a subscription token is not a connection token", func(t *testing.T) {
		c := dial(t, r.url())
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, subToken(t, "alice", "vip:m:1", time.Hour)))
		c.expectClose(3500)
	})
	t.Run("subscription token: ttl, history, sub_refresh, expiry", func(t *testing.T) {
		c := connect(token(t, "alice", time.Hour))
		c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":"vip:m:1","token":%q}}`, subToken(t, "alice", "vip:m:1", 2*time.Second)))
		sub, _ := c.mustNext()["subscribe"].(map[string]any)
		if sub["expires"] != true || sub["ttl"].(float64) < 1 || sub["ttl"].(float64) > 2 {
			t.Fatalf("subscribe reply %v: want expires and a ttl of 1-2 s", sub)
		}
		c.send(`{"id":3,"history":{"channel":"vip:m:1","limit":-1}}`)
		if rep := c.mustNext(); rep["history"] == nil {
			t.Fatalf("history of a channel subscribed with a token: %v", rep)
		}
		c.send(fmt.Sprintf(`{"id":4,"sub_refresh":{"channel":"vip:m:1","token":%q}}`, subToken(t, "alice", "vip:m:1", 3*time.Second)))
		ref, _ := c.mustNext()["sub_refresh"].(map[string]any)
		if ref["expires"] != true || ref["ttl"].(float64) < 2 {
			t.Fatalf("sub_refresh reply %v", ref)
		}
		c.send(fmt.Sprintf(`{"id":5,"sub_refresh":{"channel":"vip:m:1","token":%q}}`, subToken(t, "alice", "vip:m:2", time.Hour)))
		if rep := c.mustNext(); errorCode(rep) != 103 {
			t.Fatalf("sub_refresh with another channel's token: %v, want 103", rep)
		}
		c.expectClose(3006) // the refreshed token's 3 s run out
	})
}

// TestServerSideSubscriptions: the connection token's channels claim
// subscribes the connection without a client subscribe: a subscribe push,
// the cached value, then live updates, all naming the channel, in both
// encodings. The claim grants a token namespace; another user's personal
// channel is still refused (skipped).
func TestServerSideSubscriptions(t *testing.T) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Channels.Namespaces = []relay.NamespaceConfig{{Name: "vip", Read: "token"}}
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	r.waitCached(t, "bets:#alice", produce(t, prod, "results", "bets:#alice", `{"status":"won"}`))
	r.waitCached(t, "bets:#bob", produce(t, prod, "results", "bets:#bob", `{"status":"lost"}`))
	tok, err := auth.SignHS256([]byte(testSecret), map[string]any{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
		"channels": []string{"bets:#alice", "bets:#bob", "vip:m:1"}})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("json", func(t *testing.T) {
		c := dial(t, r.url())
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok))
		if rep := c.mustNext(); rep["connect"] == nil {
			t.Fatalf("connect reply %v", rep)
		}
		var got []string
		for i := 0; i < 3; i++ { // alice's: subscribe push and value; vip: subscribe push (no value yet)
			rep := c.mustNext()
			push, _ := rep["push"].(map[string]any)
			switch {
			case push["subscribe"] != nil:
				got = append(got, "subscribe "+push["channel"].(string))
			case push["pub"] != nil:
				got = append(got, fmt.Sprintf("pub %s %v", push["channel"], push["pub"].(map[string]any)["data"]))
			default:
				t.Fatalf("unexpected %v", rep)
			}
		}
		if want := "[subscribe bets:#alice pub bets:#alice map[status:won] subscribe vip:m:1]"; fmt.Sprint(got) != want {
			t.Fatalf("pushes %v, want %s (and nothing of bob's)", got, want)
		}
		produce(t, prod, "odds", "vip:m:1", `{"v":7}`)
		if ch, data, _, ok := pubOf(c.mustNext()); !ok || ch != "vip:m:1" || data["v"] != 7.0 {
			t.Fatalf("live push on vip:m:1: %s %v", ch, data)
		}
	})
	t.Run("protobuf", func(t *testing.T) {
		c := dialProtobuf(t, r.url())
		c.send(command(1, 4, pbStr(nil, 1, tok)))
		if rep := c.mustNext(); !rep.Connect {
			t.Fatalf("connect reply %+v", rep)
		}
		sub := c.mustNext()
		val := c.mustNext()
		if sub.Push == nil || sub.Push.Channel != "bets:#alice" || val.Push == nil || string(val.Push.Pub.Data) != `{"status":"won"}` {
			t.Fatalf("pushes %+v %+v", sub.Push, val.Push)
		}
	})
}
