package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/rs/zerolog"
)

// errBootDeadline marks what boot_deadline cut short: exit 75, as for an
// unreachable server, which the boot unit tolerates; the next run retries.
var errBootDeadline = errors.New("boot_deadline passed")

type updateOptions struct {
	apps   *appsCmd
	wait   waitFlag
	boot   bool
	asJSON bool
	force  bool
}

func updateFlags(fs *flag.FlagSet) runFunc {
	o := &updateOptions{apps: newAppsCmd(fs)}
	o.apps.c.registerRebootGrace(fs)
	fs.Var(&o.wait, "wait", "wait for another update of the same app to finish (--wait, or --wait DURATION) instead of failing")
	fs.BoolVar(&o.asJSON, "json", false, `print {"apps": [{"app", "from", "to", "outcome", "error"}]} on stdout (shape in the README)`)
	fs.BoolVar(&o.force, "force", false, "install the published version even when it is installed: every file is fetched again and switched in, which repairs what `ota-agent verify` reports")
	fs.BoolVar(&o.boot, "boot", false, "at boot: give up after boot_deadline (exit 75) so an unreachable server never holds the app back")
	return func(ctx context.Context, g *globals, args []string) error { return runUpdate(ctx, g, o, args) }
}

// runUpdate updates every app, one after another, then restarts the board
// once if any app with reset "hard" switched. With --boot the apps get
// boot_deadline in all; the hard reset does not: only SIGTERM or SIGINT
// (ctx) tells it that the reboot is under way.
func runUpdate(ctx context.Context, g *globals, o *updateOptions, args []string) error {
	a, wait, boot := o.apps, o.wait, &o.boot
	cfg, err := a.setup(g, args)
	if err != nil {
		return err
	}
	log := a.log
	appCtx := ctx
	if *boot {
		var cancel context.CancelFunc
		appCtx, cancel = context.WithTimeout(ctx, cfg.BootDeadline)
		defer cancel()
	}
	// cut names the boot deadline as the cause of err, if it was.
	cut := func(err error) error {
		if appCtx.Err() == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w (%v): %w", errBootDeadline, cfg.BootDeadline, err)
	}
	// A progress line per release on a terminal; never in a pipe or the
	// journal.
	var show func(agent.Progress)
	var line *progressLine
	if isTerminal(g.stderr) && !o.asJSON {
		line = newProgressLine(g.stderr)
		show = line.show
	}
	var textfile metricsFile
	textfile.set(cfg.MetricsTextfile)
	var reboot []agent.App
	out := &results{on: o.asJSON}
	defer out.print(g)
	err = forEachApp(ctx, cfg.Apps, log, func(_ context.Context, app agent.App) error {
		if err := appCtx.Err(); err != nil {
			err = cut(fmt.Errorf("not checked: %w", err))
			out.add(app.Name, agent.Result{}, err)
			return err
		}
		res, err := updateApp(appCtx, app, log, wait.d, cfg.RuntimeDir, userAgent(cfg), *boot, o.force, show)
		if line != nil {
			line.end()
		}
		textfile.recordResult(log, app.Name, res, err)
		if err == nil && res.Bad != nil {
			log.Warn().Str("app", app.Name).Str("version", res.Remote).Str("reason", res.Bad.Reason).
				Msg("the server names a release that failed its trial here: not installed (ota-agent retry clears the mark)")
		} else if err == nil && !res.Updated {
			// One line per run, so the boot unit's journal says why
			// nothing changed (agent.Update says nothing of it).
			log.Info().Str("app", app.Name).Str("version", res.Installed).Msg("up to date")
		}
		if res.NeedsReboot {
			reboot = append(reboot, app)
		}
		err = cut(err)
		out.add(app.Name, res, err)
		return err
	})
	if len(reboot) > 0 {
		// Every app is switched before the one reboot they share.
		names := make([]string, len(reboot))
		for i, app := range reboot {
			names[i] = app.Name
		}
		h := hardResetFor(reboot[0], names, cfg.RebootGrace, g.machine, log)
		if rerr := h.Restart(ctx.Done()); rerr != nil {
			log.Error().Err(rerr).Msg("hard reset failed")
			return exitCodeError{worst(codeOf(err), ExitFailed)}
		}
	}
	return err
}

func updateApp(ctx context.Context, app agent.App, log zerolog.Logger, wait time.Duration, runtimeDir, ua string, boot, force bool, show func(agent.Progress)) (agent.Result, error) {
	a, err := agent.New(app, agent.Options{Log: log, Reset: resetterFor(app, log), Unit: unitFor(app, log),
		UserAgent: ua, LockWait: wait, RuntimeDir: runtimeDir, Boot: boot, Force: force, Progress: show})
	if err != nil {
		return agent.Result{App: app.Name}, err
	}
	return a.Update(ctx)
}
