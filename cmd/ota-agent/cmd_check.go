package main

import (
	"context"
	"flag"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
)

type checkOptions struct {
	apps   *appsCmd
	asJSON bool
}

func checkFlags(fs *flag.FlagSet) runFunc {
	o := &checkOptions{apps: newAppsCmd(fs)}
	fs.BoolVar(&o.asJSON, "json", false, `print {"apps": [{"app", "from", "to", "outcome", "error"}]} on stdout (shape in the README)`)
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
	var textfile metricsFile
	textfile.set(cfg.MetricsTextfile)
	out := &results{on: o.asJSON}
	defer out.print(g)
	return forEachApp(ctx, cfg.Apps, log, func(ctx context.Context, app agent.App) error {
		res, err := checkApp(ctx, app, badUnits[app.Name], log, cfg.RuntimeDir, userAgent(cfg))
		textfile.recordResult(log, app.Name, res, err)
		out.add(app.Name, res, err)
		switch {
		case err != nil:
			return err
		case o.asJSON && res.Available:
			return errUpdateAvailable
		case o.asJSON:
			return nil
		case res.Bad != nil:
			g.printf("%s: %s, which the server names, failed its trial here (%s): not installed; `ota-agent retry %s` clears the mark\n",
				app.Name, res.Remote, res.Bad.Reason, app.Name)
			return nil
		case res.Available:
			g.printf("%s: update available: %s -> %s\n", app.Name, orNone(res.Installed), res.Remote)
			return errUpdateAvailable
		}
		g.printf("%s: up to date (%s)\n", app.Name, res.Installed)
		return nil
	})
}

// checkApp checks one app, unless its unit failed the check at start.
func checkApp(ctx context.Context, app agent.App, badUnit error, log zerolog.Logger, runtimeDir, ua string) (agent.Result, error) {
	if badUnit != nil {
		return agent.Result{App: app.Name}, badUnit
	}
	ag, err := agent.New(app, agent.Options{Log: log, UserAgent: ua, RuntimeDir: runtimeDir})
	if err != nil {
		return agent.Result{App: app.Name}, err
	}
	return ag.Check(ctx)
}

func orNone(v string) string {
	if v == "" {
		return "(none installed)"
	}
	return v
}
