package sdkgo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestGoSDK runs the stock Go SDK, github.com/centrifugal/centrifuge-go, in
// both its encodings (JSON; Protobuf over the centrifuge-protobuf
// subprotocol), each with and without Fossil deltas, against an in-process
// relay reading an in-process kfake cluster. Each subtest has its own
// cluster and relay, and checks: connect with a token; the cached value
// first; live updates in order, byte-identical, offset = Kafka offset + 1;
// recovery after the TCP connection is dropped; history; the bet RPC, its
// retry, and its record in the bets topic.
func TestGoSDK(t *testing.T) {
	for _, tt := range []struct {
		name     string
		protobuf bool
		delta    bool
	}{
		{"json", false, false},
		{"json+delta", false, true},
		{"protobuf", true, false},
		{"protobuf+delta", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) { testGoSDK(t, tt.protobuf, tt.delta) })
	}
}

const (
	live      = 120 // live updates after subscribing
	missed    = 30  // produced while the client's socket is down
	afterward = 5   // live updates after the recovery
)

// sent is one record produced for the channel.
type sent struct {
	offset uint64 // protocol offset: Kafka offset + 1
	data   string
}

func testGoSDK(t *testing.T, protobuf, delta bool) {
	kafka := newKafka(t)
	brokers := kafka.ListenAddrs()
	r := startRelay(t, testConfig(brokers))
	prod := newProducer(t, brokers)
	name := strings.ReplaceAll(t.Name()[strings.LastIndex(t.Name(), "/")+1:], "+", "-")
	channel := "odds:football:epl:go-" + name + ":1x2"
	user := "gopher-" + name
	encoding := "json"
	if protobuf {
		encoding = "protobuf"
	}

	var records []sent
	produceSeq := func(seq int) {
		v := sdkValue(seq)
		records = append(records, sent{uint64(produce(t, prod, "odds", channel, v)) + 1, v})
	}

	// 1. A cached value before anyone subscribes.
	produceSeq(0)
	c0 := r.waitCached(t, channel, int64(records[0].offset-1))
	if string(c0.Data) != records[0].data || c0.Epoch == "" {
		t.Fatalf("GET /v1/channels: data %s epoch %q, want %s", c0.Data, c0.Epoch, records[0].data)
	}

	d := &cuttableDialer{}
	cfg := centrifuge.Config{
		Token:             userToken(t, user),
		Name:              "edgerelay-tests-go",
		NetDialContext:    d.DialContext,
		MinReconnectDelay: 20 * time.Millisecond,
		MaxReconnectDelay: 200 * time.Millisecond,
	}
	h := newHarness(t, r.url(), protobuf, cfg)
	subCfg := centrifuge.SubscriptionConfig{Recoverable: true}
	if delta {
		subCfg.Delta = centrifuge.DeltaTypeFossil
	}
	h.subscribe(channel, subCfg)

	if err := h.client.Connect(); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if ev := h.waitConnected(); ev.ClientID == "" {
		t.Errorf("connected event without a client id: %+v", ev)
	}
	if err := h.sub.Subscribe(); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	sub1 := h.waitSubscribed()
	if !sub1.Recoverable || sub1.StreamPosition == nil || sub1.StreamPosition.Epoch != c0.Epoch ||
		sub1.StreamPosition.Offset != records[0].offset || sub1.Recovered || sub1.WasRecovering {
		t.Fatalf("subscribed %s, want recoverable at epoch %s offset %d, not recovering", fmtSubscribed(sub1), c0.Epoch, records[0].offset)
	}
	epoch := sub1.StreamPosition.Epoch
	// The cached value is the first publication.
	h.expectPubs("cached value", records[:1])

	// 2. Live updates, in order, byte-identical, offset = Kafka offset + 1.
	for i := 1; i <= live; i++ {
		produceSeq(i)
	}
	h.expectPubs("live", records[1:])

	// 3. Delta: the relay sent patches (the SDK rebuilt every value above,
	// byte-identical); without delta it sent none.
	// Where the relay labels the series by encoding, only this encoding's
	// series count.
	_, metrics := r.get(t, "/metrics")
	const written = "edgerelay_publication_bytes_written_total"
	labels := []string{}
	if strings.Contains(grep(metrics, written), `encoding="`) {
		labels = append(labels, fmt.Sprintf("encoding=%q", encoding))
	}
	patched := metricSum(metrics, written, append(labels, `variant="delta_patch"`)...)
	if delta && patched <= 0 {
		t.Errorf("delta subscription, but no %s %v bytes:\n%s", written, append(labels, `variant="delta_patch"`), grep(metrics, written))
	}
	if !delta && patched > 0 {
		t.Errorf("no delta subscription, but %v delta_patch bytes:\n%s", patched, grep(metrics, written))
	}
	if full := metricSum(metrics, written, append(labels, `variant="full"`)...); !delta && full <= 0 {
		t.Errorf("no %s %v bytes:\n%s", written, append(labels, `variant="full"`), grep(metrics, written))
	}

	// 4. Recovery: drop the TCP connection under the SDK and refuse new
	// ones until the missed records are in the relay, then let it
	// reconnect; it must recover exactly the missed publications.
	d.cut()
	checkFor(t, waitFor, func() error {
		if n := d.refusedDials(); n == 0 {
			return fmt.Errorf("the SDK has not tried to reconnect yet (state %s, sub %s)", h.client.State(), h.sub.State())
		}
		return nil
	})
	from := len(records)
	for i := 0; i < missed; i++ {
		produceSeq(live + 1 + i)
	}
	r.waitCached(t, channel, int64(records[len(records)-1].offset-1))
	d.restore()
	sub2 := h.waitSubscribed()
	if !sub2.Recovered || !sub2.WasRecovering || sub2.StreamPosition == nil || sub2.StreamPosition.Epoch != epoch ||
		sub2.StreamPosition.Offset != records[len(records)-1].offset {
		t.Errorf("resubscribed %s, want recovered, was recovering, at epoch %s offset %d", fmtSubscribed(sub2), epoch, records[len(records)-1].offset)
	}
	h.expectPubs("recovered", records[from:])
	// Live again: the next publications are exactly the new records, so
	// nothing recovered came twice.
	from = len(records)
	for i := 0; i < afterward; i++ {
		produceSeq(live + missed + 1 + i)
	}
	h.expectPubs("live after recovery", records[from:])
	if n := d.dials(); n != 2 {
		t.Errorf("%d successful dials, want 2 (the first connect and one reconnect)", n)
	}

	// 5. History (history_size 200 holds every record of this channel).
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	last := records[len(records)-1].offset
	history := func(what string, want []sent, opts ...centrifuge.HistoryOption) {
		t.Helper()
		res, err := h.sub.History(ctx, opts...)
		if err != nil {
			t.Errorf("history %s: %v", what, err)
			return
		}
		if res.Epoch != epoch || res.Offset != last {
			t.Errorf("history %s: position %s/%d, want %s/%d", what, res.Epoch, res.Offset, epoch, last)
		}
		if err := samePubs(res.Publications, want); err != nil {
			t.Errorf("history %s: %v", what, err)
		}
	}
	history("all", records, centrifuge.WithHistoryLimit(-1))
	history("limit 10", records[:10], centrifuge.WithHistoryLimit(10))
	history("position only", nil)
	history("reverse limit 5", reversed(records[len(records)-5:]), centrifuge.WithHistoryLimit(5), centrifuge.WithHistoryReverse(true))
	history("since", records[100:], centrifuge.WithHistoryLimit(-1),
		centrifuge.WithHistorySince(&centrifuge.StreamPosition{Epoch: epoch, Offset: records[99].offset}))
	_, err := h.sub.History(ctx, centrifuge.WithHistoryLimit(-1),
		centrifuge.WithHistorySince(&centrifuge.StreamPosition{Epoch: "not-" + epoch, Offset: records[99].offset}))
	if e := new(centrifuge.Error); !errors.As(err, &e) || e.Code != 112 {
		t.Errorf("history since another epoch: error %v, want code 112", err)
	}

	// 6. The bet RPC: answered with the Kafka position; a retry with the
	// same bet id gets the identical answer; the record is in Kafka once.
	bet := func(id string) []byte {
		return []byte(fmt.Sprintf(`{"bet_id":%q,"channel":%q,"selection":"home","odds":2.05,"stake":5,"note":"opaque to the relay"}`, id, channel))
	}
	type betReply struct {
		BetID      string `json:"bet_id"`
		Topic      string `json:"topic"`
		Partition  int32  `json:"partition"`
		Offset     int64  `json:"offset"`
		ReceivedAt string `json:"received_at"`
	}
	placeBet := func(id string) (betReply, []byte) {
		t.Helper()
		res, err := h.client.RPC(ctx, "bet", bet(id))
		if err != nil {
			t.Fatalf("rpc bet %s: %v", id, err)
		}
		var rep betReply
		if err := json.Unmarshal(res.Data, &rep); err != nil || rep.BetID != id || rep.Topic != "bets" || rep.ReceivedAt == "" {
			t.Fatalf("rpc bet %s: reply %q (%v), want bet_id, topic bets, partition, offset, received_at", id, res.Data, err)
		}
		return rep, res.Data
	}
	id1, id2 := "go-"+name+"-1", "go-"+name+"-2"
	rep1, raw1 := placeBet(id1)
	retry, rawRetry := placeBet(id1)
	if retry != rep1 {
		t.Errorf("retry of %s answered %+v, want the first answer %+v", id1, retry, rep1)
	} else if !bytes.Equal(raw1, rawRetry) {
		t.Errorf("retry of %s answered %s, first answer %s: not identical", id1, rawRetry, raw1)
	}
	rep2, _ := placeBet(id2)
	// Both bets are keyed by the user: one partition, in order. Reading up
	// to the second bet shows any record the retry might have added.
	recs := consumeUntil(t, brokers, "bets", func(r *kgo.Record) bool { return header(r, "bet-id") == id2 })
	var mine []*kgo.Record
	for _, rec := range recs {
		if header(rec, "user") == user {
			mine = append(mine, rec)
		}
	}
	if len(mine) != 2 {
		t.Fatalf("%d records of %s in the bets topic, want 2 (the retry adds none): %s", len(mine), user, fmtRecords(mine))
	}
	for i, want := range []betReply{rep1, rep2} {
		rec := mine[i]
		var v struct {
			User     string          `json:"user"`
			Bet      json.RawMessage `json:"bet"`
			OddsSeen *struct {
				Channel string `json:"channel"`
			} `json:"odds_seen"`
		}
		if err := json.Unmarshal(rec.Value, &v); err != nil {
			t.Fatalf("bet record %d: %v: %s", i, err, rec.Value)
		}
		if rec.Partition != want.Partition || rec.Offset != want.Offset || header(rec, "bet-id") != want.BetID ||
			string(rec.Key) != user || v.User != user || header(rec, "idempotency-key") != user+"/"+want.BetID ||
			string(v.Bet) != string(bet(want.BetID)) || v.OddsSeen == nil || v.OddsSeen.Channel != channel {
			t.Errorf("bet record %d at %d/%d key %q headers %v value %s; want it at %d/%d for bet %s", i, rec.Partition, rec.Offset,
				rec.Key, rec.Headers, rec.Value, want.Partition, want.Offset, want.BetID)
		}
	}

	if errs := h.errors(); len(errs) > 0 {
		t.Logf("SDK error events (the dropped connection causes some): %s", strings.Join(errs, "; "))
	}
}

func reversed(s []sent) []sent {
	out := make([]sent, len(s))
	for i, r := range s {
		out[len(s)-1-i] = r
	}
	return out
}

func samePubs(got []centrifuge.Publication, want []sent) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d publications (offsets %v), want %d (offsets %v)", len(got), pubOffsets(got), len(want), sentOffsets(want))
	}
	for i := range got {
		if got[i].Offset != want[i].offset || string(got[i].Data) != want[i].data {
			return fmt.Errorf("publication %d: offset %d data %q, want offset %d data %q", i, got[i].Offset, got[i].Data, want[i].offset, want[i].data)
		}
	}
	return nil
}

func pubOffsets(p []centrifuge.Publication) []uint64 {
	out := make([]uint64, len(p))
	for i := range p {
		out[i] = p[i].Offset
	}
	return out
}

func sentOffsets(s []sent) []uint64 {
	out := make([]uint64, len(s))
	for i := range s {
		out[i] = s[i].offset
	}
	return out
}

func fmtSubscribed(ev centrifuge.SubscribedEvent) string {
	pos := "none"
	if ev.StreamPosition != nil {
		pos = fmt.Sprintf("%s/%d", ev.StreamPosition.Epoch, ev.StreamPosition.Offset)
	}
	return fmt.Sprintf("{recoverable:%v positioned:%v recovered:%v was_recovering:%v position:%s}", ev.Recoverable, ev.Positioned, ev.Recovered, ev.WasRecovering, pos)
}

// harness wraps one SDK client with one subscription; the SDK's callbacks
// feed channels the test reads with a deadline.
type harness struct {
	t          *testing.T
	client     *centrifuge.Client
	sub        *centrifuge.Subscription
	connected  chan centrifuge.ConnectedEvent
	subscribed chan centrifuge.SubscribedEvent
	pubs       chan centrifuge.Publication

	mu     sync.Mutex
	log    []string // connection and subscription state changes, for failure messages
	errLog []string
}

func newHarness(t *testing.T, url string, protobuf bool, cfg centrifuge.Config) *harness {
	h := &harness{
		t:          t,
		connected:  make(chan centrifuge.ConnectedEvent, 16),
		subscribed: make(chan centrifuge.SubscribedEvent, 16),
		pubs:       make(chan centrifuge.Publication, 1000),
	}
	if protobuf {
		h.client = centrifuge.NewProtobufClient(url, cfg)
	} else {
		h.client = centrifuge.NewJsonClient(url, cfg)
	}
	t.Cleanup(h.client.Close)
	h.client.OnConnecting(func(e centrifuge.ConnectingEvent) { h.note("connecting %d %q", e.Code, e.Reason) })
	h.client.OnConnected(func(e centrifuge.ConnectedEvent) { h.note("connected"); h.connected <- e })
	h.client.OnDisconnected(func(e centrifuge.DisconnectedEvent) { h.note("disconnected %d %q", e.Code, e.Reason) })
	h.client.OnError(func(e centrifuge.ErrorEvent) { h.noteErr("client error: %v", e.Error) })
	return h
}

func (h *harness) subscribe(channel string, cfg centrifuge.SubscriptionConfig) {
	sub, err := h.client.NewSubscription(channel, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.sub = sub
	sub.OnSubscribing(func(e centrifuge.SubscribingEvent) { h.note("subscribing %d %q", e.Code, e.Reason) })
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) { h.note("subscribed %s", fmtSubscribed(e)); h.subscribed <- e })
	sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) { h.note("unsubscribed %d %q", e.Code, e.Reason) })
	sub.OnError(func(e centrifuge.SubscriptionErrorEvent) { h.noteErr("subscription error: %v", e.Error) })
	sub.OnPublication(func(e centrifuge.PublicationEvent) {
		p := e.Publication
		p.Data = bytes.Clone(p.Data)
		h.pubs <- p
	})
}

func (h *harness) note(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.log = append(h.log, fmt.Sprintf(format, args...))
}

func (h *harness) noteErr(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := fmt.Sprintf(format, args...)
	h.log = append(h.log, s)
	h.errLog = append(h.errLog, s)
}

func (h *harness) errors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.errLog...)
}

// events returns the SDK's event log (the last 20 entries).
func (h *harness) events() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.log
	if len(l) > 20 {
		l = l[len(l)-20:]
	}
	return strings.Join(l, "\n\t")
}

func (h *harness) waitConnected() centrifuge.ConnectedEvent {
	h.t.Helper()
	select {
	case ev := <-h.connected:
		return ev
	case <-time.After(waitFor):
		h.t.Fatalf("not connected after %v; SDK events:\n\t%s", waitFor, h.events())
	}
	panic("unreachable")
}

func (h *harness) waitSubscribed() centrifuge.SubscribedEvent {
	h.t.Helper()
	select {
	case ev := <-h.subscribed:
		return ev
	case <-time.After(waitFor):
		h.t.Fatalf("not subscribed after %v; SDK events:\n\t%s", waitFor, h.events())
	}
	panic("unreachable")
}

// expectPubs reads len(want) publications and checks each: in order,
// offset = Kafka offset + 1, data byte-identical to the record's value.
func (h *harness) expectPubs(what string, want []sent) {
	h.t.Helper()
	timeout := time.After(waitFor)
	for i, w := range want {
		select {
		case p := <-h.pubs:
			if p.Offset != w.offset || string(p.Data) != w.data {
				h.t.Fatalf("%s publication %d of %d: offset %d data %q; want offset %d data %q", what, i+1, len(want), p.Offset, p.Data, w.offset, w.data)
			}
		case <-timeout:
			h.t.Fatalf("%s: %d of %d publications after %v (next wanted at offset %d); SDK events:\n\t%s", what, i, len(want), waitFor, w.offset, h.events())
		}
	}
}

// cuttableDialer is the SDK's NetDialContext: it keeps the connections it
// made so that the test can close them under the SDK (a dropped socket),
// and refuses new ones while cut (the network is down).
type cuttableDialer struct {
	mu      sync.Mutex
	conns   []net.Conn
	down    bool
	made    int
	refused int
}

func (d *cuttableDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	if d.down {
		d.refused++
		d.mu.Unlock()
		return nil, errors.New("test: network down")
	}
	d.mu.Unlock()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		c.Close()
		d.refused++
		return nil, errors.New("test: network down")
	}
	d.made++
	d.conns = append(d.conns, c)
	return c, nil
}

// cut closes every connection made so far and refuses new ones.
func (d *cuttableDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = true
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func (d *cuttableDialer) restore() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = false
}

func (d *cuttableDialer) refusedDials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.refused
}

func (d *cuttableDialer) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.made
}

// consumeUntil reads topic from the start, every partition, until stop
// returns true for a record, and returns the records read.
func consumeUntil(t testing.TB, brokers []string, topic string, stop func(*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var recs []*kgo.Record
	for {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("topic %s: the record looked for did not come after %v; read %s", topic, waitFor, fmtRecords(recs))
		}
		for _, e := range f.Errors() {
			t.Logf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		done := false
		f.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			done = done || stop(r)
		})
		if done {
			return recs
		}
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func fmtRecords(recs []*kgo.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "\n\t%d/%d key %q bet-id %q", r.Partition, r.Offset, r.Key, header(r, "bet-id"))
	}
	return b.String()
}
