package main

import (
	"context"
	"flag"
	"strings"

	"github.com/ota-agent/ota-agent/agent"
)

func commitFlags(fs *flag.FlagSet) runFunc {
	a := newAppsCmd(fs)
	return func(ctx context.Context, g *globals, args []string) error { return runCommit(ctx, g, a, args) }
}

func runCommit(ctx context.Context, g *globals, a *appsCmd, args []string) error {
	cfg, err := a.setup(g, args)
	if err != nil {
		return err
	}
	return forEachApp(ctx, cfg.Apps, a.log, func(ctx context.Context, app agent.App) error {
		ag, err := agent.New(app, agent.Options{Log: a.log})
		if err != nil {
			return err
		}
		v, err := ag.Commit(ctx)
		if err != nil {
			return err
		}
		g.printf("%s: %s committed\n", app.Name, v)
		return nil
	})
}

type rollbackOptions struct {
	apps *appsCmd
	to   string
}

func rollbackFlags(fs *flag.FlagSet) runFunc {
	o := &rollbackOptions{apps: newAppsCmd(fs)}
	fs.StringVar(&o.to, "to", "", "the kept `VERSION` to go back to (default: the release before the installed one)")
	return func(ctx context.Context, g *globals, args []string) error { return runRollback(ctx, g, o, args) }
}

func runRollback(ctx context.Context, g *globals, o *rollbackOptions, args []string) error {
	a, to := o.apps, &o.to
	cfg, err := a.setup(g, args)
	if err != nil {
		return err
	}
	return forEachApp(ctx, cfg.Apps, a.log, func(ctx context.Context, app agent.App) error {
		ag, err := agent.New(app, agent.Options{Log: a.log, Unit: unitFor(app, a.log)})
		if err != nil {
			return err
		}
		from, err := ag.RollbackTo(ctx, *to)
		if err != nil {
			return err
		}
		g.printf("%s: rolled back from %s; %s is marked bad until `ota-agent retry %s`\n", app.Name, from, from, app.Name)
		return nil
	})
}

func retryFlags(fs *flag.FlagSet) runFunc {
	a := newAppsCmd(fs)
	return func(ctx context.Context, g *globals, args []string) error { return runRetry(ctx, g, a, args) }
}

func runRetry(ctx context.Context, g *globals, a *appsCmd, args []string) error {
	cfg, err := a.setup(g, args)
	if err != nil {
		return err
	}
	return forEachApp(ctx, cfg.Apps, a.log, func(ctx context.Context, app agent.App) error {
		ag, err := agent.New(app, agent.Options{Log: a.log})
		if err != nil {
			return err
		}
		cleared, err := ag.Retry(ctx)
		if err != nil {
			return err
		}
		if len(cleared) == 0 {
			g.printf("%s: no bad versions\n", app.Name)
		} else {
			g.printf("%s: cleared %s\n", app.Name, strings.Join(cleared, ", "))
		}
		return nil
	})
}
