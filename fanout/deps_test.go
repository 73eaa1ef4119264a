package fanout

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies fails when fanout, delta or the socket engine
// (relay/engine) import anything beyond the standard library and the few
// modules design.md allows them: they must stay free of Kafka, Prometheus,
// memberlist and the relay (the engine: of the relay's protocol too). And
// when cluster, built on memberlist, imports the relay, Kafka or
// Prometheus: the relay observes it through cluster.Hooks.
func TestDependencies(t *testing.T) {
	allowed := map[string][]string{
		"./fanout/...": {"github.com/edgerelay/edgerelay/fanout", "github.com/edgerelay/edgerelay/delta"},
		"./delta/...":  {"github.com/edgerelay/edgerelay/delta", "github.com/klauspost/compress"},
		"./relay/engine/...": {"github.com/edgerelay/edgerelay/relay/engine", "github.com/edgerelay/edgerelay/fanout", "github.com/edgerelay/edgerelay/delta",
			"github.com/gobwas/ws", "github.com/gobwas/httphead", "github.com/gobwas/pool", "github.com/klauspost/compress", "golang.org/x/sys"},
		// The tag filter matcher runs under the hub's channel locks, like the engine's sinks.
		"./relay/tagfilter/...": {"github.com/edgerelay/edgerelay/relay/tagfilter", "github.com/edgerelay/edgerelay/relay/protocol",
			"github.com/edgerelay/edgerelay/fanout", "github.com/edgerelay/edgerelay/delta", "google.golang.org/protobuf"},
	}
	forbidden := map[string][]string{
		"./cluster/...": {"github.com/edgerelay/edgerelay/relay", "github.com/twmb/franz-go", "github.com/prometheus"},
	}
	for pattern, extra := range allowed {
		for _, dep := range nonStandardDeps(t, pattern) {
			if !underAny(dep, extra) {
				t.Errorf("%s depends on %s, which design.md does not allow", pattern, dep)
			}
		}
	}
	for pattern, banned := range forbidden {
		for _, dep := range nonStandardDeps(t, pattern) {
			if underAny(dep, banned) {
				t.Errorf("%s depends on %s, which design.md does not allow", pattern, dep)
			}
		}
	}
}

// nonStandardDeps lists the import paths outside the standard library
// that the packages matching pattern depend on, themselves included.
func nonStandardDeps(t *testing.T, pattern string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json", pattern)
	cmd.Dir = ".." // module root, so that patterns for packages not yet written match nothing
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	var deps []string
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Standard   bool
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if !p.Standard {
			deps = append(deps, p.ImportPath)
		}
	}
	return deps
}

// underAny reports whether path is one of prefixes or below one.
func underAny(path string, prefixes []string) bool {
	for _, a := range prefixes {
		if path == a || strings.HasPrefix(path, a+"/") {
			return true
		}
	}
	return false
}
