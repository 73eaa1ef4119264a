package main

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestSignalDrain runs the binary: SIGTERM starts the drain (/readyz
// answers "draining") and the process exits 0 after it; a second SIGTERM
// during a long drain stops it at once, by the signal.
func TestSignalDrain(t *testing.T) {
	bin := buildRelay(t)
	kafka := startKafka(t, 1, "odds", "scores")
	start := func(lbDelay, shutdown time.Duration) (*relayProcess, string) {
		addr := freeAddr(t)
		r := startRelayProcess(t, bin, addr, fmt.Sprintf("listen: %q\nkafka:\n  brokers: [%q]\nshutdown_timeout: %v\ncluster:\n  drain:\n    lb_delay: %v\n    period: 500ms\n",
			addr, kafka.ListenAddrs()[0], shutdown, lbDelay), false)
		url := "http://" + addr + "/readyz"
		waitHTTP(t, url, `"status":"ready"`)
		return r, url
	}
	exited := func(r *relayProcess, within time.Duration) error {
		done := make(chan error, 1)
		go func() { done <- r.wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(within):
			t.Fatalf("the relay still runs %v after SIGTERM", within)
			return nil
		}
	}

	r, url := start(time.Second, 5*time.Second)
	r.cmd.Process.Signal(syscall.SIGTERM)
	waitHTTP(t, url, `"reason":"draining"`)
	if err := exited(r, 10*time.Second); err != nil {
		t.Errorf("exit after a drain: %v, want status 0", err)
	}

	r, url = start(time.Minute, 2*time.Minute)
	r.cmd.Process.Signal(syscall.SIGTERM)
	waitHTTP(t, url, `"reason":"draining"`)
	r.cmd.Process.Signal(syscall.SIGTERM)
	var ee *exec.ExitError
	if err := exited(r, 10*time.Second); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("second SIGTERM: %v, want killed by SIGTERM", err)
	}
}
