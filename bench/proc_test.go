package bench

import (
	"net"
	"os"
	"testing"
)

// TestRelayProc: the process listening on a loopback URL's port is found
// in /proc (here: this test), and its memory and CPU read; a remote URL
// is left to /metrics.
func TestRelayProc(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := relayProc("ws://" + ln.Addr().String() + "/connection/websocket")
	if p == nil || p.pid != os.Getpid() {
		t.Fatalf("found %+v, want pid %d", p, os.Getpid())
	}
	rss, cpu, err := p.sample()
	if err != nil || rss < 1<<20 || cpu < 0 {
		t.Fatalf("sample: rss %d cpu %v, %v", rss, cpu, err)
	}
	if relayProc("ws://relay.example.com:8000/x") != nil {
		t.Fatal("a remote host resolved to a local process")
	}
}
