package main

import (
	"context"
	"flag"

	"github.com/ota-agent/ota-agent/agent"
)

type checkOptions struct {
	apps *appsCmd
}

func checkFlags(fs *flag.FlagSet) runFunc {
	o := &checkOptions{apps: newAppsCmd(fs)}
	return func(ctx context.Context, g *globals, args []string) error { return runCheck(ctx, g, o, args) }
}

func runCheck(ctx context.Context, g *globals, o *checkOptions, args []string) error {
	a := o.apps
	cfg, err := a.setup(g, args)
	if err != nil {
		return err
	}
	log := a.log
	badUnits := verifyUnits(ctx, cfg.Apps, log)
	return forEachApp(ctx, cfg.Apps, log, func(ctx context.Context, app agent.App) error {
		if err := badUnits[app.Name]; err != nil {
			return err
		}
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
