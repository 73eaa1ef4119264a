package relay_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/cluster"
	"github.com/edgerelay/edgerelay/relay"
)

// TestClusterPresence: presence and presence_stats of a channel are
// summed over three relays as subscribers join and leave; the list is
// served up to channels.presence.max_clients; a namespace without
// presence, and a channel the client may not read, are refused.
func TestClusterPresence(t *testing.T) {
	kafka := newKafka(t)
	base := testConfig(kafka.ListenAddrs())
	base.Auth.HMACSecrets = []string{testSecret}
	base.Channels.Namespaces = []relay.NamespaceConfig{{Name: "odds", Read: "anyone", Presence: true}}
	base.Channels.Presence.Cache = 100 * time.Millisecond
	base.Channels.Presence.MaxClients = 3
	base.Channels.Presence.Busiest, base.Channels.Presence.BusiestInterval = 2, time.Second
	relays := startRelays(t, 3, base, nil)
	const ch = "odds:football:epl:presence-1:1x2"
	// The busiest-channels gauge ranks channels with a value from Kafka.
	prod := newProducer(t, kafka.ListenAddrs())
	const quiet = "odds:football:epl:presence-2:1x2"
	for _, c := range []string{ch, quiet} {
		off := produce(t, prod, "odds", c, `{"v":1}`)
		for _, r := range relays {
			r.waitCached(t, c, off)
		}
	}

	// who: client id → user, of every subscriber, across the nodes.
	who := map[string]string{}
	subscribe := func(r *testRelay, user string) *wsClient {
		t.Helper()
		c := r.dial(t)
		c.send(`{"id":1,"connect":{"token":"` + token(t, user, time.Hour) + `"}}`)
		rep := c.mustNext()
		id, _ := rep["connect"].(map[string]any)["client"].(string)
		c.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
		if rep := c.mustNext(); rep["subscribe"] == nil {
			t.Fatalf("subscribe: %v", rep)
		}
		who[id] = user
		return c
	}
	a1 := subscribe(relays[0], "alice")
	subscribe(relays[0], "bob")
	subscribe(relays[1], "alice") // alice again, on another node

	asker := relays[2].dial(t) // not subscribed, on a node with no subscriber
	asker.connect()
	id := 10
	ask := func(method string) map[string]any {
		t.Helper()
		id++
		asker.send(fmt.Sprintf(`{"id":%d,"%s":{"channel":"%s"}}`, id, method, ch))
		for {
			rep := asker.mustNext()
			if rep["id"] == float64(id) {
				return rep
			}
		}
	}
	stats := func(clients, users int) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			rep := ask("presence_stats")
			ps, _ := rep["presence_stats"].(map[string]any)
			if ps == nil || ps["num_clients"] != float64(clients) || ps["num_users"] != float64(users) {
				return fmt.Errorf("presence_stats %v, want %d clients, %d users", rep, clients, users)
			}
			return nil
		})
	}
	// Users are counted per node and summed: alice, on two nodes, twice
	// (docs/protocol.md, "Presence").
	stats(3, 3)

	rep := ask("presence")
	list, _ := rep["presence"].(map[string]any)["presence"].(map[string]any)
	var got, want []string
	for id, ci := range list {
		info := ci.(map[string]any)
		got = append(got, id+"="+info["user"].(string)+"/"+info["client"].(string))
	}
	for id, user := range who {
		want = append(want, id+"="+user+"/"+id)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("presence %v\nwant %v", got, want)
	}

	// Every node's gauge shows the cluster-wide figures, busiest first.
	relays[1].dial(t) // a connection without subscriptions counts nowhere
	quietSub := relays[2].dial(t)
	quietSub.connect()
	quietSub.send(`{"id":2,"subscribe":{"channel":"` + quiet + `"}}`)
	quietSub.mustNext()
	for _, r := range relays {
		checkFor(t, 15*time.Second, func() error {
			_, body := r.get(t, "/metrics")
			if a, b := metric(body, `edgerelay_channel_subscribers_busiest{channel="`+ch+`"}`), metric(body, `edgerelay_channel_subscribers_busiest{channel="`+quiet+`"}`); a != 3 || b != 1 {
				return fmt.Errorf("busiest: %s", grep(body, "edgerelay_channel_subscribers_busiest"))
			}
			return nil
		})
	}

	// The npm SDK, both builds, asks the same of the third node.
	dir := jsTestDir(t)
	for _, encoding := range []string{"json", "protobuf"} {
		cmd := exec.Command("node", "presence.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "EDGERELAY_URL="+relays[2].url(), "CHANNEL="+ch, "ENCODING="+encoding, "TOKEN="+token(t, "dave", time.Hour))
		cmd.Stderr = os.Stderr
		b, err := cmd.Output()
		var res struct {
			Event   string
			Stats   struct{ NumClients, NumUsers int }
			Clients []struct{ ID, User, Client string }
		}
		json.Unmarshal(b, &res)
		var ids []string
		for _, c := range res.Clients {
			if who[c.ID] != c.User || c.Client != c.ID {
				t.Errorf("%s: client %+v", encoding, c)
			}
			ids = append(ids, c.ID)
		}
		if err != nil || res.Event != "presence" || res.Stats.NumClients != 3 || res.Stats.NumUsers != 3 || len(ids) != 3 {
			t.Errorf("%s SDK: %v %s", encoding, err, b)
		}
	}

	// Past max_clients the list is refused; the stats are not.
	subscribe(relays[2], "carol")
	stats(4, 4)
	checkFor(t, 10*time.Second, func() error { // once the cached list expires
		if rep := ask("presence"); errorCode(rep) != 106 {
			return fmt.Errorf("presence of 4 subscribers with max_clients 3: %v, want error 106", rep)
		}
		return nil
	})

	// Leaving: an unsubscribe and a closed connection.
	a1.send(`{"id":3,"unsubscribe":{"channel":"` + ch + `"}}`)
	a1.mustNext()
	stats(3, 3)

	asker.send(`{"id":90,"presence_stats":{"channel":"scores:football:x"}}`,
		`{"id":91,"presence":{"channel":"odds:#alice"}}`)
	for range 2 {
		rep := asker.mustNext()
		switch want := map[float64]int{90: 108, 91: 103}[rep["id"].(float64)]; {
		case errorCode(rep) != want:
			t.Errorf("reply %v, want error %d", rep, want)
		}
	}

	_, body := relays[2].get(t, "/metrics")
	if metric(body, `edgerelay_presence_requests_total{kind="presence_stats",result="complete"}`) < 1 {
		t.Errorf("presence metrics:\n%s", grep(body, "edgerelay_presence"))
	}
}

// TestPresenceBounds: with a member that never answers, each uncached ask
// waits channels.presence.timeout; past 64 at once, asks for more channels
// get 111, and a subscriber on the node keeps receiving.
func TestPresenceBounds(t *testing.T) {
	kafka := newKafka(t)
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Channels.Namespaces = []relay.NamespaceConfig{{Name: "odds", Read: "anyone", Presence: true}}
	cfg.Channels.Presence.Timeout = 3 * time.Second
	r := startRelays(t, 1, cfg, nil)[0]
	// A member without a query handler: it never answers.
	mute := cluster.DefaultConfig()
	mute.Name, mute.Bind, mute.Seeds = "mute", "127.0.0.2:0", []string{r.cluster(t).Members[0].Address}
	mute.PublicURL = "ws://mute.example:8000/connection/websocket"
	n, err := cluster.New(mute, func() cluster.Status { return cluster.Status{State: cluster.StateReady} }, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	checkFor(t, 10*time.Second, func() error {
		if v := r.cluster(t); len(v.Members) != 2 || v.Members[0].State != "alive" || v.Members[1].State != "alive" {
			return fmt.Errorf("members %+v", v.Members)
		}
		return nil
	})

	prod := newProducer(t, kafka.ListenAddrs())
	const feed = "scores:bounds"
	r.waitCached(t, feed, produce(t, prod, "scores", feed, `{"n":0}`))
	bystander := r.dial(t)
	bystander.connect()
	bystander.send(`{"id":2,"subscribe":{"channel":"` + feed + `"}}`)
	bystander.mustNext()

	asker := r.dial(t)
	asker.connect()
	var cmds []string
	for i := range 80 {
		cmds = append(cmds, fmt.Sprintf(`{"id":%d,"presence_stats":{"channel":"odds:bounds:%d"}}`, 100+i, i))
	}
	asker.send(cmds...)
	busy := 0
	for range 80 - 64 { // answered at once; the 64 others wait for the mute member
		rep := asker.mustNext()
		if errorCode(rep) == 111 {
			busy++
		}
	}
	if busy != 80-64 {
		t.Errorf("%d asks got 111, want %d", busy, 80-64)
	}
	produce(t, prod, "scores", feed, `{"n":1}`)
	for {
		if _, data, _, ok := pubOf(bystander.mustNext()); ok && data["n"] == float64(1) {
			break
		}
	}
	answered := 0
	for range 64 { // at the timeout: the local count, the mute member left out
		if rep := asker.mustNext(); rep["presence_stats"] != nil {
			answered++
		}
	}
	if answered != 64 {
		t.Errorf("%d of 64 waiting asks answered", answered)
	}
	_, body := r.get(t, "/metrics")
	if v := metric(body, `edgerelay_presence_requests_total{kind="presence_stats",result="partial"}`); v != 64 {
		t.Errorf("partial answers %v, want 64", v)
	}
}
