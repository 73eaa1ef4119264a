package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestVersionStamped builds the binary as the Dockerfile does, with the
// version and commit stamped by -ldflags -X, and checks both spellings of
// the command print them.
func TestVersionStamped(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "edgerelay")
	ldflags := "-X github.com/edgerelay/edgerelay/relay.Version=1.2.3-test -X github.com/edgerelay/edgerelay/relay.Commit=abc1234"
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "edgerelay 1.2.3-test (commit abc1234, " + runtime.Version() + ")"
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Fatalf("edgerelay %s: %v\n%s", arg, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("edgerelay %s = %q, want %q", arg, got, want)
		}
	}
}

// TestVersionUnstamped: without -ldflags the version is "dev".
func TestVersionUnstamped(t *testing.T) {
	out, err := exec.Command(buildRelay(t), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("edgerelay --version: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "edgerelay dev (commit ") {
		t.Errorf("edgerelay --version = %q, want edgerelay dev (commit …)", out)
	}
}
