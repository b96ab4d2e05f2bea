package main

import (
	"context"

	"github.com/ota-agent/ota-agent/agent"
)

func init() {
	commands["check"] = command{cmdCheck, "say whether an update is available (exit 100 if so); never downloads"}
}

func cmdCheck(ctx context.Context, g *globals, args []string) error {
	a := newAppsCmd(g, "check", "Asks each app's server for its version; exits 100 when any app has an update. Never downloads, takes no lock.")
	cfg, err := a.parse(g, args)
	if err != nil {
		return err
	}
	log := a.log
	return forEachApp(ctx, cfg.Apps, log, func(ctx context.Context, app agent.App) error {
		ag, err := agent.New(app, agent.Options{Log: log, UserAgent: userAgent(), RuntimeDir: cfg.RuntimeDir})
		if err != nil {
			return err
		}
		res, err := ag.Check(ctx)
		if err != nil {
			return err
		}
		if res.Bad != nil {
			g.printf("%s: %s, which the server names, failed its trial here (%s): not installed; `ota-agent retry %s` clears the mark\n",
				app.Name, res.Remote, res.Bad.Reason, app.Name)
			return nil
		}
		if res.Available {
			g.printf("%s: update available: %s -> %s\n", app.Name, orNone(res.Installed), res.Remote)
			return errUpdateAvailable
		}
		g.printf("%s: up to date (%s)\n", app.Name, res.Installed)
		return nil
	})
}

func orNone(v string) string {
	if v == "" {
		return "(none installed)"
	}
	return v
}
