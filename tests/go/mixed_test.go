package sdkgo_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/edgerelay/edgerelay/delta"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// TestMixedEncodings subscribes six stock Go SDK clients to ONE channel at
// once — NewJsonClient and NewProtobufClient, each plain, with Fossil
// deltas, and plain with permessage-deflate (EnableCompression) — so that
// one update is encoded in every form side by side: JSON full, JSON delta
// patch, Protobuf full, Protobuf delta patch, and the deflated fulls. The
// SDK always subscribes with flag 1 (channel compaction); pushes carry the
// channel's id where the codec allows it (JSON) and its name otherwise
// (Protobuf, docs/protocol.md). It checks:
//
//  1. every subscriber gets the cached value, then every one of the
//     updates, in order, byte-identical to the Kafka record, offset =
//     Kafka offset + 1; all end with the same final value;
//  2. edgerelay_publication_bytes_written_total counted every form in use
//     (by encoding, variant and compression), at least the bytes of the
//     frames the relay's codecs make for these updates; the delta patches
//     carried the channel's id where the codec uses ids; Protobuf patches
//     took fewer bytes than the same JSON patches, and Protobuf fulls
//     fewer than JSON fulls.
func TestMixedEncodings(t *testing.T) {
	const updates = 120

	kafka := newKafka(t)
	brokers := kafka.ListenAddrs()
	r := startRelay(t, testConfig(brokers))
	prod := newProducer(t, brokers)
	const channel = "odds:football:epl:go-mixed:1x2"

	var records []sent
	produceSeq := func(seq int) {
		v := sdkValue(seq)
		records = append(records, sent{uint64(produce(t, prod, "odds", channel, v)) + 1, v})
	}
	produceSeq(0)
	c0 := r.waitCached(t, channel, int64(records[0].offset-1))

	clients := []struct {
		name                     string
		protobuf, delta, deflate bool
		h                        *harness
	}{
		{name: "json"},
		{name: "json+delta", delta: true},
		{name: "protobuf", protobuf: true},
		{name: "protobuf+delta", protobuf: true, delta: true},
		{name: "json+deflate", deflate: true},
		{name: "protobuf+deflate", protobuf: true, deflate: true},
	}
	for i := range clients {
		c := &clients[i]
		c.h = newHarness(t, r.url(), c.protobuf, centrifuge.Config{
			Token:             userToken(t, fmt.Sprintf("gopher-mixed-%d", i)),
			Name:              "edgerelay-tests-go-mixed",
			EnableCompression: c.deflate,
		})
		subCfg := centrifuge.SubscriptionConfig{Recoverable: true}
		if c.delta {
			subCfg.Delta = centrifuge.DeltaTypeFossil
		}
		c.h.subscribe(channel, subCfg)
		if err := c.h.client.Connect(); err != nil {
			t.Fatalf("%s: Connect: %v", c.name, err)
		}
	}
	for _, c := range clients {
		c.h.waitConnected()
		if err := c.h.sub.Subscribe(); err != nil {
			t.Fatalf("%s: Subscribe: %v", c.name, err)
		}
	}
	for _, c := range clients {
		ev := c.h.waitSubscribed()
		if !ev.Recoverable || ev.StreamPosition == nil || ev.StreamPosition.Epoch != c0.Epoch || ev.StreamPosition.Offset != records[0].offset {
			t.Fatalf("%s: subscribed %s, want recoverable at epoch %s offset %d", c.name, fmtSubscribed(ev), c0.Epoch, records[0].offset)
		}
		// The cached value is the first publication.
		if err := samePubs(collectPubs(t, c.name, c.h, 1), records[:1]); err != nil {
			t.Fatalf("%s: cached value: %v", c.name, err)
		}
	}

	// The SDKs really speak the two encodings: three connections each.
	_, metrics := r.get(t, "/metrics")
	for _, enc := range []string{"json", "protobuf"} {
		if n := metricSum(metrics, "edgerelay_connections_accepted_total", fmt.Sprintf("encoding=%q", enc)); n != 3 {
			t.Errorf("%v %s connections accepted, want 3:\n%s", n, enc, grep(metrics, "edgerelay_connections_accepted_total"))
		}
	}

	// 1. Every update to every subscriber, in order, byte-identical.
	for i := 1; i <= updates; i++ {
		produceSeq(i)
	}
	final := make(map[string]string)
	for _, c := range clients {
		got := collectPubs(t, c.name, c.h, updates)
		if err := samePubs(got, records[1:]); err != nil {
			t.Errorf("%s: live: %v", c.name, err)
		}
		final[c.name] = string(got[len(got)-1].Data)
		if n := len(c.h.pubs); n > 0 {
			t.Errorf("%s: %d publications more than produced", c.name, n)
		}
		if errs := c.h.errors(); len(errs) > 0 {
			t.Errorf("%s: SDK errors: %s", c.name, strings.Join(errs, "; "))
		}
	}
	for name, v := range final {
		if v != records[len(records)-1].data {
			t.Errorf("%s ends with %q, want the last record %q", name, v, records[len(records)-1].data)
		}
	}

	// 2. The bytes of each form. The relay's codecs give each frame's
	// size; with channel compaction and the smallest channel id (1) that
	// is a lower bound of what the relay counts (it counts a frame once
	// written, so the counters may trail the clients' reads for a moment:
	// poll until they reach the bound).
	//
	// Whether pushes carry the id (the SDK always subscribes with flag 1)
	// is the codec's to say (docs/protocol.md, "Channel compaction").
	compactJSON, compactPB := protocol.JSON.ChannelIDs(), protocol.Protobuf.ChannelIDs()
	want := expectedFormBytes(channel, records, compactJSON, compactPB)
	if want.patched < updates/2 {
		t.Fatalf("only %d of %d updates have a Fossil patch smaller than the value: sdkValue no longer suits this test", want.patched, updates)
	}
	const written = "edgerelay_publication_bytes_written_total"
	get := func(body, encoding, variant, compression string) float64 {
		return metricSum(body, written, fmt.Sprintf("encoding=%q", encoding), fmt.Sprintf("variant=%q", variant), fmt.Sprintf("compression=%q", compression))
	}
	type series struct {
		encoding, variant, compression string
		min                            int // > 0: at least this; 0: present and > 0
	}
	inUse := []series{
		{"json", "full", "none", want.json.full()},
		{"json", "delta_patch", "none", want.json.patch()},
		{"protobuf", "full", "none", want.pb.full()},
		{"protobuf", "delta_patch", "none", want.pb.patch()},
		{"json", "full", "deflate", 0},
		{"protobuf", "full", "deflate", 0},
	}
	checkFor(t, waitFor, func() error {
		_, metrics = r.get(t, "/metrics")
		for _, s := range inUse {
			v := get(metrics, s.encoding, s.variant, s.compression)
			if v <= 0 || v < float64(s.min) {
				return fmt.Errorf("%s{encoding=%q,variant=%q,compression=%q} = %v, want > 0 and >= %d (the frames of %d updates; patches: json %+v, protobuf %+v):\n%s",
					written, s.encoding, s.variant, s.compression, v, s.min, updates, want.json, want.pb, grep(metrics, written))
			}
		}
		return nil
	})
	jsonFull, jsonDeltaFull, jsonPatch := get(metrics, "json", "full", "none"), get(metrics, "json", "delta_full", "none"), get(metrics, "json", "delta_patch", "none")
	pbFull, pbDeltaFull, pbPatch := get(metrics, "protobuf", "full", "none"), get(metrics, "protobuf", "delta_full", "none"), get(metrics, "protobuf", "delta_patch", "none")
	t.Logf("%d updates, %d patched; channel ids in pushes: json %v, protobuf %v; publication bytes written (expected): "+
		"json full %v (%d), delta_full %v (%d), delta_patch %v (%d); protobuf full %v (%d), delta_patch %v (%d); "+
		"deflated: json full %v, protobuf full %v",
		updates, want.patched, compactJSON, compactPB,
		jsonFull, want.json.full(), jsonDeltaFull, want.json.deltaFull(), jsonPatch, want.json.patch(),
		pbFull, want.pb.full(), pbPatch, want.pb.patch(), get(metrics, "json", "full", "deflate"), get(metrics, "protobuf", "full", "deflate"))

	// Only the delta subscriber of each encoding gets patches, so these
	// series hold exactly its pushes: with compaction they are below what
	// pushes naming the channel would take (without, the poll above
	// required the named pushes' bytes).
	if compactJSON && jsonPatch >= float64(want.json.patchBy[named]) {
		t.Errorf("json delta_patch bytes %v, not below the %d of pushes naming the channel: no channel compaction?", jsonPatch, want.json.patchBy[named])
	}
	if compactPB && pbPatch >= float64(want.pb.patchBy[named]) {
		t.Errorf("protobuf delta_patch bytes %v, not below the %d of pushes naming the channel: no channel compaction?", pbPatch, want.pb.patchBy[named])
	}
	// Updates without a smaller patch go in full to delta subscribers:
	// JSON as delta_full (a JSON string), Protobuf as the plain frame.
	if want.json.deltaFull() == 0 && jsonDeltaFull > 0 {
		t.Errorf("json delta_full bytes %v: every update had a patch, and no conflation could happen", jsonDeltaFull)
	}
	if pbDeltaFull > 0 {
		t.Errorf("protobuf delta_full bytes %v: in Protobuf a delta subscription's full payload is the plain frame (variant full)", pbDeltaFull)
	}

	// The same patches and the same values: Protobuf carries them as raw
	// bytes, without JSON string escaping or the JSON envelope, so it
	// takes fewer bytes — for the same channel addressing. When one
	// encoding names the channel and the other sends its id, the
	// comparison is made as if both named it (each series less the bytes
	// of its addressing, plus those of a name), and the raw comparison is
	// logged: it then depends on the channel name's length.
	jsonFulls, pbFulls := jsonFull+jsonDeltaFull, pbFull
	if compactJSON != compactPB {
		t.Logf("on the wire, with pushes carrying ids in json %v and protobuf %v: protobuf full %v vs json full+delta_full %v bytes, delta_patch %v vs %v",
			compactJSON, compactPB, pbFulls, jsonFulls, pbPatch, jsonPatch)
		asNamed := func(v float64, e encodingBytes, by func(encodingBytes) [2]int) float64 {
			b := by(e)
			return v - float64(b[e.addressing()]) + float64(b[named])
		}
		fullBy := func(e encodingBytes) [2]int { return e.fullBy }
		jsonFulls = asNamed(jsonFull, want.json, fullBy) + asNamed(jsonDeltaFull, want.json, func(e encodingBytes) [2]int { return e.deltaFullBy })
		pbFulls = asNamed(pbFull, want.pb, fullBy)
		patchBy := func(e encodingBytes) [2]int { return e.patchBy }
		jsonPatch, pbPatch = asNamed(jsonPatch, want.json, patchBy), asNamed(pbPatch, want.pb, patchBy)
	}
	if pbPatch >= jsonPatch {
		t.Errorf("protobuf delta_patch bytes %v not below json delta_patch bytes %v for the same %d patches", pbPatch, jsonPatch, want.patched)
	}
	if pbFulls >= jsonFulls {
		t.Errorf("protobuf full bytes %v not below json full + delta_full bytes %v for the same updates", pbFulls, jsonFulls)
	}
}

// collectPubs reads n publications of h.
func collectPubs(t *testing.T, name string, h *harness, n int) []centrifuge.Publication {
	t.Helper()
	got := make([]centrifuge.Publication, 0, n)
	timeout := time.After(waitFor)
	for len(got) < n {
		select {
		case p := <-h.pubs:
			got = append(got, p)
		case <-timeout:
			t.Fatalf("%s: %d of %d publications after %v (offsets %v); SDK events:\n\t%s", name, len(got), n, waitFor, pubOffsets(got), h.events())
		}
	}
	return got
}

// Channel addressing of a push: the channel's name, or (compaction) its
// id, taken as 1 (the smallest: a lower bound for any id).
const (
	named = iota
	compact
)

// encodingBytes are the bytes, WebSocket headers included, of the frames
// one encoding's codec makes for the updates records[1:] (each following
// the one before), for one subscriber of each kind, by addressing.
type encodingBytes struct {
	compact bool // the codec's pushes carry ids (what full, deltaFull and patch return)
	// The plain subscriber's pushes (Protobuf: and the delta subscriber's
	// full ones, the same frames).
	fullBy [2]int
	// The delta subscriber's full pushes, where a form of their own (JSON).
	deltaFullBy [2]int
	// The delta subscriber's patches.
	patchBy [2]int
}

func (e encodingBytes) addressing() int {
	if e.compact {
		return compact
	}
	return named
}

func (e encodingBytes) full() int      { return e.fullBy[e.addressing()] }
func (e encodingBytes) deltaFull() int { return e.deltaFullBy[e.addressing()] }
func (e encodingBytes) patch() int     { return e.patchBy[e.addressing()] }

type formBytes struct {
	patched  int // updates with a patch smaller than the value
	json, pb encodingBytes
}

func expectedFormBytes(channel string, records []sent, compactJSON, compactPB bool) formBytes {
	w := formBytes{json: encodingBytes{compact: compactJSON}, pb: encodingBytes{compact: compactPB}}
	addr := [2]struct {
		channel string
		id      uint32
	}{named: {channel, 0}, compact: {"", 1}}
	for i := 1; i < len(records); i++ {
		prev, cur, off := []byte(records[i-1].data), []byte(records[i].data), records[i].offset
		patch := delta.Encode(nil, prev, cur)
		hasPatch := len(patch) < len(cur)
		if hasPatch {
			w.patched++
		}
		for a, to := range addr {
			pbPlain := frameLen(protocol.Protobuf.AppendPublicationPush(nil, to.channel, to.id, cur, off))
			w.json.fullBy[a] += frameLen(protocol.JSON.AppendPublicationPush(nil, to.channel, to.id, cur, off))
			w.pb.fullBy[a] += pbPlain
			if !hasPatch {
				w.json.deltaFullBy[a] += frameLen(protocol.JSON.AppendDeltaPush(nil, to.channel, to.id, cur, off, false))
				w.pb.fullBy[a] += pbPlain
				continue
			}
			w.json.patchBy[a] += frameLen(protocol.JSON.AppendDeltaPush(nil, to.channel, to.id, patch, off, true))
			w.pb.patchBy[a] += frameLen(protocol.Protobuf.AppendDeltaPush(nil, to.channel, to.id, patch, off, true))
		}
	}
	return w
}

// frameLen is the size of an unmasked WebSocket frame carrying payload.
func frameLen(payload []byte) int {
	switch n := len(payload); {
	case n <= 125:
		return n + 2
	case n <= 0xffff:
		return n + 4
	default:
		return n + 10
	}
}
