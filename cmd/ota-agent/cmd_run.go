package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/ota-agent/ota-agent/agent"
)

type runOptions struct {
	apps     *appsCmd
	interval time.Duration
}

func runFlags(fs *flag.FlagSet) runFunc {
	o := &runOptions{apps: newAppsCmd(fs)}
	o.apps.c.registerRebootGrace(fs)
	fs.DurationVar(&o.interval, "interval", 0, "check interval, at least 1s (default: the config's interval, else 15m)")
	return func(ctx context.Context, g *globals, args []string) error { return runRun(ctx, g, o, args) }
}

// runRun runs the daemon (agent.Daemon) until SIGTERM. SIGHUP reloads the
// configuration; a bad new one is reported and the old one kept.
func runRun(ctx context.Context, g *globals, o *runOptions, args []string) error {
	a, interval := o.apps, &o.interval
	var textfile metricsFile
	fleet := func(cfg *Config, err error) (agent.Fleet, error) {
		if err == nil && flagGiven(a.fs, "interval") {
			if err = agent.CheckInterval(*interval); err != nil {
				return agent.Fleet{}, &agent.ConfigError{Key: "--interval", Msg: err.Error()}
			}
			cfg.Interval = *interval
		}
		if err != nil {
			return agent.Fleet{}, err
		}
		textfile.set(cfg.MetricsTextfile)
		f := agent.Fleet{Interval: cfg.Interval}
		for _, app := range cfg.Apps {
			job := agent.Job{App: app, Interval: app.Interval, Options: agent.Options{
				Log: a.log, Reset: resetterFor(app, a.log), Unit: unitFor(app, a.log), UserAgent: userAgent(cfg), RuntimeDir: cfg.RuntimeDir,
			}}
			if app.Reset == agent.ResetHard {
				job.Reboot = hardResetFor(app, []string{app.Name}, cfg.RebootGrace, g.machine, a.log)
			}
			f.Jobs = append(f.Jobs, job)
		}
		return f, nil
	}
	f, err := fleet(a.setup(g, args))
	if err != nil {
		return err
	}
	// Said at start, so a wrong unit is found before release day; the
	// daemon keeps checking (the unit may be installed later).
	apps := make([]agent.App, len(f.Jobs))
	for i, j := range f.Jobs {
		apps[i] = j.App
	}
	for app, err := range verifyUnits(ctx, apps, a.log) {
		a.log.Error().Str("app", app).Msg(err.Error())
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wd, _ := daemon.SdWatchdogEnabled(false)
	d := &agent.Daemon{
		Log:      a.log,
		Notify:   func(state string) error { _, err := daemon.SdNotify(false, state); return err },
		Watchdog: wd,
		Reload:   hup,
		Load:     func() (agent.Fleet, error) { return fleet(a.load()) },
		OnCheck: func(r agent.RunStatus) {
			textfile.record(a.log, r.App, r.Installed, r.Result, r.Err)
		},
	}
	return d.Run(ctx, f)
}
