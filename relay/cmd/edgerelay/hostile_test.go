package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestHostileInput is the hostile-input suite of issue 15. It runs the relay
// BINARY as a subprocess (so that its memory, file descriptors, goroutines
// and CPU are its own) against an in-process kfake, with history and auth
// on, and attacks it with clients nobody here wrote: tests/python/hostile.py
// (Debian python3, raw sockets and python3-websockets) and tests/js/hostile.mjs
// (npm ws). Throughout, a bystander subscribed to a feed must receive every
// produced update, in order, and four pingers (one or more on every poller)
// measure protocol ping round trips.
//
// Around every case it reads the relay's RSS (and peak RSS, VmHWM, reset
// before the case), open fds, go_goroutines and the /metrics body size, and
// fails when
//
//   - the case's peak RSS passes the RSS before it by hostileRSSBound;
//   - after the attackers are gone, fds, goroutines, connections and
//     subscriptions do not return near the suite's baseline (polled);
//   - /metrics grows by more than hostileMetricsBound (cardinality: less);
//   - the bystander misses, repeats or reorders an update;
//   - the attacker does not get the code docs/protocol.md and
//     docs/configuration.md give.
//
// Time-based figures — the others' ping RTT during a flood, the relay CPU a
// drip-fed frame costs — are measured and logged, and held to their bounds
// only with EDGERELAY_HOSTILE_MEASURE=1 (docs/security.md runs it so):
// on a shared 2-core CI machine they say more about the machine than the
// relay, and budgets do not live in timed tests. What the bounds guard
// against is also tested without the clock: the engine's
// TestPollerFairness and TestDripFedFrame. The figures of every case are
// logged as a table at the end (go test -v); docs/security.md holds them.
func TestHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs Python and Node attackers")
	}
	h := newHarness(t)
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) { h.run(t, c) })
	}
	h.finish(t)
}

// measured reports a time-based figure past its bound: an error with
// EDGERELAY_HOSTILE_MEASURE=1, a log line otherwise (see TestHostileInput).
func measured(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("EDGERELAY_HOSTILE_MEASURE") != "" {
		t.Errorf(format, args...)
		return
	}
	t.Logf("over its bound (held only with EDGERELAY_HOSTILE_MEASURE=1): "+format, args...)
}

// Stated bounds.
const (
	hostileRSSBound           = 64 << 20 // peak RSS growth during one case
	hostileMetricsBound       = 8 << 10  // /metrics growth of one case
	cardinalityMetricsBound   = 4 << 10  // /metrics growth of the cardinality case
	suiteMetricsBound         = 16 << 10 // /metrics growth of the whole suite
	pingRTTBound              = 50 * time.Millisecond
	fdSlack, goroutineSlack   = 4, 8 // "near the baseline"
	settleTimeout             = 20 * time.Second
	dripCPUPerClientBound     = 250 * time.Millisecond
	feedChannel, quietChannel = "hostile:feed:1", "odds:hostile:quiet"
	historyChannel            = "odds:hostile:history"
	hostileSecret             = "hostile-suite-secret-of-at-least-32-bytes"
)

// hostileCase is one attack. run drives it, asserts its codes, and returns
// what the attacker got, for the report.
type hostileCase struct {
	name         string
	finding      string // issue 15 finding, or "works" for cases that already did
	expected     string
	metricsBound int
	run          func(t *testing.T, h *harness, m *measure) string
}

var hostileCases = []hostileCase{
	{name: "huge upgrade header", finding: "1", expected: "431 before the rest is read (websocket.max_handshake_bytes); plain HTTP 431 (http.max_header_bytes)", run: caseHugeHeader},
	{name: "connect in the upgrade write", finding: "7", expected: "connect and subscribe answered (not 3502)", run: caseConnectWithUpgrade},
	{name: "lenient handshake", finding: "9", expected: "400", run: caseStrictHandshake},
	{name: "history amplification", finding: "2", expected: "limit -1 over half the queue: error 106; a message of history commands: close 3008", run: caseHistory},
	{name: "metric cardinality", finding: "4", expected: "subscribes answered, invalid names 107, /metrics +<4 KiB", metricsBound: cardinalityMetricsBound, run: caseCardinality},
	{name: "idle keep-alive HTTP", finding: "6", expected: "closed by the relay after http.idle_timeout (2s here)", run: caseIdleHTTP},
	{name: "JWT time claims", finding: "10", expected: "3500 (invalid token)", run: caseJWT},
	{name: "REST flood", finding: "11", expected: "429 with Retry-After past http.rate_per_address; another address 200", run: caseRESTFlood},
	{name: "frame violations", finding: "works", expected: "1002, 1007, 1009, 3501 as docs/protocol.md lists", run: caseFrames},
	{name: "deflate bomb", finding: "works", expected: "1009 (inflated past max_message_bytes); corrupt: 1007", run: caseDeflateBomb},
	{name: "2000 clients dropped with RST", finding: "works", expected: "connections, subscriptions, fds, goroutines back to the baseline", run: caseRSTClients},
	{name: "pong flood", finding: "3", expected: fmt.Sprintf("others' ping RTT p99 < %v; the flooder closed with a documented code", pingRTTBound), run: pythonFlood("pong")},
	{name: "WebSocket ping flood", finding: "3", expected: fmt.Sprintf("others' ping RTT p99 < %v; the flooder closed with a documented code", pingRTTBound), run: pythonFlood("ping")},
	{name: "large-message flood", finding: "3", expected: fmt.Sprintf("others' ping RTT p99 < %v; the flooder closed with a documented code", pingRTTBound), run: pythonFlood("big")},
	{name: "ping flood (npm ws)", finding: "3", expected: fmt.Sprintf("others' ping RTT p99 < %v; the flooder closed with a documented code", pingRTTBound), run: casePingFlood},
	{name: "drip-fed frame", finding: "5", expected: fmt.Sprintf("relay CPU < %v per client", dripCPUPerClientBound), run: caseDrip},
	{name: "invalid close frames", finding: "8", expected: "1002 (1007 for an invalid UTF-8 reason)", run: caseCloseFrames},
	{name: "non-minimal frame length", finding: "9", expected: "1002", run: caseNonMinimalLength},
}

// --- the cases ---------------------------------------------------------------

func caseHugeHeader(t *testing.T, h *harness, m *measure) string {
	type res struct {
		Statuses []int
		Sent     []int64 `json:"sent_before_answer"`
		Size     int64
	}
	var line, many, plain res
	h.python(t, "huge-header", "SIZE_MIB=64", "PARALLEL=3", "SHAPE=line").finish(t, &line)
	h.python(t, "huge-header", "SIZE_MIB=16", "PARALLEL=1", "SHAPE=many").finish(t, &many)
	h.python(t, "huge-header", "SIZE_MIB=16", "PARALLEL=1", "SHAPE=line", "TARGET=/healthz").finish(t, &plain)
	var maxSent int64
	for name, r := range map[string]res{"one 64 MiB header line (3 in parallel)": line, "many headers": many, "plain HTTP, one 16 MiB line": plain} {
		for i, st := range r.Statuses {
			if st != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%s: status %d, want 431", name, st)
			}
			if r.Sent[i] >= r.Size {
				t.Errorf("%s: answered only after all %d bytes were sent", name, r.Size)
			}
			maxSent = max(maxSent, r.Sent[i])
		}
	}
	return fmt.Sprintf("431 %v, many headers %v, plain HTTP %v; answered after at most %.1f of 64 MiB sent",
		line.Statuses, many.Statuses, plain.Statuses, float64(maxSent)/(1<<20))
}

func caseConnectWithUpgrade(t *testing.T, h *harness, m *measure) string {
	var r struct {
		Status  int
		Replies []string
	}
	h.python(t, "connect-with-upgrade", "CHANNEL="+quietChannel).finish(t, &r)
	if r.Status != http.StatusSwitchingProtocols || len(r.Replies) < 2 ||
		!strings.HasPrefix(r.Replies[0], `{"id":1,"connect":`) || !strings.HasPrefix(r.Replies[1], `{"id":2,"subscribe":`) {
		t.Errorf("connect and subscribe in the upgrade's write: status %d, replies %q", r.Status, r.Replies)
		return fmt.Sprintf("%d %q", r.Status, r.Replies)
	}
	return "connect and subscribe replies"
}

func caseStrictHandshake(t *testing.T, h *harness, m *measure) string {
	var r struct{ Statuses map[string]int }
	h.python(t, "strict-handshake").finish(t, &r)
	var got []string
	for name, st := range r.Statuses {
		want := http.StatusBadRequest
		if name == "good request" {
			want = http.StatusSwitchingProtocols
		}
		if st != want {
			t.Errorf("%s: status %d, want %d", name, st, want)
		}
		got = append(got, fmt.Sprintf("%s %d", name, st))
	}
	slices.Sort(got)
	return strings.Join(got, "; ")
}

func caseHistory(t *testing.T, h *harness, m *measure) string {
	// 1000 publications of 600 bytes: all of them (limit -1) pass half
	// the 1 MiB queue, 800 do not (480 KB a reply).
	pad := strings.Repeat("h", 580)
	recs := make([]*kgo.Record, 1000)
	for i := range recs {
		recs[i] = record(historyChannel, fmt.Sprintf(`{"seq":%d,"pad":%q}`, i, pad))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, "http://"+h.addr+"/v1/channels/"+historyChannel, `"seq":999`)

	var r struct {
		LimitAll any     `json:"limit_all"`
		Commands int     `json:"commands"`
		MsgBytes int     `json:"message_bytes"`
		Close    any     `json:"close"`
		Replies  int     `json:"replies_before_close"`
		Seconds  float64 `json:"seconds_to_close"`
	}
	h.python(t, "history", "CHANNEL="+historyChannel, "LIMIT=800").finish(t, &r)
	if r.LimitAll != 106.0 {
		t.Errorf("history limit -1 over half the queue: %v, want error 106", r.LimitAll)
	}
	if r.Close != 3008.0 {
		t.Errorf("%d history commands in one message: close %v, want 3008", r.Commands, r.Close)
	}
	h.mustBeDocumented(t, 3008)
	return fmt.Sprintf("limit -1: error %v; %d commands in one %d-byte message: close %v after %d replies, %.2f s",
		r.LimitAll, r.Commands, r.MsgBytes, r.Close, r.Replies, r.Seconds)
}

func caseCardinality(t *testing.T, h *harness, m *measure) string {
	var r struct {
		Connections              int
		Subscribed, Unsubscribed int
		Errors                   map[string]int
		Invalid                  map[string]int `json:"invalid_names"`
		InvalidBytes             int            `json:"invalid_message_bytes"`
	}
	h.python(t, "cardinality", "NAMESPACES=20000", "INVALID=100", "INVALID_BYTES=120000").finish(t, &r)
	if r.Subscribed != 20000 || r.Unsubscribed != 20000 || len(r.Errors) > 0 {
		t.Errorf("20,000 made-up namespaces: %d subscribed, %d unsubscribed, errors %v", r.Subscribed, r.Unsubscribed, r.Errors)
	}
	if r.Invalid["107"] != 100 || len(r.Invalid) != 1 {
		t.Errorf("100 invalid %d-byte names: %v, want 107 for each", r.InvalidBytes, r.Invalid)
	}
	return fmt.Sprintf("20,000 namespaces subscribed and left over %d connections; 100 invalid %d-byte names: %v", r.Connections-1, r.InvalidBytes, r.Invalid)
}

func caseIdleHTTP(t *testing.T, h *harness, m *measure) string {
	a := h.python(t, "idle-http", "CONNS=300", "WAIT=20")
	held := a.waitEvent(t, "held", 30*time.Second)
	during := h.sample(t)
	m.during = &during
	var r struct {
		Conns, Answered int
		Closed          int      `json:"closed_by_relay"`
		First           *float64 `json:"first_close_s"`
		Last            *float64 `json:"last_close_s"`
	}
	a.finish(t, &r)
	if r.Answered != 300 || r.Closed != 300 {
		t.Errorf("300 keep-alive connections: %d answered, %d closed by the relay within 20 s", r.Answered, r.Closed)
	}
	// A check of the measurement: the relay held the connections. (Only
	// if they were all answered well within the idle timeout: the first
	// may be closed already on a loaded machine.)
	if during.FDs < m.before.FDs+250 && held["seconds"].(float64) < 1 {
		t.Errorf("the relay held %d fds with 300 idle connections open, %d before: not measuring what we think", during.FDs, m.before.FDs)
	}
	if r.First == nil || r.Last == nil {
		return fmt.Sprintf("%d of 300 closed by the relay", r.Closed)
	}
	return fmt.Sprintf("%d of 300 closed by the relay %.1f–%.1f s after their response", r.Closed, *r.First, *r.Last)
}

func caseJWT(t *testing.T, h *harness, m *measure) string {
	var r struct{ Outcomes map[string]string }
	h.python(t, "jwt", "SECRET="+hostileSecret).finish(t, &r)
	want := map[string]string{
		"valid":                "connected",
		"no token (anonymous)": "connected",
		"expired":              "error 109",
		"nbf 2^63":             "close 3500",
		"nbf 2^64":             "close 3500",
		"nbf 1e300":            "close 3500",
		"iat 2^63":             "close 3500",
		"exp 2^63":             "close 3500",
		"nbf -2^63":            "close 3500",
		"wrong secret":         "close 3500",
	}
	h.mustBeDocumented(t, 3500)
	return h.compare(t, "token", r.Outcomes, want)
}

func caseRESTFlood(t *testing.T, h *harness, m *measure) string {
	var r struct {
		Statuses   map[string]int
		RetryAfter []string `json:"retry_after"`
		Seconds    float64
		Other      int `json:"other_address"`
	}
	h.python(t, "rest-flood", "FROM=127.0.0.2", "OTHER=127.0.0.3", "REQUESTS=400", "THREADS=4").finish(t, &r)
	// The defaults: 50 requests a second in bursts of 100.
	allowed := 100 + 50*r.Seconds + 5
	if r.Statuses["429"] == 0 || float64(r.Statuses["200"]) > allowed || r.Statuses["200"]+r.Statuses["429"] != 400 {
		t.Errorf("400 requests from one address in %.2f s: %v, want at most %.0f answered 200, the rest 429", r.Seconds, r.Statuses, allowed)
	}
	if !slices.Equal(r.RetryAfter, []string{"1"}) {
		t.Errorf("Retry-After %q, want 1", r.RetryAfter)
	}
	if r.Other != http.StatusOK {
		t.Errorf("another address during the flood: %d, want 200", r.Other)
	}
	return fmt.Sprintf("400 requests in %.2f s: %d × 200, %d × 429 (Retry-After %v); another address %d",
		r.Seconds, r.Statuses["200"], r.Statuses["429"], r.RetryAfter, r.Other)
}

type closeSeen struct {
	Code   *int
	Reason string
}

func (c closeSeen) String() string {
	if c.Code == nil {
		return c.Reason
	}
	return fmt.Sprintf("close %d", *c.Code)
}

func (h *harness) compareCloses(t *testing.T, got map[string]closeSeen, want map[string]int) string {
	t.Helper()
	outcomes := map[string]string{}
	wants := map[string]string{}
	for name, c := range got {
		outcomes[name] = c.String()
	}
	for name, code := range want {
		wants[name] = fmt.Sprintf("close %d", code)
		h.mustBeDocumented(t, code)
	}
	return h.compare(t, "frame", outcomes, wants)
}

func caseFrames(t *testing.T, h *harness, m *measure) string {
	var r struct{ Closes map[string]closeSeen }
	h.python(t, "frames").finish(t, &r)
	return h.compareCloses(t, r.Closes, map[string]int{
		"unmasked frame":                         1002,
		"RSV2 set":                               1002,
		"RSV1 without permessage-deflate":        1002,
		"fragmented ping":                        1002,
		"ping of 126 bytes":                      1002,
		"continuation without a start":           1002,
		"text frame inside a fragmented message": 1002,
		"reserved opcode 0x3":                    1002,
		"reserved control opcode 0xB":            1002,
		"binary frame on a JSON connection":      3501,
		"message over max_message_bytes":         1009,
		"fragments over max_message_bytes":       1009,
		"length with the top bit set":            1009,
		"invalid UTF-8":                          1007,
		"invalid UTF-8 across fragments":         1007,
		"malformed JSON":                         3501,
		"command without an id":                  3501,
		"second connect":                         3501,
		"command before connect":                 3501,
	})
}

func caseDeflateBomb(t *testing.T, h *harness, m *measure) string {
	var r struct {
		Negotiated bool
		Bomb       closeSeen
		Corrupt    closeSeen
		Compressed int    `json:"bomb_compressed_bytes"`
		Inflated   int    `json:"bomb_inflated_bytes"`
		Small      string `json:"small compressed ping"`
	}
	h.python(t, "deflate-bomb", "BOMB_MIB=64").finish(t, &r)
	if !r.Negotiated {
		t.Fatal("permessage-deflate not negotiated")
	}
	if !strings.HasPrefix(r.Small, `{"id":2,"ping"`) {
		t.Errorf("a small compressed ping: %q, want its reply", r.Small)
	}
	h.compareCloses(t, map[string]closeSeen{"bomb": r.Bomb, "corrupt": r.Corrupt}, map[string]int{"bomb": 1009, "corrupt": 1007})
	return fmt.Sprintf("%d B inflating to %d MiB: %v; corrupt data: %v", r.Compressed, r.Inflated>>20, r.Bomb, r.Corrupt)
}

func caseRSTClients(t *testing.T, h *harness, m *measure) string {
	const n = 2000
	a := h.node(t, "rst-clients", fmt.Sprintf("CLIENTS=%d", n), "CHANNEL="+quietChannel)
	ev := a.waitEvent(t, "held", 60*time.Second)
	during := h.sample(t)
	m.during = &during
	if ev["subscribed"] != float64(n) {
		t.Errorf("%d clients: %v", n, ev)
	}
	if during.Conns < m.before.Conns+n || during.Subs < m.before.Subs+n {
		t.Errorf("with %d clients subscribed the relay reports %v connections, %v subscriptions", n, during.Conns, during.Subs)
	}
	a.stdin.Write([]byte("go\n"))
	var r struct{ Clients, Subscribed, Errors, Reset int }
	a.finish(t, &r)
	return fmt.Sprintf("%d subscribed, %d reset; relay had %.0f connections", r.Subscribed, r.Reset, during.Conns)
}

// floodResult is what hostile.py's flood and hostile.mjs's ping-flood
// report.
type floodResult struct {
	Kind        string
	Connections int
	Closes      map[string]int // by close code, or how the connection ended
	FramesSent  int            `json:"frames_sent"`
	BytesSent   int64          `json:"bytes_sent"` // hostile.py only
	FramesBack  int            `json:"frames_back"`
	Seconds     float64        `json:"flood_seconds"`
}

// flood runs a flooder (it connects again whenever the relay closes it) and
// checks other clients' ping RTT during the flood and that the flooder was
// closed, with a code docs/protocol.md lists.
func (h *harness) flood(t *testing.T, m *measure, a *attacker, what string) string {
	a.waitEvent(t, "flooding", 20*time.Second)
	from := time.Now()
	var r floodResult
	a.finish(t, &r)
	to := time.Now()
	p99 := h.pingP99(from, to)
	m.rtt = p99
	if p99 >= pingRTTBound {
		measured(t, "other clients' ping RTT p99 %v during the %s, want under %v", p99, what, pingRTTBound)
	}
	const cut = "cut by the end of the flood"
	closed := 0
	for how, n := range r.Closes {
		code, err := strconv.Atoi(how)
		switch {
		case how == cut:
		case err != nil || !h.documented[code]:
			t.Errorf("%d %s connections ended with %q, not a close code docs/protocol.md lists", n, what, how)
		default:
			closed += n
		}
	}
	if closed == 0 {
		t.Errorf("the %s was never closed in %.1f s (%v)", what, r.Seconds, r.Closes)
	}
	written := fmt.Sprintf("%d %s frames", r.FramesSent, what)
	if r.BytesSent > 0 {
		written = fmt.Sprintf("%.0f MB of %s frames", float64(r.BytesSent)/1e6, what)
	}
	return fmt.Sprintf("%s written on %d connections in %.1f s, %d frames back, ended %v; others' ping RTT p99 %v; relay CPU %v",
		written, r.Connections, r.Seconds, r.FramesBack, r.Closes, p99.Round(time.Millisecond), h.sample(t).CPU-m.before.CPU)
}

// pythonFlood floods with hostile.py's flood case: kind "pong" sends
// protocol pongs ({}), "ping" WebSocket pings (and reads the pongs), "big"
// 120 KiB messages.
func pythonFlood(kind string) func(t *testing.T, h *harness, m *measure) string {
	return func(t *testing.T, h *harness, m *measure) string {
		what := map[string]string{"pong": "protocol pong ({})", "ping": "WebSocket ping", "big": "120 KiB message"}[kind]
		return h.flood(t, m, h.python(t, "flood", "KIND="+kind, "DURATION=3"), what)
	}
}

func casePingFlood(t *testing.T, h *harness, m *measure) string {
	return h.flood(t, m, h.node(t, "ping-flood", "DURATION=3"), "npm ws ping")
}

func caseDrip(t *testing.T, h *harness, m *measure) string {
	const clients = 4
	type res struct {
		Segments []int
		Replies  []string
		Seconds  float64
	}
	// cost is the relay CPU a run took beyond what the suite's steady load
	// (the feed, the bystander, the pingers) costs in the same time.
	cost := func(mode string) (time.Duration, res) {
		var r res
		before := h.sample(t).CPU
		start := time.Now()
		h.python(t, "drip", "MODE="+mode, fmt.Sprintf("CLIENTS=%d", clients), "SIZE=131000", "SEG_MIN=8", "SEG_MAX=16", "PAUSE_US=100").finish(t, &r)
		cpu := h.sample(t).CPU - before - time.Duration(float64(time.Since(start))*h.idleCPU)
		for i, rep := range r.Replies {
			if !strings.Contains(rep, `"code":104`) {
				t.Errorf("%s client %d: %q, want error 104 (the rpc method is unknown): the frame was not read whole", mode, i, rep)
			}
		}
		return max(cpu, 0), r
	}
	bulk, _ := cost("bulk")
	drip, r := cost("drip")
	if drip > clients*dripCPUPerClientBound {
		measured(t, "%d clients drip-feeding a 131,000-byte frame in 8–16 byte segments cost the relay %v of CPU, want under %v (the same frames in one write: %v)",
			clients, drip, clients*dripCPUPerClientBound, bulk)
	}
	replies := map[string]int{}
	for _, rep := range r.Replies {
		if strings.Contains(rep, `"code":104`) {
			rep = "error 104"
		}
		replies[rep]++
	}
	return fmt.Sprintf("%d clients, %d segments each, %.1f s: relay CPU %v (in one write: %v); answers %v",
		clients, r.Segments[0], r.Seconds, drip.Round(time.Millisecond), bulk.Round(time.Millisecond), replies)
}

func caseCloseFrames(t *testing.T, h *harness, m *measure) string {
	var r struct{ Closes map[string]closeSeen }
	h.python(t, "close-frames").finish(t, &r)
	return h.compareCloses(t, r.Closes, map[string]int{
		"reserved 1005":             1002,
		"reserved 1006":             1002,
		"reserved 1015":             1002,
		"999 (below 1000)":          1002,
		"0":                         1002,
		"5000 (above 4999)":         1002,
		"65535":                     1002,
		"1-byte payload":            1002,
		"invalid UTF-8 reason":      1007,
		"1000 (valid)":              1000,
		"4000 (valid, application)": 4000,
		"empty (valid)":             1000,
	})
}

func caseNonMinimalLength(t *testing.T, h *harness, m *measure) string {
	var r struct{ Closes map[string]closeSeen }
	h.python(t, "nonminimal-length").finish(t, &r)
	return h.compareCloses(t, r.Closes, map[string]int{
		"16-bit length for 18 bytes": 1002,
		"64-bit length for 18 bytes": 1002,
	})
}

// --- the harness ---------------------------------------------------------------

type harness struct {
	t          *testing.T
	relay      *relayProcess
	addr       string
	prod       *kgo.Client
	python3    string
	jsDir      string
	pyScript   string
	documented map[int]bool

	feed      *feed
	bystander *bystander
	pingers   []*pinger
	metricsCl *http.Client

	base    relayUsage // after setup
	idleCPU float64    // relay CPU seconds per second under the suite's steady load
	rows    []reportRow
	start   time.Time
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, python3: "/usr/bin/python3", start: time.Now(), // Debian's, where python3-websockets lives
		metricsCl: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	if err := exec.Command(h.python3, "-c", "import websockets").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3-websockets missing (scripts/test installs it): %v", err)
		}
		t.Skip("python3-websockets missing; run scripts/test")
	}
	h.jsDir, _ = filepath.Abs("../../../tests/js")
	if _, err := os.Stat(filepath.Join(h.jsDir, "node_modules", "ws")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tests/js/node_modules missing (scripts/test installs them): %v", err)
		}
		t.Skip("tests/js/node_modules missing; run scripts/test")
	}
	h.pyScript, _ = filepath.Abs("../../../tests/python/hostile.py")
	h.documented = documentedCloseCodes(t)

	bin := buildRelay(t)
	kafka := startKafka(t, 1, "odds", "bets")
	brokers := kafka.ListenAddrs()
	h.addr = freeAddr(t)
	h.relay = startRelayProcess(t, bin, h.addr, fmt.Sprintf(`listen: %q
node: hostile
kafka: {brokers: [%q]}
ingest: {topics: [{name: odds}]}
channels: {history_size: 1000}
auth: {hmac_secrets: [%q], anonymous: true}
http: {idle_timeout: 2s}
overload: {deliver_all: ["bets:", "hostile:"]}
`, h.addr, brokers[0], hostileSecret), false)

	var err error
	h.prod, err = kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.prod.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.prod.ProduceSync(ctx, record(quietChannel, `{"quiet":true}`), record(feedChannel, `{"seq":0}`)).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, "http://"+h.addr+"/readyz", `"status":"ready"`)
	waitHTTP(t, "http://"+h.addr+"/v1/channels/"+feedChannel, `"seq":0`)

	// The bystander, then the pingers: connections go to the pollers in
	// turn (at most 4), so four pingers opened one after the other have
	// one on every poller, whichever the attacker lands on.
	h.bystander = newBystander(t, h.addr)
	for range 4 {
		h.pingers = append(h.pingers, newPinger(t, h.addr))
	}
	h.feed = startFeed(t, h.prod)

	// Let the steady load run a moment, then take the baseline and its
	// CPU cost (a measurement, not a wait for correctness).
	h.checkBystander(t)
	u0 := h.sample(t)
	time.Sleep(time.Second)
	h.checkBystander(t)
	u1 := h.sample(t)
	h.idleCPU = (u1.CPU - u0.CPU).Seconds() / u1.At.Sub(u0.At).Seconds()
	h.base = h.settle(t, u1)
	t.Logf("baseline: %s; steady load costs %.1f%% of a core", h.base, 100*h.idleCPU)
	return h
}

// measure is one case's figures.
type measure struct {
	before, peak, after relayUsage
	during              *relayUsage // sampled while the attackers held their connections
	rtt                 time.Duration
}

type reportRow struct {
	c       hostileCase
	failed  bool
	got     string
	m       measure
	seconds float64
}

func (h *harness) run(t *testing.T, c hostileCase) {
	peakOK := h.resetPeak(t)
	m := &measure{before: h.sample(t)}
	start := time.Now()
	row := reportRow{c: c}
	defer func() {
		if m.after.At.IsZero() { // the case stopped early (t.Fatal)
			m.peak = h.sample(t)
			m.after = m.peak
		}
		row.m, row.failed, row.seconds = *m, t.Failed(), time.Since(start).Seconds()
		h.rows = append(h.rows, row)
		t.Logf("%s: %s", c.name, row.figures())
	}()
	row.got = c.run(t, h, m)
	end := time.Now()
	m.peak = h.sample(t)
	if !peakOK { // VmHWM is the peak since start: use the RSS now
		m.peak.HWM = m.peak.RSS
	}
	if m.rtt == 0 {
		m.rtt = h.pingP99(start, end)
	}
	h.checkBystander(t)
	m.after = h.settle(t, m.before)
	t.Logf("got: %s", row.got)

	if grow := m.peak.HWM - m.before.RSS; grow > hostileRSSBound {
		t.Errorf("peak RSS %s during the case, %s before: grew by more than %d MiB", mib(m.peak.HWM), mib(m.before.RSS), hostileRSSBound>>20)
	}
	bound := hostileMetricsBound
	if c.metricsBound != 0 {
		bound = c.metricsBound
	}
	if grow := m.after.MetricsBytes - m.before.MetricsBytes; grow > bound {
		t.Errorf("/metrics grew from %d to %d bytes, more than %d", m.before.MetricsBytes, m.after.MetricsBytes, bound)
	}
}

// settle polls until the relay's fds, goroutines, connections and
// subscriptions are back near the suite's baseline (before, while the
// baseline is being taken), and reports the usage then; a case that
// leaves them above fails.
func (h *harness) settle(t *testing.T, before relayUsage) relayUsage {
	t.Helper()
	base := h.base
	if base.At.IsZero() {
		base = before
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		u := h.sample(t)
		if u.FDs <= base.FDs+fdSlack && u.Goroutines <= base.Goroutines+goroutineSlack && u.Conns == base.Conns && u.Subs == base.Subs {
			return u
		}
		if time.Now().After(deadline) {
			t.Errorf("%v after the attackers left: %s; baseline %s (leak?)", settleTimeout, u, base)
			return u
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) finish(t *testing.T) {
	h.feed.stop()
	h.checkBystander(t)
	end := h.sample(t)
	deadline := time.Now().Add(settleTimeout)
	for end.RSS > h.base.RSS+hostileRSSBound && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		end = h.sample(t)
	}
	if end.RSS > h.base.RSS+hostileRSSBound {
		t.Errorf("RSS %s after the suite, %s before: grew by more than %d MiB", mib(end.RSS), mib(h.base.RSS), hostileRSSBound>>20)
	}
	if end.FDs > h.base.FDs+fdSlack || end.Goroutines > h.base.Goroutines+goroutineSlack {
		t.Errorf("after the suite: %s; before: %s", end, h.base)
	}
	if grow := end.MetricsBytes - h.base.MetricsBytes; grow > suiteMetricsBound {
		t.Errorf("/metrics grew from %d to %d bytes over the suite, more than %d", h.base.MetricsBytes, end.MetricsBytes, suiteMetricsBound)
	}
	b := h.bystander.stats()
	if b.got < 2 {
		t.Errorf("the bystander received %d updates: the feed did not run", b.got)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "suite: %.0f s; relay before %s; after %s; bystander received %d updates, none missed, repeated or reordered: %v\n\n",
		time.Since(h.start).Seconds(), h.base, end, b.got, len(b.errs) == 0)
	sb.WriteString("| case | finding | expected | got | result | RSS before → peak | CPU | fds before → during → after | goroutines before → after | /metrics bytes before → after | others' ping RTT p99 |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range h.rows {
		sb.WriteString(r.markdown())
	}
	t.Logf("report:\n%s", sb.String())
}

func (r reportRow) figures() string {
	m := r.m
	during := "–"
	if m.during != nil {
		during = strconv.Itoa(m.during.FDs)
	}
	return fmt.Sprintf("RSS %s → peak %s (+%s), CPU %v, fds %d → %s → %d, goroutines %d → %d, /metrics %d → %d B, ping RTT p99 %v, %.1f s",
		mib(m.before.RSS), mib(m.peak.HWM), mib(max(0, m.peak.HWM-m.before.RSS)), (m.peak.CPU - m.before.CPU).Round(10*time.Millisecond),
		m.before.FDs, during, m.after.FDs, m.before.Goroutines, m.after.Goroutines, m.before.MetricsBytes, m.after.MetricsBytes,
		m.rtt.Round(100*time.Microsecond), r.seconds)
}

func (r reportRow) markdown() string {
	m := r.m
	result := "pass"
	if r.failed {
		result = "**FAIL**"
	}
	during := ""
	if m.during != nil {
		during = fmt.Sprintf(" → %d", m.during.FDs)
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s → %s | %v | %d%s → %d | %d → %d | %d → %d | %v |\n",
		r.c.name, r.c.finding, r.c.expected, strings.ReplaceAll(r.got, "|", "/"), result,
		mib(m.before.RSS), mib(m.peak.HWM), (m.peak.CPU - m.before.CPU).Round(10*time.Millisecond),
		m.before.FDs, during, m.after.FDs, m.before.Goroutines, m.after.Goroutines,
		m.before.MetricsBytes, m.after.MetricsBytes, m.rtt.Round(100*time.Microsecond))
}

// compare checks outcomes against want, name by name, and returns them in
// one line.
func (h *harness) compare(t *testing.T, what string, got, want map[string]string) string {
	t.Helper()
	var parts []string
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s %q: no outcome reported", what, name)
			continue
		}
		if g != w {
			t.Errorf("%s %q: %s, want %s", what, name, g, w)
		}
		parts = append(parts, name+": "+g)
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s %q: no expectation", what, name)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func (h *harness) mustBeDocumented(t *testing.T, code int) {
	t.Helper()
	if code == 4000 {
		return // the client's own code, echoed
	}
	if !h.documented[code] {
		t.Errorf("expected close code %d is not in docs/protocol.md's close codes", code)
	}
}

// documentedCloseCodes reads the codes of docs/protocol.md's "Close codes"
// table.
func documentedCloseCodes(t *testing.T) map[int]bool {
	b, err := os.ReadFile("../../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## Close codes")
	if !ok {
		t.Fatal("docs/protocol.md has no Close codes section")
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	codes := map[int]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (\d{4}) \|`).FindAllStringSubmatch(sec, -1) {
		n, _ := strconv.Atoi(m[1])
		codes[n] = true
	}
	if len(codes) < 5 {
		t.Fatalf("found only %v in docs/protocol.md's close codes", codes)
	}
	return codes
}

// --- the relay's resources -------------------------------------------------------

type relayUsage struct {
	At           time.Time
	RSS, HWM     int64 // bytes; HWM is the peak since the last resetPeak
	FDs          int
	CPU          time.Duration // utime + stime
	Goroutines   int
	MetricsBytes int
	Conns, Subs  float64
}

func (u relayUsage) String() string {
	return fmt.Sprintf("RSS %s, fds %d, goroutines %d, /metrics %d B, %.0f connections, %.0f subscriptions",
		mib(u.RSS), u.FDs, u.Goroutines, u.MetricsBytes, u.Conns, u.Subs)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (h *harness) sample(t *testing.T) relayUsage {
	t.Helper()
	pid := h.relay.pid
	u := relayUsage{At: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("relay process: %v", err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			u.RSS = kib(v)
		}
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			u.HWM = kib(v)
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	u.FDs = len(fds)
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after "(comm)": state is field 3, utime 14, stime 15, in
	// clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(ut+st) * 10 * time.Millisecond

	resp, err := h.metricsCl.Get("http://" + h.addr + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	u.MetricsBytes = len(body)
	for _, l := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "go_goroutines":
			u.Goroutines = int(x)
		case "edgerelay_connections":
			u.Conns = x
		case "edgerelay_subscriptions":
			u.Subs = x
		}
	}
	return u
}

func kib(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n << 10
}

// resetPeak resets the relay's VmHWM to its current RSS, so that the next
// reading is the peak of what happens in between. It reports false if the
// kernel refused.
func (h *harness) resetPeak(t *testing.T) bool {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", h.relay.pid), []byte("5"), 0); err != nil {
		t.Logf("cannot reset the peak RSS (%v): the RSS after the case stands in for its peak", err)
		return false
	}
	return true
}

// --- attackers ----------------------------------------------------------------------

// attacker is one run of hostile.py or hostile.mjs.
type attacker struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	result json.RawMessage
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

func (h *harness) python(t *testing.T, kase string, env ...string) *attacker {
	return h.attack(t, exec.Command(h.python3, h.pyScript, kase), "hostile.py "+kase,
		append(env, "EDGERELAY_ADDR="+h.addr))
}

func (h *harness) node(t *testing.T, mode string, env ...string) *attacker {
	cmd := exec.Command("node", "hostile.mjs", mode)
	cmd.Dir = h.jsDir
	return h.attack(t, cmd, "hostile.mjs "+mode, append(env, "EDGERELAY_URL=ws://"+h.addr+"/connection/websocket"))
}

func (h *harness) attack(t *testing.T, cmd *exec.Cmd, name string, env []string) *attacker {
	t.Helper()
	a := &attacker{name: name, cmd: cmd, events: make(chan map[string]any, 16), stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = a.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if a.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var line struct {
				Event  string          `json:"event"`
				Result json.RawMessage `json:"result"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Result != nil {
				a.result = line.Result
				continue
			}
			var ev map[string]any
			json.Unmarshal(sc.Bytes(), &ev)
			select {
			case a.events <- ev:
			default:
			}
		}
		a.err = cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-a.done
	})
	return a
}

// waitEvent waits for the attacker to report event.
func (a *attacker) waitEvent(t *testing.T, event string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-a.events:
			if ev["event"] == event {
				return ev
			}
		case <-a.done:
			t.Fatalf("%s ended before %q: %v\n%s", a.name, event, a.err, a.stderr)
		case <-deadline:
			t.Fatalf("%s: no %q within %v\n%s", a.name, event, timeout, a.stderr)
		}
	}
}

// finish waits for the attacker to end and decodes its result into v.
func (a *attacker) finish(t *testing.T, v any) {
	t.Helper()
	select {
	case <-a.done:
	case <-time.After(90 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		t.Fatalf("%s did not finish within 90 s\n%s", a.name, a.stderr)
	}
	if a.err != nil || a.result == nil {
		t.Fatalf("%s: %v, no result\n%s", a.name, a.err, a.stderr)
	}
	if err := json.Unmarshal(a.result, v); err != nil {
		t.Fatalf("%s: result %s: %v", a.name, a.result, err)
	}
}

// --- the feed, the bystander and the pingers --------------------------------------------

func record(channel, value string) *kgo.Record {
	return &kgo.Record{Topic: "odds", Value: []byte(value), Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(channel)}}}
}

// feed produces {"seq":N} to feedChannel every 20 ms, N from 1.
type feed struct {
	acked atomic.Int64
	quit  chan struct{}
	done  chan struct{}
	err   error
}

func startFeed(t *testing.T, prod *kgo.Client) *feed {
	f := &feed{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for seq := int64(1); ; seq++ {
			select {
			case <-f.quit:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := prod.ProduceSync(ctx, record(feedChannel, fmt.Sprintf(`{"seq":%d}`, seq))).FirstErr()
			cancel()
			if err != nil {
				f.err = err
				return
			}
			f.acked.Store(seq)
		}
	}()
	t.Cleanup(f.stop)
	return f
}

func (f *feed) stop() {
	select {
	case <-f.quit:
	default:
		close(f.quit)
	}
	<-f.done
}

// wsConn is a raw WebSocket client (gobwas/ws) of the JSON protocol.
type wsConn struct {
	nc  net.Conn
	br  *bufio.Reader
	wmu sync.Mutex
}

func dialWS(t *testing.T, addr string) *wsConn {
	t.Helper()
	nc, br, _, err := ws.Dialer{Timeout: 10 * time.Second}.Dial(context.Background(), "ws://"+addr+"/connection/websocket")
	if err != nil {
		t.Fatal(err)
	}
	if br == nil {
		br = bufio.NewReader(nc)
	}
	c := &wsConn{nc: nc, br: br}
	t.Cleanup(func() { nc.Close() })
	return c
}

func (c *wsConn) send(text string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteClientMessage(c.nc, ws.OpText, []byte(text))
}

// next returns the lines of the next text message; a close is an error.
func (c *wsConn) next() ([]string, error) {
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return nil, err
		}
		switch h.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			return nil, fmt.Errorf("closed %d %s", code, reason)
		case ws.OpText:
			return strings.Split(string(p), "\n"), nil
		}
	}
}

// bystander is subscribed to feedChannel throughout and checks that every
// update arrives once, in order.
type bystander struct {
	c    *wsConn
	mu   sync.Mutex
	last int64
	got  int64
	errs []string
	seen int // errs already reported
}

func newBystander(t *testing.T, addr string) *bystander {
	b := &bystander{c: dialWS(t, addr), last: -1}
	b.c.send(`{"id":1,"connect":{"name":"bystander"}}` + "\n" + `{"id":2,"subscribe":{"channel":"` + feedChannel + `"}}`)
	go b.loop()
	return b
}

func (b *bystander) loop() {
	for {
		lines, err := b.c.next()
		if err != nil {
			b.mu.Lock()
			b.errs = append(b.errs, "connection ended: "+err.Error())
			b.mu.Unlock()
			return
		}
		for _, l := range lines {
			if l == "{}" {
				b.c.send("{}")
				continue
			}
			var m struct {
				Error     json.RawMessage
				Subscribe *struct {
					Publications []struct{ Data struct{ Seq int64 } }
				}
				Push *struct {
					Pub *struct{ Data struct{ Seq int64 } }
				}
			}
			if err := json.Unmarshal([]byte(l), &m); err != nil || m.Error != nil {
				b.mu.Lock()
				b.errs = append(b.errs, "unexpected message: "+l)
				b.mu.Unlock()
				continue
			}
			var seqs []int64
			if m.Subscribe != nil {
				for _, p := range m.Subscribe.Publications {
					seqs = append(seqs, p.Data.Seq)
				}
			}
			if m.Push != nil && m.Push.Pub != nil {
				seqs = append(seqs, m.Push.Pub.Data.Seq)
			}
			b.mu.Lock()
			for _, s := range seqs {
				if b.last >= 0 && s != b.last+1 {
					b.errs = append(b.errs, fmt.Sprintf("update %d after %d", s, b.last))
				}
				b.last = s
				b.got++
			}
			b.mu.Unlock()
		}
	}
}

type bystanderStats struct {
	last, got int64
	errs      []string
}

func (b *bystander) stats() bystanderStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bystanderStats{b.last, b.got, slices.Clone(b.errs)}
}

// checkBystander waits until the bystander has every update acked so far
// and reports what it missed, repeated or reordered since the last check.
func (h *harness) checkBystander(t *testing.T) {
	t.Helper()
	if h.feed != nil && h.feed.err != nil {
		t.Fatalf("producing the feed: %v", h.feed.err)
	}
	want := int64(0)
	if h.feed != nil {
		want = h.feed.acked.Load()
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		s := h.bystander.stats()
		if s.last >= want || len(s.errs) > h.bystander.seen {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the bystander has update %d, %d was produced %v ago", s.last, want, settleTimeout)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := h.bystander.stats()
	for _, e := range s.errs[h.bystander.seen:] {
		t.Errorf("bystander: %s", e)
	}
	h.bystander.seen = len(s.errs)
}

// pinger sends a protocol ping every 20 ms (well under any command rate
// limit), whether or not the last one was answered, and records each
// round trip.
type pinger struct {
	c       *wsConn
	mu      sync.Mutex
	sent    map[int]time.Time
	samples []rttSample
}

type rttSample struct {
	at  time.Time
	rtt time.Duration
}

func newPinger(t *testing.T, addr string) *pinger {
	p := &pinger{c: dialWS(t, addr), sent: map[int]time.Time{}}
	p.c.send(`{"id":1,"connect":{"name":"pinger"}}`)
	if lines, err := p.c.next(); err != nil || !strings.Contains(lines[0], `"connect"`) {
		t.Fatalf("pinger connect: %v %v", lines, err)
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for id := 2; ; id++ {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			p.mu.Lock()
			p.sent[id] = time.Now()
			p.mu.Unlock()
			if p.c.send(fmt.Sprintf(`{"id":%d,"ping":{}}`, id)) != nil {
				return
			}
		}
	})
	wg.Go(func() {
		for {
			lines, err := p.c.next()
			if err != nil {
				return
			}
			now := time.Now()
			for _, l := range lines {
				if l == "{}" {
					p.c.send("{}")
					continue
				}
				var m struct{ ID int }
				json.Unmarshal([]byte(l), &m)
				p.mu.Lock()
				if at, ok := p.sent[m.ID]; ok {
					delete(p.sent, m.ID)
					p.samples = append(p.samples, rttSample{at, now.Sub(at)})
				}
				p.mu.Unlock()
			}
		}
	})
	t.Cleanup(func() {
		close(quit)
		p.c.nc.Close()
		wg.Wait()
	})
	return p
}

// p99 is the 99th percentile round trip of pings sent in [from, to]; pings
// still unanswered count with their age.
func (p *pinger) p99(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	var rtts []time.Duration
	for _, s := range p.samples {
		if !s.at.Before(from) && !s.at.After(to) {
			rtts = append(rtts, s.rtt)
		}
	}
	for _, at := range p.sent {
		if !at.Before(from) && !at.After(to) {
			rtts = append(rtts, now.Sub(at))
		}
	}
	if len(rtts) == 0 {
		return 0
	}
	slices.Sort(rtts)
	return rtts[min(len(rtts)-1, len(rtts)*99/100)]
}

// pingP99 is the worst pinger's p99 over [from, to].
func (h *harness) pingP99(from, to time.Time) time.Duration {
	var worst time.Duration
	for _, p := range h.pingers {
		worst = max(worst, p.p99(from, to))
	}
	return worst
}
