package relay

import (
	"bufio"
	"bytes"
	"testing"
	"time"
)

// FuzzRequestHead: the head reader never returns more than its limit nor
// a head without its blank line, and strictHead does not panic.
func FuzzRequestHead(f *testing.F) {
	f.Add([]byte("GET /connection/websocket HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n\r\n\x81\x85"))
	f.Add([]byte("GET / HTTP/1.1\nA: b\n\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nSec-WebSocket-Key:\r\nSec-WebSocket-Key: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 256
		head, err := readRequestHead(bufio.NewReaderSize(bytes.NewReader(in), 16), limit)
		if err != nil {
			return
		}
		body := bytes.TrimSuffix(head, []byte("\n"))
		last := body[bytes.LastIndexByte(body, '\n')+1:]
		if len(head) > limit || !bytes.HasPrefix(in, head) || len(body) == len(head) || (len(last) > 0 && string(last) != "\r") {
			t.Fatalf("head %q from %q", head, in)
		}
		strictHead(head)
	})
}

// TestAdmissionFileShare: the derived connection cap counts what one
// connection holds of the open-file limit (three for a TLS WebSocket).
func TestAdmissionFileShare(t *testing.T) {
	files := fileLimitConns()
	if files == 0 {
		t.Skip("no open-file limit")
	}
	ws := DefaultConfig().WebSocket
	ws.MaxConnections = 0
	for _, per := range []int{1, tlsFilesPerConn} {
		if got := newAdmission(ws, per).maxConns; got != max(files/per, 1) {
			t.Errorf("%d files per connection: cap %d, want %d of %d", per, got, files/per, files)
		}
	}
	ws.MaxConnections = 7
	if got := newAdmission(ws, tlsFilesPerConn).maxConns; got != 7 {
		t.Errorf("configured cap 7 became %d", got)
	}
}

// TestFirstPingSpread: new connections start their ping clocks at random
// points of one interval, so those that connected together are pinged
// over the whole interval, not in one tick.
func TestFirstPingSpread(t *testing.T) {
	const now = int64(1e18)
	if got := firstPingBase(now, 0); got != now {
		t.Errorf("pings off: base %d, want now", got)
	}
	interval := 25 * time.Second
	var perSecond [25]int
	for range 25_000 {
		b := firstPingBase(now, interval)
		if b > now || b <= now-int64(interval) {
			t.Fatalf("base %v before now: outside one interval", time.Duration(now-b))
		}
		perSecond[(now-b)/int64(time.Second)]++
	}
	for s, n := range perSecond { // about 1,000 each
		if n < 700 || n > 1300 {
			t.Errorf("second %d of the interval holds %d of 25,000 first pings", s, n)
		}
	}
}
