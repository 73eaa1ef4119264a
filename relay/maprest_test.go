package relay_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
)

// mapPage is the body of GET /v1/maps/{name}.
type mapPage struct {
	Map     string `json:"map"`
	Epoch   string `json:"epoch"`
	Offset  uint64 `json:"offset"`
	Cursor  string `json:"cursor"`
	Entries []struct {
		Key    string          `json:"key"`
		Data   json.RawMessage `json:"data"`
		Offset uint64          `json:"offset"`
	} `json:"entries"`
}

func (p mapPage) keys() string {
	var ks []string
	for _, e := range p.Entries {
		ks = append(ks, e.Key)
	}
	return strings.Join(ks, ",")
}

// TestMapREST: GET /v1/maps/{name} pages a map by cursor and limit, each
// entry with its key, data and offset, and gives the map's position; its
// refusals have the documented statuses (400 bad name, limit or cursor;
// 401/403 by the namespace rules; 404 not a map or no entries; 503 a full
// map or a node at max_maps); a page holds no more data than half of
// websocket.max_queue_bytes; the stream phase of a map subscribe resumes
// from a page's position.
func TestMapREST(t *testing.T) {
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), 4)
	cfg.Channels.Maps.Rules = append(cfg.Channels.Maps.Rules, relay.MapRuleConfig{Prefix: "members:", Depth: 1})
	cfg.Channels.Maps.MaxEntries, cfg.Channels.Maps.MaxMaps = 12, 5
	cfg.Channels.Namespaces = []relay.NamespaceConfig{{Name: "members", Read: "authenticated"}}
	cfg.Auth.HMACSecrets = []string{testSecret}
	cfg.Ingest.MaxValueBytes = 300 << 10
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())

	const m = "odds:tennis:wtt:match-9"
	entries := make([]mapChange, 10)
	for i := range entries {
		k := fmt.Sprintf("k%02d", i)
		entries[i] = mapChange{key: k, value: marketValue(k, i)}
	}
	entries = append(entries, mapChange{key: "k05", removed: true})
	produceEntries(t, prod, m, entries)
	top := entries[10].offset
	waitMap(t, r, m, 9, top)

	// Three values of 200 KiB: half of max_queue_bytes (1 MiB) holds two.
	const big = "odds:big:x:y"
	large := `{"pad":"` + strings.Repeat("x", 200<<10) + `"}`
	produceEntries(t, prod, big, []mapChange{{key: "a", value: large}, {key: "b", value: large}, {key: "c", value: large}})
	const full = "odds:full:x:y"
	over := make([]mapChange, 13)
	for i := range over {
		over[i] = mapChange{key: fmt.Sprintf("k%02d", i), value: marketValue("k", i)}
	}
	produceEntries(t, prod, full, over)
	const members = "members:vip:m"
	produceEntries(t, prod, members, []mapChange{{key: "a", value: `{"v":1}`}})
	waitMap(t, r, big, 3, 0)
	waitMap(t, r, members, 1, 0)
	checkFor(t, 20*time.Second, func() error {
		if code, _ := r.get(t, "/v1/maps/"+full); code != 503 {
			return fmt.Errorf("full map: %d", code)
		}
		return nil
	})

	esc := url.PathEscape
	for _, tt := range []struct {
		name, path, token string
		status            int
		keys, cursor      string // want, for 200
		body              string // substring of the reply
	}{
		{name: "first page, page_size", path: m, status: 200, keys: "k00,k01,k02,k03", cursor: "k03"},
		{name: "limit", path: m + "?limit=2", status: 200, keys: "k00,k01", cursor: "k01"},
		{name: "cursor, past a removal", path: m + "?limit=3&cursor=k03", status: 200, keys: "k04,k06,k07", cursor: "k07"},
		{name: "last page", path: m + "?cursor=k07", status: 200, keys: "k08,k09", cursor: ""},
		{name: "cursor after every key", path: m + "?cursor=zz", status: 200, keys: "", cursor: ""},
		{name: "bytes bound", path: big, status: 200, keys: "a,b", cursor: "b"},
		{name: "bytes bound, next", path: big + "?cursor=b", status: 200, keys: "c", cursor: ""},
		{name: "limit 0", path: m + "?limit=0", status: 400, body: "channels.maps.page_size"},
		{name: "limit past page_size", path: m + "?limit=5", status: 400, body: "from 1 to 4"},
		{name: "limit huge", path: m + "?limit=99999999999999999999", status: 400, body: "limit"},
		{name: "limit not a number", path: m + "?limit=x", status: 400, body: "limit"},
		{name: "cursor garbage", path: m + "?cursor=" + esc("a b*\x00"), status: 400, body: "cursor"},
		{name: "cursor too long", path: m + "?cursor=" + strings.Repeat("k", 300), status: 400, body: "cursor"},
		{name: "invalid name", path: esc("odds:a b"), status: 400, body: "invalid channel name"},
		{name: "not a map", path: "scores:x:y", status: 404, body: "not a map"},
		{name: "a map's entry, as a map", path: m + ":k01", status: 404, body: "no entries"},
		{name: "unknown map", path: "odds:nothing:here:at-all", status: 404, body: "no entries"},
		{name: "full map", path: full, status: 503, body: "over its limit"},
		{name: "namespace, anonymous", path: members, status: 401, body: "authenticated"},
		{name: "namespace, a user", path: members, token: token(t, "alice", time.Hour), status: 200, keys: "a"},
		{name: "bad token", path: members, token: "nonsense", status: 401, body: "valid, unexpired token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := r.getAs(t, "/v1/maps/"+tt.path, tt.token)
			if code != tt.status || !strings.Contains(body, tt.body) {
				t.Fatalf("GET %s: %d %s; want %d with %q", tt.path, code, body, tt.status, tt.body)
			}
			if code != 200 {
				var e struct{ Error string }
				if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
					t.Fatalf("error reply not {\"error\": ...}: %s", body)
				}
				return
			}
			var p mapPage
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatal(err)
			}
			if p.keys() != tt.keys || p.Cursor != tt.cursor || p.Epoch == "" || p.Offset == 0 {
				t.Fatalf("GET %s: keys %q cursor %q position %q/%d; want keys %q cursor %q", tt.path, p.keys(), p.Cursor, p.Epoch, p.Offset, tt.keys, tt.cursor)
			}
			if p.Map == m {
				if p.Offset != top {
					t.Errorf("map offset %d, want %d (the tombstone's)", p.Offset, top)
				}
				for _, e := range p.Entries {
					i := int(e.Key[2] - '0')
					if string(e.Data) != entries[i].value || e.Offset != entries[i].offset {
						t.Errorf("entry %s: %s at %d, want %s at %d", e.Key, e.Data, e.Offset, entries[i].value, entries[i].offset)
					}
				}
			}
		})
	}
	// A page's position is one the stream phase resumes from: the change
	// made after the REST page comes, and only it.
	_, body := r.get(t, "/v1/maps/"+m+"?limit=1")
	var first mapPage
	if err := json.Unmarshal([]byte(body), &first); err != nil {
		t.Fatal(err)
	}
	produceEntries(t, prod, m, []mapChange{{key: "k01", value: marketValue("k01", 100)}})
	waitMap(t, r, m, 9, top+1)
	c := r.dial(t)
	c.connect()
	res := mapSubscribe(t, c, 2, m, 1, fmt.Sprintf(`"epoch":%q,"offset":%d`, first.Epoch, first.Offset))
	if pubs, _ := res["publications"].([]any); num(res["phase"]) != 0 || len(pubs) != 1 || pubs[0].(map[string]any)["key"] != "k01" {
		t.Fatalf("stream phase from the REST page's position %s/%d: %v, want live with k01's change only", first.Epoch, first.Offset, res)
	}

	// The fifth map puts the node at max_maps: a map it holds nothing of
	// is then 503 (Kafka may have entries it had no room for).
	produceEntries(t, prod, "odds:fifth:x:y", []mapChange{{key: "a", value: `{"v":1}`}})
	waitMap(t, r, "odds:fifth:x:y", 1, 0)
	if code, body := r.get(t, "/v1/maps/odds:nothing:here:at-all"); code != 503 || !strings.Contains(body, "too many maps") {
		t.Fatalf("unknown map at max_maps: %d %s, want 503", code, body)
	}
}

// TestMapRESTHostile: one address sends 400 map requests as fast as it
// can, with huge limits, garbage cursors and names of maps that do not
// exist; it gets 400s and 404s until its burst (60) is spent, then 429s;
// it creates no map, and a bystander on another address gets its pages
// meanwhile.
func TestMapRESTHostile(t *testing.T) {
	kafka := newKafka(t)
	cfg := mapsConfig(kafka.ListenAddrs(), 100)
	cfg.HTTP.RatePerAddress, cfg.HTTP.BurstPerAddress = 1, 60
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const m = "odds:tennis:wtt:match-9"
	produceEntries(t, prod, m, []mapChange{{key: "a", value: marketValue("a", 1)}, {key: "b", value: marketValue("b", 1)}})
	waitMap(t, r, m, 2, 0)
	maps := r.srv.Hub().MapStats().Maps

	from := func(ip string) *http.Client {
		return &http.Client{Transport: &http.Transport{MaxConnsPerHost: 4,
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}}
	}
	hostile := from("127.0.0.2")
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; i < 100; i++ {
				var path string
				switch i % 4 {
				case 0:
					path = m + "?limit=1000000000"
				case 1:
					path = m + "?cursor=" + url.QueryEscape(strings.Repeat("\xff*", 500))
				case 2:
					path = fmt.Sprintf("odds:x:y:nothing-%d-%d", w, i)
				case 3:
					path = m + "?limit=-1&cursor=%00"
				}
				resp, err := hostile.Get("http://" + r.addr + "/v1/maps/" + path)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				counts[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	bystander := from("127.0.0.3")
	var page mapPage
	for i := 0; i < 5; i++ {
		resp, err := bystander.Get("http://" + r.addr + "/v1/maps/" + m)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || page.keys() != "a,b" {
			t.Fatalf("bystander: %s %v %+v", resp.Status, err, page)
		}
	}
	wg.Wait()
	t.Logf("hostile address: %v", counts)
	if counts[429] == 0 || counts[200] > 0 || counts[400] == 0 || counts[400]+counts[404]+counts[429] != 400 {
		t.Fatalf("hostile address got %v; want only 400, 404 and 429", counts)
	}
	if got := r.srv.Hub().MapStats().Maps; got != maps {
		t.Fatalf("maps holding entries: %d, was %d", got, maps)
	}
}
