package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/delta"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// TestCeilingFrames: edgebench ceiling writes the relay's own frames. A
// client subscribed to two channels in one message gets the two
// subscribe replies, then, for records of either channel (a value short
// enough for a 2-byte frame header and one that needs 4), exactly the
// bytes relay/protocol and relay/engine frame for that publication, with
// the record's offset + 1; a record of a third channel does not reach it.
// A second client subscribed to c:a with fossil delta gets the relay's
// delta frames: the first value whole (as a string), the next a patch
// against it that rebuilds the value. A recovering subscribe is refused
// with close 3501, a message over 64 KiB with close 1009.
func TestCeilingFrames(t *testing.T) {
	kafka := newKafka(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var log strings.Builder
	done := make(chan error, 1)
	go func() { done <- RunCeiling(ctx, CeilingConfig{Brokers: kafka.ListenAddrs(), Topic: "odds"}, ln, &log) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if !strings.Contains(log.String(), "ceiling: 5 deliveries,") {
			t.Errorf("ceiling log: %s", log.String())
		}
	}()
	url := "ws://" + ln.Addr().String() + "/connection/websocket"

	conn, _, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := wsutil.WriteClientText(conn, []byte(`{"id":1,"connect":{"name":"t"}}`+"\n"+`{"id":2,"subscribe":{"channel":"c:a"}}`+"\n"+
		`{"id":3,"subscribe":{"channel":"c:b"}}`)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	reply, err := ws.ReadFrame(br)
	want := `{"id":1,"connect":{"client":"ceiling","version":"ceiling"}}` + "\n" + `{"id":2,"subscribe":{}}` + "\n" + `{"id":3,"subscribe":{}}`
	if err != nil || reply.Header.OpCode != ws.OpText || string(reply.Payload) != want {
		t.Fatalf("reply %v %q, %v; want %q", reply.Header.OpCode, reply.Payload, err, want)
	}
	dconn, _, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer dconn.Close()
	dconn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := wsutil.WriteClientText(dconn, []byte(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"c:a","delta":"fossil"}}`)); err != nil {
		t.Fatal(err)
	}
	dbr := bufio.NewReader(dconn)
	reply, err = ws.ReadFrame(dbr)
	want = `{"id":1,"connect":{"client":"ceiling","version":"ceiling"}}` + "\n" + `{"id":2,"subscribe":{"delta":true}}`
	if err != nil || string(reply.Payload) != want {
		t.Fatalf("delta subscribe reply %q, %v; want %q", reply.Payload, err, want)
	}
	var base []byte // the delta client's value of c:a

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	long := `{"seq":2,"t":1,"pad":"` + strings.Repeat("o", 300) + `"}`
	// c:a: a long value, then one a patch to it is much smaller than.
	for _, rec := range []struct{ ch, value string }{{"c:other", `{"seq":9}`}, {"c:a", long}, {"c:b", `{"seq":1,"t":1}`}, {"c:a", strings.Replace(long, `"seq":2`, `"seq":3`, 1)}} {
		r := &kgo.Record{Topic: "odds", Key: []byte(rec.ch), Value: []byte(rec.value), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(rec.ch)}}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if rec.ch == "c:other" {
			continue
		}
		b := make([]byte, engine.MaxHeader)
		b = protocol.JSON.AppendPublicationPush(b, rec.ch, 0, r.Value, uint64(r.Offset)+1)
		want := engine.FinishFrame(b, engine.HeadText)
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame for %s offset %d:\n%q, %v\nwant the relay's\n%q", rec.ch, r.Offset, got, err, want)
		}
		if rec.ch != "c:a" {
			continue
		}
		payload := r.Value
		if base != nil {
			payload = delta.Encode(nil, base, r.Value)
			if len(payload) >= len(r.Value) {
				t.Fatalf("the test's patch (%d B) is not smaller than its value (%d B)", len(payload), len(r.Value))
			}
		}
		b = protocol.JSON.AppendDeltaPush(make([]byte, engine.MaxHeader), rec.ch, 0, payload, uint64(r.Offset)+1, base != nil)
		want = engine.FinishFrame(b, engine.HeadText)
		got = make([]byte, len(want))
		if _, err := io.ReadFull(dbr, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("delta frame for %s offset %d:\n%q, %v\nwant the relay's\n%q", rec.ch, r.Offset, got, err, want)
		}
		if base != nil {
			if v, err := delta.Decode(nil, base, payload); err != nil || !bytes.Equal(v, r.Value) {
				t.Fatalf("the patch rebuilds %q, %v; want %q", v, err, r.Value)
			}
		}
		base = r.Value
	}

	for _, tt := range []struct {
		name string
		msg  string
		code ws.StatusCode
	}{
		{"recovering subscribe", `{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"c:a","recover":true}}`, ceilingBadRequest},
		{"other delta", `{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"c:a","delta":"bsdiff"}}`, ceilingBadRequest},
		{"message over 64 KiB", `{"id":1,"connect":{"name":"` + strings.Repeat("x", maxCeilingMessage) + `"}}`, ceilingTooBig},
	} {
		other, _, _, err := ws.Dial(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		other.SetDeadline(time.Now().Add(20 * time.Second))
		wsutil.WriteClientText(other, []byte(tt.msg))
		f, err := ws.ReadFrame(other)
		if code, _ := ws.ParseCloseFrameData(f.Payload); err != nil || f.Header.OpCode != ws.OpClose || code != tt.code {
			t.Fatalf("%s: frame %v %q, %v; want close %d", tt.name, f.Header.OpCode, f.Payload, err, tt.code)
		}
	}
}

// TestCeilingDeltaBases: the ceiling starts as the relay does, with the
// topic's last records read, so a delta subscriber's subscribe reply
// carries the channel's latest value and its first push is a patch; a
// subscriber that joins between records gets the value it joined at; a
// patch that is not smaller, or not valid UTF-8, is replaced by the whole
// value (the relay's rule). (From a review: it catches a ceiling that
// ignores a subscriber's base, the UTF-8 check or the size rule.)
func TestCeilingDeltaBases(t *testing.T) {
	kafka := newKafka(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(v string) *kgo.Record {
		r := &kgo.Record{Topic: "odds", Key: []byte("c:a"), Value: []byte(v)}
		if err := cl.ProduceSync(t.Context(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	pad := strings.Repeat("o", 300)
	r0 := produce(`{"seq":0,"pad":"` + pad + `abé zz"}`) // before the ceiling starts
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var log bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- RunCeiling(ctx, CeilingConfig{Brokers: kafka.ListenAddrs(), Topic: "odds"}, ln, &log) }()
	defer func() { cancel(); <-done }()
	url := "ws://" + ln.Addr().String() + "/connection/websocket"
	dial := func() (*bufio.Reader, string) {
		conn, _, _, err := ws.Dial(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if err := wsutil.WriteClientText(conn, []byte(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"c:a","delta":"fossil"}}`)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		f, err := ws.ReadFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		return br, string(f.Payload)
	}
	// wantReply is the subscribe reply of a client joining at r's value.
	wantReply := func(r *kgo.Record) string {
		b := fmt.Appendf(nil, `{"id":1,"connect":{"client":"ceiling","version":"ceiling"}}`+"\n"+`{"id":2,"subscribe":{"delta":true,"publications":[{"data":`)
		b = protocol.AppendJSONString(b, r.Value)
		return string(fmt.Appendf(b, `,"offset":%d}]}}`, r.Offset+1))
	}
	// expect reads one frame from br: what the relay sends a client holding base.
	expect := func(name string, br *bufio.Reader, base []byte, r *kgo.Record) {
		t.Helper()
		payload, isPatch := r.Value, false
		if base != nil {
			if p := delta.Encode(nil, base, r.Value); len(p) < len(r.Value) && utf8.Valid(p) {
				payload, isPatch = p, true
			}
		}
		b := protocol.JSON.AppendDeltaPush(make([]byte, engine.MaxHeader), "c:a", 0, payload, uint64(r.Offset)+1, isPatch)
		want := b[engine.MaxHeader:]
		f, err := ws.ReadFrame(br)
		if err != nil || f.Header.OpCode != ws.OpText || !bytes.Equal(f.Payload, want) {
			t.Fatalf("%s, offset %d:\n%q, %v\nwant\n%q", name, r.Offset, f.Payload, err, want)
		}
	}
	v1 := `{"seq":1,"pad":"` + pad + `abé zz"}`
	v2 := `{"seq":2,"pad":"` + pad + `abé zz"}`
	v3 := `{"seq":2,"pad":"` + pad + `abè zz"}` // its patch to v2 splits é: not UTF-8
	v4 := `{"seq":4}`                           // its patch to v3 is not smaller
	v5 := `{"seq":5}`
	if p := delta.Encode(nil, []byte(v2), []byte(v3)); len(p) >= len(v3) || utf8.Valid(p) {
		t.Fatalf("v2 -> v3 must be a small, invalid UTF-8 patch: %q", p)
	}

	a, reply := dial()
	if want := wantReply(r0); reply != want {
		t.Fatalf("subscribe reply %q, want the latest value in it: %q", reply, want)
	}
	r1 := produce(v1)
	expect("first push, a patch", a, r0.Value, r1)
	b, reply := dial() // joins between records
	if want := wantReply(r1); reply != want {
		t.Fatalf("late subscribe reply %q, want %q", reply, want)
	}
	r2 := produce(v2)
	expect("patch", a, r1.Value, r2)
	expect("late subscriber's patch", b, r1.Value, r2)
	r3 := produce(v3)
	expect("non-UTF-8 patch", a, r2.Value, r3)
	expect("non-UTF-8 patch", b, r2.Value, r3)
	r4 := produce(v4)
	expect("patch not smaller", a, r3.Value, r4)
	r5 := produce(v5)
	expect("after a whole value", a, r4.Value, r5)
}
