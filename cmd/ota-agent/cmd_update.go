package main

import (
	"context"
	"time"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/rs/zerolog"
)

func init() {
	commands["update"] = command{cmdUpdate, "bring apps to the published version (check, download, switch, reset)"}
}

func cmdUpdate(ctx context.Context, g *globals, args []string) error {
	a := newAppsCmd(g, "update", "Brings each app (all by default) to the version its server publishes.")
	var wait waitFlag
	a.fs.Var(&wait, "wait", "wait for another update of the same app to finish (--wait, or --wait=DURATION) instead of failing")
	boot := a.fs.Bool("boot", false, "at boot: give up after boot_deadline (exit 75) so an unreachable server never holds the app back")
	cfg, err := a.parse(g, args)
	if err != nil {
		return err
	}
	log := a.log
	if *boot {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.BootDeadline)
		defer cancel()
	}
	var reboot []string
	err = forEachApp(ctx, cfg.Apps, log, func(ctx context.Context, app agent.App) error {
		res, err := updateApp(ctx, app, log, wait.d, cfg.RuntimeDir)
		if err == nil && !res.Updated {
			// One line per run, so the boot unit's journal says why nothing changed.
			log.Info().Str("app", app.Name).Str("version", res.Installed).Msg("up to date")
		}
		if res.NeedsReboot {
			reboot = append(reboot, app.Name)
		}
		return err
	})
	if len(reboot) > 0 {
		// Every app is switched before the one reboot they share.
		if rerr := hardReset(ctx, cfg.Apps, reboot, cfg.RebootGrace, log); rerr != nil {
			log.Error().Err(rerr).Msg("hard reset failed")
			return exitCodeError{worst(codeOf(err), ExitFailed)}
		}
	}
	return err
}

func updateApp(ctx context.Context, app agent.App, log zerolog.Logger, wait time.Duration, runtimeDir string) (agent.Result, error) {
	a, err := agent.New(app, agent.Options{Log: log, Reset: resetterFor(app, log), UserAgent: userAgent(), LockWait: wait, RuntimeDir: runtimeDir})
	if err != nil {
		return agent.Result{App: app.Name}, err
	}
	return a.Update(ctx)
}

func userAgent() string { return "ota-agent/" + Version }
