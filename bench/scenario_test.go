package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScenarioFiles: every checked-in scenario loads.
func TestScenarioFiles(t *testing.T) {
	files, _ := filepath.Glob("scenarios/*.yaml")
	if len(files) < 5 {
		t.Fatalf("scenario files: %v", files)
	}
	for _, f := range files {
		if _, err := LoadScenario(f); err != nil {
			t.Error(err)
		}
	}
}

func TestLoadScenarioErrors(t *testing.T) {
	for _, tt := range []struct{ name, yaml, errHas string }{
		{"unknown key", "name: x\nsteps: [{name: a, conns: 1, procs: 1, channels: 1, rate: 1, duration: 1s, colour: red}]", "colour"},
		{"no steps", "name: x\n", "at least one step"},
		{"conns below procs", "name: x\nsteps: [{name: a, conns: 1, procs: 2, channels: 1, rate: 1, duration: 1s}]", "conns >= procs"},
		{"no rate", "name: x\nsteps: [{name: a, conns: 1, procs: 1, channels: 1, duration: 1s}]", "rate > 0"},
		{"protobuf share 2", "name: x\nsteps: [{name: a, conns: 1, procs: 1, channels: 1, rate: 1, duration: 1s, protobuf_share: 2}]", "protobuf_share"},
		{"stalled 1", "name: x\nsteps: [{name: a, conns: 1, procs: 1, channels: 1, rate: 1, duration: 1s, stalled: 1}]", "stalled"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "s.yaml")
			os.WriteFile(p, []byte(tt.yaml), 0o644)
			if _, err := LoadScenario(p); err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("LoadScenario: %v, want an error with %q", err, tt.errHas)
			}
		})
	}
}
