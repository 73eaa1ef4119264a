package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// failoverSDK is tests/js/failover.mjs, the SDK client of
// TestClusterInNetworkNamespaces: one centrifuge SDK client, every line it
// prints kept.
type failoverSDK struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedBuffer
	done   chan struct{}

	mu     sync.Mutex
	events []failoverEvent
	err    error // how the script ended
}

type failoverEvent struct {
	Event     string `json:"event"`
	Seq       int64  `json:"seq"`
	Offset    uint64 `json:"offset"`
	Recovered bool   `json:"recovered"`
	Message   string `json:"message"`
	T         int64  `json:"t"` // Unix ms
	line      string
}

func startFailoverSDK(t *testing.T, jsDir, url string) *failoverSDK {
	t.Helper()
	s := &failoverSDK{cmd: exec.Command("node", "failover.mjs"), stderr: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd.Dir = jsDir
	s.cmd.Env = append(os.Environ(), "EDGERELAY_URL="+url, "CHANNEL="+feedChannel)
	s.cmd.Stderr = s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			e := failoverEvent{line: sc.Text()}
			json.Unmarshal(sc.Bytes(), &e)
			s.mu.Lock()
			s.events = append(s.events, e)
			s.mu.Unlock()
		}
		err := s.cmd.Wait()
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("failover.mjs (last lines):\n%s\n%s", s.lastLines(40), tail(s.stderr.String(), 4<<10))
		}
	})
	return s
}

func (s *failoverSDK) filter(event string) []failoverEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []failoverEvent
	for _, e := range s.events {
		if e.Event == event {
			out = append(out, e)
		}
	}
	return out
}

func (s *failoverSDK) seqs() []int64 {
	var seqs []int64
	for _, e := range s.filter("publication") {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

func (s *failoverSDK) connects() int               { return len(s.filter("connected")) }
func (s *failoverSDK) subscribed() []failoverEvent { return s.filter("subscribed") }

func (s *failoverSDK) lastLines(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for _, e := range s.events[max(0, len(s.events)-n):] {
		lines = append(lines, e.line)
	}
	return strings.Join(lines, "\n")
}

// waitSeq waits until the SDK has received publication seq.
func (s *failoverSDK) waitSeq(t *testing.T, seq int64, timeout time.Duration) {
	t.Helper()
	pollUntil(t, timeout, func() error {
		select {
		case <-s.done:
			t.Fatalf("failover.mjs ended: %v", s.err)
		default:
		}
		got := s.seqs()
		if len(got) == 0 || got[len(got)-1] < seq {
			return fmt.Errorf("the SDK has %d publications, waiting for seq %d; last lines:\n%s", len(got), seq, s.lastLines(5))
		}
		return nil
	})
}

// checkContiguous fails the test unless every publication so far is the
// one after the previous.
func (s *failoverSDK) checkContiguous(t *testing.T) {
	t.Helper()
	seqs := s.seqs()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("publication %d is seq %d after seq %d (a gap, a duplicate or out of order)", i, seqs[i], seqs[i-1])
		}
	}
}

// end makes the script's closing round trip and waits for it to exit.
func (s *failoverSDK) end(t *testing.T) {
	t.Helper()
	io.WriteString(s.stdin, "end\n")
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("failover.mjs did not end")
	}
	if s.err != nil || len(s.filter("done")) != 1 {
		t.Fatalf("failover.mjs: %v, no done\n%s", s.err, s.stderr)
	}
}
