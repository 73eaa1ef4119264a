package main

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestConfigCheckCommand runs the example of docs/configuration.md (the
// file, the environment, the flags) through config check and compares what
// main would print with the example's output; and checks the example
// configuration passes.
func TestConfigCheckCommand(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(string(doc), "$ cat relay.yaml\n")
	example, _, _ = strings.Cut(example, "```")
	file, session, ok2 := strings.Cut(example, "\n$ ")
	if !ok || !ok2 {
		t.Fatal("no example in docs/configuration.md")
	}
	command, want, _ := strings.Cut(session, "\n")
	if err := configCheck([]string{"check", "--config", "../../../deploy/relay.example.yaml"}); err != nil {
		t.Fatalf("the example configuration: %v", err)
	}
	t.Chdir(t.TempDir())
	if err := os.WriteFile("relay.yaml", []byte(file+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := strings.Fields(command)
	for len(args) > 0 && strings.Contains(args[0], "=") {
		k, v, _ := strings.Cut(args[0], "=")
		t.Setenv(k, v)
		args = args[1:]
	}
	if len(args) < 2 || args[0] != "edgerelay" || args[1] != "serve" {
		t.Fatalf("example command %q", command)
	}
	err = configCheck(append([]string{"check"}, args[2:]...))
	if !errors.Is(err, errConfig) {
		t.Fatalf("config check: %v, want %v", err, errConfig)
	}
	if got := "edgerelay: " + err.Error() + "\n"; got != want {
		t.Errorf("printed:\n%s\nthe docs say:\n%s", got, want)
	}
}
