package main

import (
	"context"
	"strings"

	"github.com/ota-agent/ota-agent/agent"
)

func init() {
	commands["commit"] = command{cmdCommit, "end the trial of each app's new release as healthy, by hand"}
	commands["rollback"] = command{cmdRollback, "switch an app back to a kept release (--to VERSION; default the previous one)"}
	commands["retry"] = command{cmdRetry, "clear an app's bad versions, so they are installed again"}
}

func cmdCommit(ctx context.Context, g *globals, args []string) error {
	a := newAppsCmd(g, "commit", "Ends the trial of each app's new release as healthy.")
	cfg, err := a.parse(g, args)
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

func cmdRollback(ctx context.Context, g *globals, args []string) error {
	a := newAppsCmd(g, "rollback", "Switches each app back to a kept release, stopping and starting its unit; the release it leaves is marked bad until `ota-agent retry`.")
	to := a.fs.String("to", "", "the kept `VERSION` to go back to (default: the release before the installed one)")
	cfg, err := a.parse(g, args)
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

func cmdRetry(ctx context.Context, g *globals, args []string) error {
	a := newAppsCmd(g, "retry", "Clears each app's bad versions: the next update installs them again if the server names them.")
	cfg, err := a.parse(g, args)
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
