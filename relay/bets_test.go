package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgerelay/edgerelay/relay"
	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/ingest"
)

const testSecret = "edgerelay-test-secret-of-32-bytes!!"

// betsConfig is testConfig with tokens checked, bets on and the results
// topic feeding personal channels.
func betsConfig(brokers []string) relay.Config {
	cfg := testConfig(brokers)
	cfg.Auth.HMACSecrets = []string{testSecret}
	cfg.Ingest.Topics = append(cfg.Ingest.Topics, ingest.Topic{Name: "results", ChannelTemplate: "bets:#{key}"})
	return cfg
}

func newBetsKafka(t *testing.T) *kfake.Cluster {
	return newKafka(t, kfake.SeedTopics(3, "bets", "results"))
}

func token(t testing.TB, user string, exp time.Duration) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), map[string]any{"sub": user, "exp": time.Now().Add(exp).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestSDKBets: the centrifuge SDK connects with a token and places bets
// with rpc('bet'); every reply carries the Kafka position of a record that
// is there, with the documented headers, and a retry of a bet id gets the
// same reply and no second record.
func TestSDKBets(t *testing.T) {
	dir := jsTestDir(t)
	kafka := newBetsKafka(t)
	r := startRelay(t, betsConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:football:epl:bets-1:1x2"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"status":"open","selections":[{"id":"home","odds":2.1}]}`))

	const count = 5
	cmd := exec.Command("node", "bets.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGERELAY_URL="+r.url(), "TOKEN="+token(t, "alice", time.Hour), "CHANNEL="+ch,
		fmt.Sprintf("COUNT=%d", count), "PREFIX=sdk", "RETRY=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bets.mjs: %v\n%s", err, out)
	}
	var replies []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var ev struct {
			Event string
			Reply map[string]any
		}
		json.Unmarshal([]byte(l), &ev)
		switch ev.Event {
		case "accepted":
			replies = append(replies, ev.Reply)
		case "done":
		default:
			t.Fatalf("bets.mjs: %s", l)
		}
	}
	if len(replies) != count+1 || fmt.Sprint(replies[0]) != fmt.Sprint(replies[count]) {
		t.Fatalf("replies %v: want %d, the last (a retry) equal to the first", replies, count+1)
	}
	recs := topicRecords(t, kafka.ListenAddrs(), "bets")
	if len(recs) != count {
		t.Fatalf("%d records in the bets topic, want %d", len(recs), count)
	}
	for i, rec := range recs {
		rep := replies[i]
		if rec.Partition != int32(rep["partition"].(float64)) || rec.Offset != int64(rep["offset"].(float64)) || header(rec, "bet-id") != rep["bet_id"] {
			t.Fatalf("record %d at %d/%d (%s) does not match reply %v", i, rec.Partition, rec.Offset, header(rec, "bet-id"), rep)
		}
		var v struct {
			User     string
			Bet      map[string]any
			OddsSeen *struct{ Offset int64 } `json:"odds_seen"`
		}
		json.Unmarshal(rec.Value, &v)
		if string(rec.Key) != "alice" || v.User != "alice" || header(rec, "user") != "alice" || header(rec, "node") != "test-node" ||
			header(rec, "idempotency-key") != "alice/"+header(rec, "bet-id") || header(rec, "odds-seen") == "" ||
			v.Bet["note"] != "opaque to the relay" || v.OddsSeen == nil {
			t.Fatalf("record %d: key %q headers %v value %s", i, rec.Key, rec.Headers, rec.Value)
		}
	}
}

// TestBetRejections: every bet the relay refuses gets its code and leaves
// no record; tokens and personal channels are enforced.
func TestBetRejections(t *testing.T) {
	kafka := newBetsKafka(t)
	r := startRelay(t, betsConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const open, suspended = "odds:tennis:atp:rej-1:winner", "odds:tennis:atp:rej-2:winner"
	r.waitCached(t, open, produce(t, prod, "odds", open, `{"status":"open"}`))
	r.waitCached(t, suspended, produce(t, prod, "odds", suspended, `{"status":"suspended"}`))
	r.waitCached(t, "bets:#bob", produce(t, prod, "results", "bets:#bob", `{"status":"won"}`))

	connect := func(tok string) *wsClient {
		c := dial(t, r.url())
		c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, tok))
		return c
	}
	bet := func(c *wsClient, id int, body string) map[string]any {
		c.send(fmt.Sprintf(`{"id":%d,"rpc":{"method":"bet","data":%s}}`, id, body))
		return c.mustNext()
	}
	valid := func(id, ch string) string {
		return fmt.Sprintf(`{"bet_id":%q,"channel":%q,"selection":"p1","odds":1.8,"stake":2}`, id, ch)
	}
	anon := connect("")
	if rep := anon.mustNext(); rep["connect"] == nil {
		t.Fatalf("anonymous connect: %v", rep)
	}
	alice := connect(token(t, "alice", time.Hour))
	alice.mustNext()
	for _, tt := range []struct {
		name string
		c    *wsClient
		body string
		code int
	}{
		{"anonymous", anon, valid("a1", open), 1001},
		{"not JSON object", alice, `"bet"`, 1000},
		{"missing stake", alice, `{"bet_id":"a2","channel":"` + open + `","selection":"p1","odds":1.8}`, 1000},
		{"odds not above 1", alice, `{"bet_id":"a3","channel":"` + open + `","selection":"p1","odds":1,"stake":2}`, 1000},
		{"bad bet id", alice, valid("no spaces", open), 1000},
		{"bad channel", alice, valid("a4", "odds:*"), 1000},
		{"oversize", alice, `{"bet_id":"a5","channel":"` + open + `","selection":"p1","odds":1.8,"stake":2,"pad":"` + strings.Repeat("x", 5000) + `"}`, 1000},
		{"suspended market", alice, valid("a6", suspended), 1002},
		{"unknown market", alice, valid("a7", "odds:tennis:atp:nothing:winner"), 1002},
		// Another user's personal channel, which has a cached value: the
		// answer must not tell whether it has one.
		{"personal channel", alice, valid("a9", "bets:#bob"), 1000},
		{"not a market namespace", alice, valid("a10", "scores:m1"), 1000},
		// encoding/json would validate the last of these and forward both.
		{"stake smuggled in a case variant", alice, strings.Replace(valid("a11", open), `"stake":2`, `"stake":-1000000,"STAKE":2`, 1), 1000},
		{"channel given twice", alice, strings.Replace(valid("a12", open), `"channel":`, `"channel":"`+suspended+`","channel":`, 1), 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorCode(bet(tt.c, 10, tt.body)); got != tt.code {
				t.Fatalf("error code %d, want %d", got, tt.code)
			}
		})
	}
	t.Run("bet id reused for another bet", func(t *testing.T) {
		if rep := bet(alice, 11, valid("a8", open)); rep["rpc"] == nil {
			t.Fatalf("first bet: %v", rep)
		}
		if got := errorCode(bet(alice, 12, strings.Replace(valid("a8", open), `"stake":2`, `"stake":3`, 1))); got != 1006 {
			t.Fatalf("error code %d, want 1006", got)
		}
	})
	if recs := topicRecords(t, kafka.ListenAddrs(), "bets"); len(recs) != 1 {
		t.Fatalf("%d records, want only the one accepted bet", len(recs))
	}

	t.Run("invalid token", func(t *testing.T) {
		connect("not.a.jwt").expectClose(3500)
	})
	t.Run("expired token", func(t *testing.T) {
		if got := errorCode(connect(token(t, "alice", -time.Hour)).mustNext()); got != 109 {
			t.Fatalf("error code %d, want 109", got)
		}
	})
	t.Run("personal channels", func(t *testing.T) {
		anon.send(`{"id":20,"subscribe":{"channel":"bets:#alice"}}`)
		if got := errorCode(anon.mustNext()); got != 103 {
			t.Fatalf("anonymous: code %d, want 103", got)
		}
		alice.send(`{"id":21,"subscribe":{"channel":"bets:#bob"}}`)
		if got := errorCode(alice.mustNext()); got != 103 {
			t.Fatalf("another user's channel: code %d, want 103", got)
		}
		alice.send(`{"id":22,"subscribe":{"channel":"bets:#alice"}}`)
		if rep := alice.mustNext(); rep["subscribe"] == nil {
			t.Fatalf("own channel: %v", rep)
		}
		res := &kgo.Record{Topic: "results", Key: []byte("alice"), Value: []byte(`{"bet_id":"a8","status":"won"}`)}
		if err := prod.ProduceSync(context.Background(), res).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if _, data, _, ok := pubOf(alice.mustNext()); !ok || data["status"] != "won" {
			t.Fatal("the result did not reach the bettor's channel")
		}
	})
}

// TestBetsKafkaDown: with produce requests failing, bets get the retryable
// code within bets.timeout while odds subscribers still get cached values;
// once Kafka is back, bets go through.
func TestBetsKafkaDown(t *testing.T) {
	kafka := newBetsKafka(t)
	cfg := betsConfig(kafka.ListenAddrs())
	cfg.Bets.Timeout = time.Second
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:basketball:nba:down-1:moneyline"
	r.waitCached(t, ch, produce(t, prod, "odds", ch, `{"status":"open"}`))

	var down atomic.Bool
	down.Store(true)
	kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		if down.Load() {
			return nil, errors.New("injected outage"), true // the connection is dropped
		}
		return nil, nil, false
	})
	c := dial(t, r.url())
	c.send(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, token(t, "carol", time.Hour)))
	c.mustNext()
	start := time.Now()
	c.send(fmt.Sprintf(`{"id":2,"rpc":{"method":"bet","data":{"bet_id":"d1","channel":%q,"selection":"home","odds":1.9,"stake":1}}}`, ch))
	rep := c.mustNext()
	took := time.Since(start)
	if e, _ := rep["error"].(map[string]any); e == nil || e["code"] != 1005.0 || e["temporary"] != true {
		t.Fatalf("bet during the outage: %v, want error 1005, temporary", rep)
	}
	if took > 3*time.Second {
		t.Fatalf("answered after %v, want about bets.timeout (1s)", took)
	}
	watcher := dial(t, r.url()) // odds still flow from the cache
	watcher.connect()
	watcher.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch))
	if sub, _ := watcher.mustNext()["subscribe"].(map[string]any); sub == nil || sub["publications"] == nil {
		t.Fatal("no cached value during the outage")
	}

	down.Store(false)
	checkFor(t, 15*time.Second, func() error {
		c.send(fmt.Sprintf(`{"id":3,"rpc":{"method":"bet","data":{"bet_id":"d1","channel":%q,"selection":"home","odds":1.9,"stake":1}}}`, ch))
		if rep := c.mustNext(); rep["rpc"] == nil {
			return fmt.Errorf("retry after the outage: %v", rep)
		}
		return nil
	})
}
