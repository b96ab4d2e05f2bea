package main

import (
	"context"
	"flag"

	"github.com/ota-agent/ota-agent/agent"
)

func init() {
	commands["check"] = command{cmdCheck, "say whether an update is available (exit 100 if so); never downloads"}
}

func cmdCheck(ctx context.Context, g *globals, args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.Usage = func() {
		g.printf("usage: ota-agent check [flags] [APP...]\n\nAsks each app's server for its version; exits 100 when any app has an update.\n\n")
		fs.PrintDefaults()
	}
	var c commonFlags
	c.register(fs)
	if err := parse(fs, g, args); err != nil {
		return err
	}
	log, err := newLogger(g.stderr, c.logLevel)
	if err != nil {
		return err
	}
	cfg, err := loadApps(&c, fs.Args())
	if err != nil {
		return err
	}
	return forEachApp(ctx, cfg.Apps, log, func(ctx context.Context, app agent.App) error {
		a, err := agent.New(app, agent.Options{Log: log, UserAgent: userAgent(), RuntimeDir: cfg.RuntimeDir})
		if err != nil {
			return err
		}
		res, err := a.Check(ctx)
		if err != nil {
			return err
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
