package relay_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// getAs is a GET of path with token as its bearer token ("" none).
func (r *testRelay) getAs(t testing.TB, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.addr+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
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
