// Package layout holds a test of the arrows between the packages: cmd ->
// agent -> store, reset, wire. Nothing below the command line imports it,
// store and reset know nothing of each other, and wire (the server's
// format) depends on no other part.
package layout

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/ota-agent/ota-agent/"

// forbidden maps a package to the parts of the module it must not depend
// on, directly or through another package.
var forbidden = map[string][]string{
	"wire":  {"agent", "store", "reset", "serve", "cmd/"},
	"store": {"agent", "reset", "serve", "cmd/"},
	"reset": {"agent", "store", "wire", "serve", "cmd/"},
	"serve": {"agent", "store", "reset", "cmd/"},
	// publish writes the layout wire describes; it runs on the publisher's
	// machine and knows nothing of a device.
	"publish": {"agent", "store", "reset", "serve", "cmd/"},
	"agent":   {"serve", "cmd/"},
	// board reads what the board is (periph's distro, DMI); it knows
	// nothing of the agent.
	"board": {"agent", "store", "reset", "wire", "serve", "publish", "cmd/"},
	// metrics writes the Prometheus textfile; cmd feeds it.
	"metrics": {"agent", "store", "reset", "wire", "serve", "publish", "board", "cmd/"},
}

func TestArrowsPointOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		bans, ok := forbidden[name]
		if !ok {
			continue
		}
		seen++
		for _, dep := range p.Deps {
			rest, ok := strings.CutPrefix(dep, module)
			if !ok {
				continue
			}
			for _, ban := range bans {
				if rest == ban || strings.HasPrefix(rest, strings.TrimSuffix(ban, "/")+"/") {
					t.Errorf("%s depends on %s: the arrows point cmd -> agent -> store, reset, wire", name, rest)
				}
			}
		}
	}
	if seen != len(forbidden) {
		t.Errorf("found %d of the %d packages the test knows; update forbidden", seen, len(forbidden))
	}
}
