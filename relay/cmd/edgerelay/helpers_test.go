package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Helpers shared by the tests that run the relay binary as a subprocess
// (TestBetsCrashSafety, TestHostileInput): the process's resources, its
// exit and its signals are its own, not the test's.

// buildRelay builds the edgerelay binary into a temporary directory.
func buildRelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "edgerelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startKafka starts an in-process kfake cluster seeded with topics of
// partitions partitions each.
func startKafka(t *testing.T, partitions int, topics ...string) *kfake.Cluster {
	t.Helper()
	kafka, err := kfake.NewCluster(kfake.SeedTopics(int32(partitions), topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	return kafka
}

// relayProcess is the relay binary running as a child process.
type relayProcess struct {
	cmd  *exec.Cmd
	addr string
	pid  int
	log  *lockedBuffer // the process's stderr when not passed through

	waitOnce sync.Once
	waitErr  error
}

// lockedBuffer is a bytes.Buffer the process's stderr copier and the test
// may use at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRelayProcess writes config (YAML; it must set listen) to a file and
// runs `bin serve --config file --log-level warn`. With passStderr the
// relay's log goes to the test's stderr, else it is kept and shown if the
// test fails. The process is killed when the test ends, if still running.
func startRelayProcess(t *testing.T, bin, addr, config string, passStderr bool) *relayProcess {
	t.Helper()
	cfgFile := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &relayProcess{addr: addr}
	r.cmd = exec.Command(bin, "serve", "--config", cfgFile, "--log-level", "warn")
	// The tests' own switches (EDGERELAY_HOSTILE_MEASURE) are not settings.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EDGERELAY_HOSTILE_") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	if passStderr {
		r.cmd.Stderr = os.Stderr
	} else {
		r.log = &lockedBuffer{}
		r.cmd.Stderr = r.log
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.pid = r.cmd.Process.Pid
	t.Cleanup(func() {
		r.kill()
		if r.log != nil && t.Failed() {
			t.Logf("relay log:\n%s", tail(r.log.String(), 8<<10))
		}
	})
	return r
}

// kill SIGKILLs the process, if it still runs, and reaps it.
func (r *relayProcess) kill() {
	r.cmd.Process.Signal(syscall.SIGKILL)
	r.wait()
}

// wait reaps the process (once) and returns how it ended.
func (r *relayProcess) wait() error {
	r.waitOnce.Do(func() { r.waitErr = r.cmd.Wait() })
	return r.waitErr
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHTTP polls url until its body contains want.
func waitHTTP(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), want) {
				return
			}
			err = fmt.Errorf("%s: %.200s", resp.Status, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q (last: %v)", url, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readAll consumes topic from the start up to its current end offsets.
func readAll(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	var recs []*kgo.Record
	for len(left) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v; partitions not read to the end: %v", topic, ctx.Err(), left)
		}
		f.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return recs
}
