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
// memberlist and the relay (the engine: of the relay's protocol too).
func TestDependencies(t *testing.T) {
	allowed := map[string][]string{
		"./fanout/...": {"github.com/edgerelay/edgerelay/fanout", "github.com/edgerelay/edgerelay/delta"},
		"./delta/...":  {"github.com/edgerelay/edgerelay/delta", "github.com/klauspost/compress"},
		"./relay/engine/...": {"github.com/edgerelay/edgerelay/relay/engine", "github.com/edgerelay/edgerelay/fanout", "github.com/edgerelay/edgerelay/delta",
			"github.com/gobwas/ws", "github.com/gobwas/httphead", "github.com/gobwas/pool", "github.com/klauspost/compress", "golang.org/x/sys"},
	}
	for pattern, extra := range allowed {
		cmd := exec.Command("go", "list", "-deps", "-json", pattern)
		cmd.Dir = ".." // module root, so that patterns for packages not yet written match nothing
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pattern, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for dec.More() {
			var p struct {
				ImportPath string
				Standard   bool
			}
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p.Standard {
				continue
			}
			ok := false
			for _, a := range extra {
				ok = ok || p.ImportPath == a || strings.HasPrefix(p.ImportPath, a+"/")
			}
			if !ok {
				t.Errorf("%s depends on %s, which design.md does not allow", pattern, p.ImportPath)
			}
		}
	}
}
