package fanout

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

// recorder is a Subscriber that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	frames []*Frame
}

func (r *recorder) Deliver(u *Update) {
	r.mu.Lock()
	r.frames = append(r.frames, u.Frame(0))
	r.mu.Unlock()
}

func (r *recorder) offsets() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int64, len(r.frames))
	for i, f := range r.frames {
		out[i] = f.Pub.Pos.Offset
	}
	return out
}

func encodeData(u *Update, f Form) *Frame { return &Frame{Bytes: u.Pub.Data, Pub: u.Pub, Form: f} }

func pub(ch string, off int64, data string) *Publication {
	return &Publication{Channel: ch, Data: []byte(data), Pos: Position{Stream: "odds", Offset: off}}
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newTestHub(mod func(*Config)) *Hub {
	cfg := DefaultConfig()
	cfg.Encoder = encodeData
	if mod != nil {
		mod(&cfg)
	}
	return New(cfg)
}

func TestValidateName(t *testing.T) {
	long := make([]byte, 256)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"odds:football:epl:match-123:1x2", true},
		{"scores:tennis:wtt-2026-04:court-2", true},
		{"user#42", true},
		{"a", true},
		{string(long[:255]), true},
		{string(long), false},
		{"", false},
		{":odds", false},
		{"odds:", false},
		{"odds::x", false},
		{"odds:*", false},
		{"odds:>", false},
		{"odds football", false},
		{"odds:ü", false},
		{"odds\n", false},
		{"odds/x", false},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.name), func(t *testing.T) {
			err := ValidateName(tt.name, 0)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidChannel) {
				t.Fatalf("error %v does not wrap ErrInvalidChannel", err)
			}
		})
	}
}

func FuzzValidateName(f *testing.F) {
	f.Add("odds:football:epl:match-123:1x2")
	f.Add("a::b")
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name, 64)
		if err == nil && (len(name) == 0 || len(name) > 64) {
			t.Fatalf("accepted %q", name)
		}
	})
}

func TestSubscribeGetsCachedThenLive(t *testing.T) {
	h := newTestHub(nil)
	const ch = "odds:football:epl:m1:1x2"
	if err := h.Publish(pub(ch, 1, `{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := h.Publish(pub(ch, 2, `{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	var cached *Publication
	if err := h.Subscribe(ch, r, func(st *State) { cached = st.Last }); err != nil {
		t.Fatal(err)
	}
	if cached == nil || cached.Pos.Offset != 2 {
		t.Fatalf("cached = %+v, want offset 2", cached)
	}
	h.Publish(pub(ch, 3, `{"v":3}`))
	h.Publish(pub("odds:other", 4, `{}`))
	if got := r.offsets(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("delivered %v, want [3]", got)
	}
	if err := h.Subscribe(ch, r, nil); !errors.Is(err, ErrAlreadySubscribed) {
		t.Fatalf("second Subscribe = %v, want ErrAlreadySubscribed", err)
	}
	if !h.Unsubscribe(ch, r) || h.Unsubscribe(ch, r) {
		t.Fatal("Unsubscribe should report true once")
	}
	h.Publish(pub(ch, 5, `{}`))
	if got := r.offsets(); len(got) != 1 {
		t.Fatalf("delivered after unsubscribe: %v", got)
	}
	if st := h.Stats(); st.Subscriptions != 0 || st.Channels != 2 || st.Publications != 5 || st.Deliveries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInvalidNamesRejected(t *testing.T) {
	h := newTestHub(nil)
	if err := h.Publish(pub("bad name", 1, "{}")); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("Publish = %v", err)
	}
	if err := h.Subscribe("odds:*", &recorder{}, nil); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("Subscribe = %v", err)
	}
}

// TestNoGapBetweenCacheAndLive subscribes while another goroutine publishes:
// each subscriber must see its cached offset followed by every later offset.
func TestNoGapBetweenCacheAndLive(t *testing.T) {
	h := newTestHub(nil)
	const ch, n = "odds:race", 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(1); i <= n; i++ {
			h.Publish(pub(ch, i, "{}"))
		}
	}()
	type sub struct {
		r     *recorder
		first int64
	}
	var subs []sub
	for i := 0; i < 50; i++ {
		s := sub{r: &recorder{}}
		h.Subscribe(ch, s.r, func(st *State) {
			last := st.Last
			if last != nil {
				s.first = last.Pos.Offset
			}
		})
		subs = append(subs, s)
	}
	wg.Wait()
	for i, s := range subs {
		want := s.first + 1
		for _, off := range s.r.offsets() {
			if off != want {
				t.Fatalf("subscriber %d: got offset %d, want %d", i, off, want)
			}
			want++
		}
		if want != n+1 {
			t.Fatalf("subscriber %d ended at %d, want %d", i, want-1, n)
		}
	}
}

func TestEviction(t *testing.T) {
	tests := []struct {
		name        string
		cfg         func(*Config)
		publish     int
		advance     time.Duration
		wantLeft    int64
		wantIdle    uint64
		wantCap     uint64
		subscribed0 bool // subscriber on channel 0, which must survive
	}{
		{name: "within caps", publish: 10, wantLeft: 10},
		{name: "idle ttl", cfg: func(c *Config) { c.IdleTTL = time.Minute }, publish: 10, advance: 2 * time.Minute, wantLeft: 1, wantIdle: 9, subscribed0: true},
		{name: "max channels", cfg: func(c *Config) { c.MaxChannels = 4 }, publish: 10, wantLeft: 4, wantCap: 6, subscribed0: true},
		{name: "max bytes", cfg: func(c *Config) { c.MaxCachedBytes = 3 * (pub("c:0", 0, "{}").size() + 1) }, publish: 10, wantLeft: 3, wantCap: 7},
		{name: "idle disabled", cfg: func(c *Config) { c.IdleTTL = -1 }, publish: 5, advance: 1000 * time.Hour, wantLeft: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1e9, 0)}
			h := newTestHub(func(c *Config) {
				c.Now = clk.now
				if tt.cfg != nil {
					tt.cfg(c)
				}
			})
			if tt.subscribed0 {
				h.Subscribe("c:0", &recorder{}, nil)
			}
			for i := 0; i < tt.publish; i++ {
				clk.add(time.Second)
				h.Publish(pub(fmt.Sprintf("c:%d", i), int64(i), "{}"))
			}
			clk.add(tt.advance)
			h.Sweep()
			st := h.Stats()
			if st.Channels != tt.wantLeft || st.EvictedIdle != tt.wantIdle || st.EvictedCap != tt.wantCap {
				t.Fatalf("stats %+v, want channels=%d idle=%d cap=%d", st, tt.wantLeft, tt.wantIdle, tt.wantCap)
			}
			if tt.subscribed0 && h.Last("c:0") == nil {
				t.Fatal("subscribed channel was evicted")
			}
			if i := tt.publish - 1; tt.advance == 0 && h.Last(fmt.Sprintf("c:%d", i)) == nil {
				t.Fatal("most recent channel was evicted")
			}
			var want int64
			for _, c := range h.Channels("", 0) {
				want += c.Last.size()
			}
			if st.CachedBytes != want {
				t.Fatalf("cached bytes %d, want %d", st.CachedBytes, want)
			}
		})
	}
}

func TestChannelsListing(t *testing.T) {
	h := newTestHub(nil)
	for _, n := range []string{"odds:b", "odds:a", "scores:a", "odds:c"} {
		h.Publish(pub(n, 1, "{}"))
	}
	h.Subscribe("odds:empty", &recorder{}, nil) // no cached value: not listed
	got := h.Channels("odds:", 2)
	if len(got) != 2 || got[0].Name != "odds:a" || got[1].Name != "odds:b" {
		t.Fatalf("Channels = %+v", got)
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := newTestHub(nil)
			subs := make([]counter, n)
			for i := range subs {
				h.Subscribe("odds:bench", &subs[i], nil)
			}
			p := pub("odds:bench", 1, `{"odds":[2.1,3.4,3.9]}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.Publish(p)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

type counter struct{ n int }

func (c *counter) Deliver(*Update) { c.n++ }

// formRecorder asks each update for the forms in want and keeps the frames.
type formRecorder struct {
	want   []Form
	frames []*Frame
}

func (r *formRecorder) Deliver(u *Update) {
	for _, f := range r.want {
		r.frames = append(r.frames, u.Frame(f))
	}
}

// TestFormsEncodedOnce: a form is encoded only when some subscriber asks for
// it, once per update however many ask, and a form the encoder does not
// have is nil for everyone.
func TestFormsEncodedOnce(t *testing.T) {
	calls := map[Form]int{}
	h := newTestHub(func(c *Config) {
		c.Encoder = func(u *Update, f Form) *Frame {
			calls[f]++
			switch f {
			case 0:
				return &Frame{Bytes: u.Pub.Data, Pub: u.Pub}
			case 1: // built on form 0, as a compressed form would be
				return &Frame{Bytes: append([]byte("z:"), u.Frame(0).Bytes...), Pub: u.Pub, Form: 1}
			case 2: // a patch: only when there is a previous value
				if u.Prev == nil {
					return nil
				}
				return &Frame{Bytes: []byte(string(u.Prev.Data) + ">" + string(u.Pub.Data)), Pub: u.Pub, Form: 2}
			}
			return nil
		}
	})
	const ch = "odds:forms"
	plain, a, b := &formRecorder{want: []Form{0}}, &formRecorder{want: []Form{1, 2}}, &formRecorder{want: []Form{2, 1}}
	h.Subscribe(ch, plain, nil)
	h.Publish(pub(ch, 1, "a"))
	if calls[0] != 1 || calls[1]+calls[2] != 0 {
		t.Fatalf("one plain subscriber: encoder calls %v", calls)
	}
	h.Subscribe(ch, a, nil)
	h.Subscribe(ch, b, nil)
	h.Publish(pub(ch, 2, "b"))
	if calls[0] != 2 || calls[1] != 1 || calls[2] != 1 {
		t.Fatalf("three subscribers: encoder calls %v, want each form once", calls)
	}
	if a.frames[0] != b.frames[1] || a.frames[1] != b.frames[0] {
		t.Fatal("subscribers got different frames for the same form")
	}
	if got := string(a.frames[0].Bytes) + " " + string(a.frames[1].Bytes); got != "z:b a>b" {
		t.Fatalf("frames %q", got)
	}
	h.Unsubscribe(ch, plain)
	h.Unsubscribe(ch, a)
	h.Unsubscribe(ch, b)
	h.Publish(pub("odds:other", 1, "x")) // no subscribers: nothing encoded
	if calls[0] != 2 {
		t.Fatalf("encoded for a channel without subscribers: %v", calls)
	}
	h.Subscribe("odds:first", b, nil)
	h.Publish(pub("odds:first", 1, "x"))
	if b.frames[len(b.frames)-2] != nil {
		t.Fatal("a form the encoder lacks must be nil")
	}
}

// keeper is a Subscriber that keeps the Updates it is given, as a
// connection that is behind does, to encode them later.
type keeper struct{ updates []*Update }

func (k *keeper) Deliver(u *Update) { k.updates = append(k.updates, u) }

// TestFramesOfKeptUpdates: an Update kept past Deliver gives its forms to
// any goroutine; goroutines asking at once all get the same Frame, and a
// form the encoder lacks is nil for all of them (run with -race). Seq
// numbers a channel's updates one apart.
func TestFramesOfKeptUpdates(t *testing.T) {
	h := newTestHub(func(c *Config) {
		c.Encoder = func(u *Update, f Form) *Frame {
			if f == 2 {
				return nil
			}
			return &Frame{Bytes: append([]byte{byte('0' + f)}, u.Pub.Data...), Pub: u.Pub, Form: f}
		}
	})
	k := &keeper{}
	h.Subscribe("odds:kept", k, nil)
	for i := range 50 {
		h.Publish(pub("odds:kept", int64(i), "v"))
	}
	for i, u := range k.updates {
		if u.Seq != uint64(i+1) {
			t.Fatalf("update %d has Seq %d, want %d: a keeper counts what it skipped by Seq", i, u.Seq, i+1)
		}
	}
	const askers = 8
	got := make([][]*Frame, askers)
	var wg sync.WaitGroup
	for g := range askers {
		wg.Go(func() {
			for _, u := range k.updates {
				got[g] = append(got[g], u.Frame(Form(g%2)), u.Frame(2))
			}
		})
	}
	wg.Wait()
	for g := range askers {
		for i, fr := range got[g] {
			if want := got[g%2][i]; fr != want {
				t.Fatalf("asker %d, frame %d: %p, asker %d got %p", g, i, fr, g%2, want)
			}
			if (i%2 == 1) != (fr == nil) {
				t.Fatalf("asker %d, frame %d: %v", g, i, fr)
			}
		}
	}
}

// TestChannelIDs: every channel gets its own non-zero id, the same for all
// its subscribers and for its updates while it has subscribers.
func TestChannelIDs(t *testing.T) {
	var seen []uint32
	var got uint32
	h := newTestHub(func(c *Config) {
		c.Encoder = func(u *Update, f Form) *Frame {
			got = u.ChannelID
			return &Frame{Pub: u.Pub}
		}
	})
	ids := map[string]uint32{}
	for _, ch := range []string{"odds:a", "odds:b", "odds:a", "odds:c"} {
		err := h.Subscribe(ch, &formRecorder{want: []Form{0}}, func(st *State) { seen = append(seen, st.ID) })
		if err != nil {
			t.Fatal(err)
		}
		id := seen[len(seen)-1]
		if id == 0 || (ids[ch] != 0 && ids[ch] != id) {
			t.Fatalf("%s: id %d, had %d", ch, id, ids[ch])
		}
		ids[ch] = id
	}
	if len(ids) != 3 || ids["odds:a"] == ids["odds:b"] || ids["odds:b"] == ids["odds:c"] || ids["odds:a"] == ids["odds:c"] {
		t.Fatalf("ids %v", ids)
	}
	h.Publish(pub("odds:b", 1, "{}"))
	if got != ids["odds:b"] {
		t.Fatalf("update carries channel id %d, want %d", got, ids["odds:b"])
	}
}

// TestCapCountsCachedChannelsOnly: subscriptions to channels that never get
// a value must not push cached channels out, and such channels vanish when
// their last subscriber leaves.
func TestCapCountsCachedChannelsOnly(t *testing.T) {
	h := newTestHub(func(c *Config) { c.MaxChannels = 3 })
	for i := 0; i < 3; i++ {
		h.Publish(pub(fmt.Sprintf("odds:real:%d", i), 1, "{}"))
	}
	r := &recorder{}
	for i := 0; i < 50; i++ {
		h.Subscribe(fmt.Sprintf("odds:bogus:%d", i), r, nil)
	}
	h.Sweep()
	if st := h.Stats(); st.CachedChannels != 3 || st.EvictedCap != 0 {
		t.Fatalf("stats %+v: cached channels evicted by bogus subscriptions", st)
	}
	for i := 0; i < 50; i++ {
		h.Unsubscribe(fmt.Sprintf("odds:bogus:%d", i), r)
	}
	if st := h.Stats(); st.Channels != 3 {
		t.Fatalf("empty channels kept: %+v", st)
	}
}

// TestHistory: a channel keeps its latest HistorySize publications,
// published or appended (conflated), in offset order; Since answers what a
// client holding an offset missed, and says when the history no longer
// reaches back that far or belongs to another stream.
func TestHistory(t *testing.T) {
	h := newTestHub(func(c *Config) { c.HistorySize = 3 })
	pub := func(off int64, epoch string) *Publication {
		return &Publication{Channel: "odds:a", Data: []byte(`{}`), Pos: Position{Offset: off}, Epoch: epoch}
	}
	offsets := func(ps []*Publication) (o []int64) {
		for _, p := range ps {
			o = append(o, p.Pos.Offset)
		}
		return o
	}
	if st := h.History("odds:a"); len(st.History) != 0 || st.Dropped != -1 {
		t.Fatalf("unknown channel: %+v", st)
	}
	h.Publish(pub(10, "e"))
	h.Append(pub(12, "e")) // superseded by 15 in the same batch
	h.Publish(pub(15, "e"))
	tests := []struct {
		name     string
		epoch    string
		since    int64
		want     []int64
		complete bool
	}{
		{"up to date", "e", 15, nil, true},
		{"missed two", "e", 10, []int64{12, 15}, true},
		{"between offsets", "e", 11, []int64{12, 15}, true},
		{"before the first known", "e", 9, nil, false},
		{"other epoch", "f", 10, nil, false},
	}
	check := func(st State) {
		for _, tt := range tests {
			got, complete := st.Since(tt.epoch, tt.since)
			if fmt.Sprint(offsets(got)) != fmt.Sprint(tt.want) || complete != tt.complete {
				t.Errorf("%s: Since(%s, %d) = %v, %v; want %v, %v", tt.name, tt.epoch, tt.since, offsets(got), complete, tt.want, tt.complete)
			}
		}
	}
	check(h.History("odds:a"))
	// Subscribe sees the same state under the channel's lock.
	h.Subscribe("odds:a", &formRecorder{want: []Form{0}}, func(st *State) { check(*st) })

	// Past HistorySize the oldest goes; since the dropped offset is still
	// complete, before it not.
	h.Publish(pub(20, "e"))
	st := h.History("odds:a")
	if fmt.Sprint(offsets(st.History)) != "[12 15 20]" || st.Dropped != 10 {
		t.Fatalf("after overflow: %v dropped %d", offsets(st.History), st.Dropped)
	}
	if got, ok := st.Since("e", 10); !ok || fmt.Sprint(offsets(got)) != "[12 15 20]" {
		t.Errorf("Since(e, 10) after overflow = %v, %v", offsets(got), ok)
	}
	if _, ok := st.Since("e", 9); ok {
		t.Error("Since(e, 9): complete, but offset 10 was dropped")
	}
	// A new stream starts the history afresh.
	h.Publish(pub(1, "f"))
	if st := h.History("odds:a"); fmt.Sprint(offsets(st.History)) != "[1]" || st.Dropped != -1 {
		t.Fatalf("after a new epoch: %v dropped %d", offsets(st.History), st.Dropped)
	}
}

func TestHistoryOff(t *testing.T) {
	h := newTestHub(nil)
	h.Publish(&Publication{Channel: "odds:a", Data: []byte(`{}`), Pos: Position{Offset: 1}, Epoch: "e"})
	if err := h.Append(&Publication{Channel: "odds:a", Data: []byte(`{}`), Pos: Position{Offset: 2}, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	if st := h.History("odds:a"); len(st.History) != 0 || st.Dropped != -1 || st.Last.Pos.Offset != 1 {
		t.Fatalf("history without HistorySize: %+v", st)
	}
}

// TestBusiestAndSubscribers: Busiest ranks cached channels by subscribers
// (ties by name) and leaves out channels no feed wrote to; Subscribers
// walks one channel's set.
func TestBusiestAndSubscribers(t *testing.T) {
	h := newTestHub(nil)
	subs := map[string]int{"odds:a": 3, "odds:b": 5, "odds:c": 3, "odds:d": 1, "odds:e": 0}
	for ch, n := range subs {
		h.Publish(pub(ch, 1, `{}`))
		for range n {
			h.Subscribe(ch, &recorder{}, nil)
		}
	}
	for range 9 { // many subscribers, never published: a client's name
		h.Subscribe("odds:made-up", &recorder{}, nil)
	}
	names := func(cs []ChannelInfo) (out []string) {
		for _, c := range cs {
			out = append(out, fmt.Sprintf("%s=%d", c.Name, c.Subscribers))
		}
		return out
	}
	for _, tt := range []struct {
		n    int
		want string
	}{
		{0, "[]"},
		{1, "[odds:b=5]"},
		{3, "[odds:b=5 odds:a=3 odds:c=3]"},
		{10, "[odds:b=5 odds:a=3 odds:c=3 odds:d=1]"},
	} {
		if got := fmt.Sprint(names(h.Busiest(tt.n))); got != tt.want {
			t.Errorf("Busiest(%d) = %s, want %s", tt.n, got, tt.want)
		}
	}
	seen := 0
	if n := h.Subscribers("odds:b", func(Subscriber) { seen++ }); n != 5 || seen != 5 {
		t.Errorf("Subscribers(odds:b) = %d, walked %d; want 5", n, seen)
	}
	if n := h.Subscribers("odds:none", func(Subscriber) { seen++ }); n != 0 {
		t.Errorf("Subscribers of an unknown channel = %d", n)
	}
}
