package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
)

// TestMain lets this test binary act as a relay process with a tiny
// open-file limit, for TestAcceptFileLimit.
func TestMain(m *testing.M) {
	if os.Getenv("EDGERELAY_TEST_FDLIMIT_SERVE") != "" {
		serveWithFileLimit()
		return
	}
	os.Exit(m.Run())
}

func serveWithFileLimit() {
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(1)
	}
	cfg := testConfig([]string{"127.0.0.1:1"})
	srv, err := relay.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	srv.Serve(context.Background(), ln)
}

// TestAcceptFileLimit runs a relay limited to 64 open files and opens more
// connections than that: accepting pauses and is counted, the process does
// not spin or crash, and it serves again once clients leave.
func TestAcceptFileLimit(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EDGERELAY_TEST_FDLIMIT_SERVE=1")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSpace(line)
	if _, err := net.ResolveTCPAddr("tcp", addr); err != nil {
		t.Fatalf("child said %q", addr)
	}
	url := "ws://" + addr + "/connection/websocket"
	var conns []*wsClient
	for i := 0; i < 50; i++ { // fine: under the limit
		conns = append(conns, dial(t, url))
	}
	var raw []net.Conn
	for i := 0; i < 60; i++ { // these exhaust the relay's descriptors
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, c)
	}
	cpu := func() time.Duration {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
		u, _ := strconv.Atoi(f[11])
		s, _ := strconv.Atoi(f[12])
		return time.Duration(u+s) * 10 * time.Millisecond
	}
	before := cpu()
	time.Sleep(2 * time.Second) // starved of descriptors: must not spin
	if used := cpu() - before; used > time.Second {
		t.Errorf("relay used %v CPU in 2 s while out of descriptors: spinning", used)
	}
	for _, c := range raw {
		c.Close()
	}
	for _, c := range conns[:20] {
		c.conn.Close()
	}
	r := &testRelay{addr: addr}
	checkFor(t, 10*time.Second, func() error {
		code, body := r.get(t, "/metrics")
		if code != 200 || !strings.Contains(body, `edgerelay_accept_errors_total{reason="file_limit"}`) {
			return fmt.Errorf("metrics %d: %s", code, grep(body, "accept_errors"))
		}
		return nil
	})
	c := dial(t, url) // serves again
	c.connect()
}
