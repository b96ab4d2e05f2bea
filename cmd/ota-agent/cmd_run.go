package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
)

func init() {
	commands["run"] = command{cmdRun, "the daemon: check every app at intervals and update it (systemd Type=notify)"}
}

// cmdRun checks every app every interval until SIGTERM. SIGHUP reloads the
// configuration; a bad new one is reported and the old one kept.
func cmdRun(ctx context.Context, g *globals, args []string) error {
	a := newAppsCmd(g, "run", "The daemon: checks every app at intervals and updates it. SIGHUP rereads the configuration.")
	interval := a.fs.Duration("interval", 0, "check interval (default: the config's interval, else 15m)")
	withFlags := func(cfg *Config, err error) (*Config, error) {
		if err == nil && flagGiven(a.fs, "interval") {
			if err = checkInterval(*interval); err != nil {
				return nil, &agent.ConfigError{Key: "--interval", Msg: err.Error()}
			}
			cfg.Interval = *interval
		}
		return cfg, err
	}
	cfg, err := withFlags(a.parse(g, args))
	if err != nil {
		return err
	}
	log := a.log
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d := newDaemon(log)
	wd, _ := daemon.SdWatchdogEnabled(false)
	if wd > 0 {
		go d.pingWatchdog(ctx, wd)
	}
	d.notify(daemon.SdNotifyReady)
	defer d.notify(daemon.SdNotifyStopping)
	for {
		runCtx, stop := context.WithCancel(ctx)
		done := d.start(runCtx, cfg)
		log.Info().Int("apps", len(cfg.Apps)).Dur("interval", cfg.Interval).Msg("daemon running")
	wait:
		select {
		case <-ctx.Done():
			stop()
			<-done
			return nil
		case <-hup:
			next, err := withFlags(a.load())
			if err != nil {
				log.Error().Err(err).Msg("reload failed: keeping the configuration in use")
				goto wait
			}
			d.notify(daemon.SdNotifyReloading)
			stop()
			<-done
			cfg = next
			d.notify(daemon.SdNotifyReady)
			log.Info().Msg("configuration reloaded")
		}
	}
}

// appState is one app as the daemon watches it: its phase and when it last
// showed a sign of life, for the watchdog; its status, for STATUS=.
type appState struct {
	phase   agent.Phase
	last    time.Time
	timeout time.Duration
	status  string
}

// daemonState tracks every app's health and status line.
type daemonState struct {
	log  zerolog.Logger
	mu   sync.Mutex
	apps map[string]*appState
}

func newDaemon(log zerolog.Logger) *daemonState {
	return &daemonState{log: log, apps: map[string]*appState{}}
}

func (d *daemonState) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		d.log.Debug().Err(err).Msg("sd_notify")
	}
}

// start runs one loop per app; the returned channel closes when all ended.
func (d *daemonState) start(ctx context.Context, cfg *Config) <-chan struct{} {
	d.mu.Lock()
	d.apps = map[string]*appState{}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, app := range cfg.Apps {
		st := &appState{phase: agent.PhaseIdle, last: time.Now(), timeout: app.Timeout, status: app.Name + " starting"}
		d.mu.Lock()
		d.apps[app.Name] = st
		d.mu.Unlock()
		a, err := agent.New(app, agent.Options{
			Log: d.log, Reset: resetterFor(app, d.log), UserAgent: userAgent(), RuntimeDir: cfg.RuntimeDir,
			Heartbeat: func(p agent.Phase) { d.beat(st, p) },
		})
		if err != nil {
			d.log.Error().Str("app", app.Name).Err(err).Msg("app not started")
			continue
		}
		interval := cfg.Interval
		if app.Interval > 0 {
			interval = app.Interval
		}
		wg.Go(func() {
			a.Run(ctx, agent.Schedule{Interval: interval}, nil, func(r agent.RunStatus) { d.report(ctx, cfg, st, r) })
		})
	}
	d.notifyStatus()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

func (d *daemonState) beat(st *appState, p agent.Phase) {
	d.mu.Lock()
	st.phase, st.last = p, time.Now()
	d.mu.Unlock()
}

func (d *daemonState) report(ctx context.Context, cfg *Config, st *appState, r agent.RunStatus) {
	if r.NeedsReboot {
		if err := hardReset(ctx, cfg.Apps, []string{r.App}, cfg.RebootGrace, d.log); err != nil {
			d.log.Error().Err(err).Str("app", r.App).Msg("hard reset failed")
		}
	}
	s := fmt.Sprintf("%s %s, next check %s", r.App, orNone(r.Installed), r.NextCheck.Local().Format("15:04"))
	if r.Err != nil {
		s = fmt.Sprintf("%s %s, check failed %d time(s), retry %s", r.App, orNone(r.Installed), r.Failures, r.NextCheck.Local().Format("15:04:05"))
	}
	d.mu.Lock()
	st.status = s
	d.mu.Unlock()
	d.notifyStatus()
	// The daemon now idles for an interval: hand the heap this check used
	// back to the kernel. Left alone, the runtime keeps up to its 4 MiB
	// minimum heap goal resident for good (the scavenger only returns
	// memory above that), and loading the system roots for https alone
	// fills it. The cost is a forced GC and scavenge per check: about 3 ms
	// of CPU on the benchmark VM (bench/README.md), nothing at 15m.
	debug.FreeOSMemory()
}

func (d *daemonState) notifyStatus() {
	d.mu.Lock()
	var parts []string
	for _, st := range d.apps {
		parts = append(parts, st.status)
	}
	d.mu.Unlock()
	sort.Strings(parts)
	d.notify("STATUS=" + strings.Join(parts, "; "))
}

// healthy reports whether every app is idle or visibly moving: a check
// must show a sign of life (a phase change or bytes) within its network
// timeout plus slack, and a switch must end within agent.SwitchTimeout.
// The stall timer aborts a silent transfer after the timeout, so only a
// wedged agent outlives these bounds.
func (d *daemonState) healthy(now time.Time, slack time.Duration) (bool, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, st := range d.apps {
		limit := st.timeout + slack
		switch st.phase {
		case agent.PhaseIdle:
			continue
		case agent.PhaseSwitch:
			limit = agent.SwitchTimeout + slack
		}
		if now.Sub(st.last) > limit {
			return false, name
		}
	}
	return true, ""
}

// pingWatchdog sends WATCHDOG=1 at half of WatchdogSec while healthy, and
// withholds it when an app is wedged, so systemd restarts the daemon.
func (d *daemonState) pingWatchdog(ctx context.Context, wd time.Duration) {
	t := time.NewTicker(wd / 2)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if ok, app := d.healthy(now, wd/2); ok {
				d.notify(daemon.SdNotifyWatchdog)
				warned = false
			} else if !warned {
				d.log.Error().Str("app", app).Msg("check shows no progress: withholding watchdog pings")
				warned = true
			}
		}
	}
}
