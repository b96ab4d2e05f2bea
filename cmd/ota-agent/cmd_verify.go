package main

import (
	"context"
	"encoding/json"
	"flag"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/store"
)

type verifyOptions struct {
	apps   *appsCmd
	asJSON bool
}

func verifyFlags(fs *flag.FlagSet) runFunc {
	o := &verifyOptions{apps: newAppsCmd(fs)}
	fs.BoolVar(&o.asJSON, "json", false, `print {"apps": [{"app", "version", "drift": [{"path", "problem"}], "error"}]}`)
	return func(ctx context.Context, g *globals, args []string) error { return runVerify(ctx, g, o, args) }
}

// verifyResult is one app of verify --json.
type verifyResult struct {
	App     string        `json:"app"`
	Version string        `json:"version"`
	Drift   []store.Drift `json:"drift"`
	Error   string        `json:"error,omitempty"`
}

// runVerify compares each app dir with state.json's inventory: exit 1 and
// the files that differ, if any.
func runVerify(ctx context.Context, g *globals, o *verifyOptions, args []string) error {
	cfg, err := o.apps.setup(g, args)
	if err != nil {
		return err
	}
	var out []verifyResult
	code := ExitOK
	for _, app := range cfg.Apps {
		v, drift, err := agent.Verify(app)
		r := verifyResult{App: app.Name, Version: v, Drift: drift}
		if r.Drift == nil {
			r.Drift = []store.Drift{}
		}
		switch {
		case err != nil:
			r.Error = err.Error()
			code = worst(code, codeOf(err))
			if !o.asJSON {
				g.printf("%s: %v\n", app.Name, err)
			}
		case len(drift) > 0:
			code = worst(code, ExitFailed)
			if !o.asJSON {
				g.printf("%s: %d file(s) differ from %s as installed; `ota-agent update --force %s` installs it again:\n", app.Name, len(drift), v, app.Name)
				for _, d := range drift {
					g.printf("  %s: %s\n", d.Path, d.Problem)
				}
			}
		case !o.asJSON && v == "":
			g.printf("%s: nothing installed yet\n", app.Name)
		case !o.asJSON:
			g.printf("%s: %s, every file as installed\n", app.Name, v)
		}
		out = append(out, r)
	}
	if o.asJSON {
		b, _ := json.MarshalIndent(map[string]any{"apps": out}, "", "  ")
		g.printf("%s\n", b)
	}
	if code != ExitOK {
		return exitCodeError{code}
	}
	return nil
}
