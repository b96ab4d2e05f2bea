package main

import (
	"context"
	"flag"

	"github.com/ota-agent/ota-agent/agent"
)

func init() {
	commands["recover"] = command{cmdRecover, "finish or undo a switch a crash interrupted (no network; run early at boot)"}
}

func cmdRecover(ctx context.Context, g *globals, args []string) error {
	fs := flag.NewFlagSet("recover", flag.ContinueOnError)
	var c commonFlags
	var wait waitFlag
	c.register(fs)
	fs.Var(&wait, "wait", "wait for the app's lock (--wait, or --wait=DURATION) instead of failing")
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
		a, err := agent.New(app, agent.Options{Log: log, LockWait: wait.d})
		if err != nil {
			return err
		}
		return a.Recover(ctx)
	})
}
