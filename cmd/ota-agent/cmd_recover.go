package main

import (
	"context"

	"github.com/ota-agent/ota-agent/agent"
)

func init() {
	commands["recover"] = command{cmdRecover, "finish or undo a switch a crash interrupted (no network; run early at boot)"}
}

func cmdRecover(ctx context.Context, g *globals, args []string) error {
	a := newAppsCmd(g, "recover", "Finishes or undoes a switch that a crash or power cut interrupted. Needs no network; run early at boot.")
	var wait waitFlag
	a.fs.Var(&wait, "wait", "wait for the app's lock (--wait, or --wait=DURATION) instead of failing")
	cfg, err := a.parse(g, args)
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
