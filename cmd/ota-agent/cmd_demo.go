package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/serve"
)

// demoRelease is a release of the sample project: a tiny Python app whose
// files say which version they belong to.
func demoRelease(v string) map[string]string {
	return map[string]string{
		"main.py":     fmt.Sprintf("from lib.util import VERSION\nprint('sample app', VERSION)\n# %s\n", v),
		"lib/util.py": fmt.Sprintf("VERSION = %q\n", v),
	}
}

// runDemo starts the embedded server on loopback with a sample project,
// updates a temporary app dir through a first install, an up-to-date run, a
// rollback by editing `version` and a broken release, then removes it all.
func demoFlags(fs *flag.FlagSet) runFunc {
	keep := fs.Bool("keep", false, "keep the temporary directory to look at")
	level := fs.String("log-level", "warn", "agent log level: trace, debug, info, warn or error")
	return func(ctx context.Context, g *globals, args []string) error {
		return runDemo(ctx, g, *keep, *level, args)
	}
}

func runDemo(ctx context.Context, g *globals, keep bool, level string, args []string) error {
	if len(args) != 0 {
		return usageErrorf("demo takes no arguments")
	}
	log, err := newLogger(g.stderr, level)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "ota-agent-demo-")
	if err != nil {
		return err
	}
	if keep {
		defer g.printf("Kept %s for you to look at.\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	www := filepath.Join(tmp, "www")
	publish := func(name, body string) error {
		p := filepath.Join(www, "sample", filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, []byte(body), 0o644)
	}
	for _, v := range []string{"v1.0.0", "v1.0.1"} {
		for name, body := range demoRelease(v) {
			if err := publish(v+"_"+name, body); err != nil {
				return err
			}
		}
	}
	if err := publish("version", "v1.0.1\n"); err != nil {
		return err
	}

	h, err := serve.Handler(www, serve.Options{Log: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()

	app := agent.App{
		Host: "http://" + ln.Addr().String(), Project: "sample", Files: []string{"main.py", "lib/util.py"},
		UseVersionPrefix: true, AppDir: filepath.Join(tmp, "app"), StateRoot: filepath.Join(tmp, "state"),
	}
	app.ApplyDefaults()
	if err := app.Validate(); err != nil {
		return err
	}
	a, err := agent.New(app, agent.Options{Log: log, UserAgent: userAgent(nil), RuntimeDir: filepath.Join(tmp, "run")})
	if err != nil {
		return err
	}
	g.printf("A web server on %s publishes project %q in micropython-ota's layout:\n", app.Host, app.Project)
	g.printf("  sample/version = v1.0.1, sample/v1.0.0_main.py, sample/v1.0.1_lib/util.py, ...\n")
	g.printf("The app lives in %s; ota-agent keeps its state in %s.\n\n", app.AppDir, app.StateDir())

	step := func(n int, what string) (agent.Result, error) {
		res, err := a.Update(ctx)
		outcome := ""
		switch {
		case err != nil:
			outcome = fmt.Sprintf("update failed (exit %d): %v", codeOf(err), err)
		case res.Updated:
			outcome = fmt.Sprintf("installed %s (%d files", res.Remote, len(app.Files))
			if res.Installed != "" {
				outcome += ", was " + res.Installed
			}
			outcome += ")"
		default:
			outcome = fmt.Sprintf("up to date at %s", res.Installed)
		}
		g.printf("%d. %s\n   -> %s; %d request(s)\n", n, what, outcome, res.Requests)
		return res, err
	}
	if _, err := step(1, "First run: nothing is installed, the server says v1.0.1."); err != nil {
		return err
	}
	if err := demoShow(g, app); err != nil {
		return err
	}
	if _, err := step(2, "Run again: the same version is published."); err != nil {
		return err
	}
	if err := publish("version", "v1.0.0\n"); err != nil {
		return err
	}
	if _, err := step(3, "The operator writes v1.0.0 into version: an older tag is an update too (rollback)."); err != nil {
		return err
	}
	if err := demoShow(g, app); err != nil {
		return err
	}
	if err := publish("v1.0.2_main.py", demoRelease("v1.0.2")["main.py"]); err != nil {
		return err
	}
	if err := publish("version", "v1.0.2\n"); err != nil {
		return err
	}
	before, _ := os.ReadFile(filepath.Join(app.AppDir, "lib/util.py"))
	if _, err := step(4, "The operator publishes v1.0.2 but forgets v1.0.2_lib/util.py."); err == nil {
		return fmt.Errorf("demo: the broken release v1.0.2 was installed")
	}
	after, _ := os.ReadFile(filepath.Join(app.AppDir, "lib/util.py"))
	st, err := agent.StatusOf(app, "")
	if err != nil {
		return err
	}
	if string(before) != string(after) || st.Version != "v1.0.0" {
		return fmt.Errorf("demo: a failed update changed the app (installed %s)", st.Version)
	}
	g.printf("   All or nothing: the app is unchanged and still runs %s; the next run retries.\n\n", st.Version)
	g.printf("Done. On a board: put the app in /etc/ota-agent/config.toml and run `ota-agent update` at boot\n")
	g.printf("and `ota-agent run` as a service (see the README).\n")
	if !keep {
		g.printf("Removed %s.\n", tmp)
	}
	return nil
}

// demoShow prints the app dir as the app would see it.
func demoShow(g *globals, app agent.App) error {
	b, err := os.ReadFile(filepath.Join(app.AppDir, "lib/util.py"))
	if err != nil {
		return err
	}
	g.printf("   %s/lib/util.py now says: %s", app.AppDir, b)
	return nil
}
