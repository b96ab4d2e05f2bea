package main

import (
	"context"
	"flag"

	"github.com/ota-agent/ota-agent/agent"
)

type recoverOptions struct {
	apps *appsCmd
	wait waitFlag
}

func recoverFlags(fs *flag.FlagSet) runFunc {
	o := &recoverOptions{apps: newAppsCmd(fs)}
	fs.Var(&o.wait, "wait", "wait for the app's lock (--wait, or --wait DURATION) instead of failing")
	return func(ctx context.Context, g *globals, args []string) error { return runRecover(ctx, g, o, args) }
}

func runRecover(ctx context.Context, g *globals, o *recoverOptions, args []string) error {
	a, wait := o.apps, o.wait
	cfg, err := a.setup(g, args)
	if err != nil {
		return err
	}
	log := a.log
	return forEachApp(ctx, cfg.Apps, log, func(ctx context.Context, app agent.App) error {
		ag, err := agent.New(app, agent.Options{Log: log, LockWait: wait.d})
		if err != nil {
			return err
		}
		return ag.Recover(ctx)
	})
}
