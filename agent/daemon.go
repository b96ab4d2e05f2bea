package agent

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// The service manager's notifications (sd_notify(3)) the daemon sends.
const (
	NotifyReady     = "READY=1"
	NotifyReloading = "RELOADING=1"
	NotifyStopping  = "STOPPING=1"
	NotifyWatchdog  = "WATCHDOG=1"
)

// Rebooter restarts the board after an app with reset "hard" switched
// (reset.Hard). shutdown closes when the process is told to stop (SIGTERM,
// SIGINT): once the reboot is asked for, that means it is under way, and
// Restart returns nil at once. Nothing else ends Restart early: no deadline,
// no reload.
type Rebooter interface {
	Restart(shutdown <-chan struct{}) error
}

// Job is one app as the daemon runs it.
type Job struct {
	App App
	// Interval is the app's check interval; 0: the Fleet's.
	Interval time.Duration
	// Options are for New; the daemon sets Heartbeat.
	Options Options
	// Reboot restarts the board after a switch that needs it (reset
	// "hard"); nil: none.
	Reboot Rebooter
}

// Fleet is what the daemon runs: every app, and the interval of those that
// set none.
type Fleet struct {
	Interval time.Duration
	Jobs     []Job
}

// Daemon checks every app of a Fleet on its own schedule, all at once, and
// keeps the service manager informed (systemd Type=notify): READY=1 once
// running, STATUS= with every app's version and next check, RELOADING=1
// and READY=1 around a reload, STOPPING=1 at the end, and WATCHDOG=1 at
// half the watchdog period, but only while every app is idle or visibly
// moving, so systemd kills and restarts a daemon whose check is wedged.
type Daemon struct {
	Log zerolog.Logger
	// Notify sends one notification to the service manager (sd_notify);
	// nil sends nothing. Its errors are logged at debug level.
	Notify func(state string) error
	// Watchdog is the service manager's watchdog period (WatchdogSec=);
	// 0: no pings.
	Watchdog time.Duration
	// Reload delivers requests to reread the configuration (SIGHUP).
	// Load then builds the new Fleet; on an error the daemon logs it and
	// keeps the Fleet it runs. With a nil Load the daemon never reloads.
	Reload <-chan os.Signal
	Load   func() (Fleet, error)
	// OnCheck, if set, is called after every check of an app (the
	// metrics textfile); it must not block for long.
	OnCheck func(RunStatus)

	mu   sync.Mutex
	apps map[string]*appState
}

// appState is one app as the daemon watches it: its phase and when it last
// showed a sign of life, for the watchdog; its status, for STATUS=.
type appState struct {
	phase   Phase
	last    time.Time
	timeout time.Duration
	status  string
}

// Run runs fleet until ctx ends (SIGTERM, SIGINT), then returns nil once
// every check has stopped. A reload stops every app's loop and starts the
// new Fleet's; a hard reset under way is not cut short by it: only the end
// of ctx tells a Rebooter that the reboot is under way.
func (d *Daemon) Run(ctx context.Context, fleet Fleet) error {
	if d.Watchdog > 0 {
		pinger := make(chan struct{})
		pctx, stop := context.WithCancel(ctx)
		go func() { d.pingWatchdog(pctx, d.Watchdog); close(pinger) }()
		defer func() { stop(); <-pinger }()
	}
	d.notify(NotifyReady)
	defer d.notify(NotifyStopping)
	for {
		runCtx, stop := context.WithCancel(ctx)
		done := d.start(runCtx, ctx.Done(), fleet)
		d.Log.Info().Int("apps", len(fleet.Jobs)).Dur("interval", fleet.Interval).Msg("daemon running")
	wait:
		select {
		case <-ctx.Done():
			stop()
			<-done
			return nil
		case <-d.Reload:
			if d.Load == nil {
				goto wait
			}
			next, err := d.Load()
			if err != nil {
				d.Log.Error().Err(err).Msg("reload failed: keeping the configuration in use")
				goto wait
			}
			d.notify(NotifyReloading)
			stop()
			<-done
			fleet = next
			d.notify(NotifyReady)
			d.Log.Info().Msg("configuration reloaded")
		}
	}
}

func (d *Daemon) notify(state string) {
	if d.Notify == nil {
		return
	}
	if err := d.Notify(state); err != nil {
		d.Log.Debug().Err(err).Msg("sd_notify")
	}
}

// start runs one loop per app until ctx ends; the returned channel closes
// when all ended. shutdown is what a hard reset waits on: the process's
// end, not ctx's (a reload).
func (d *Daemon) start(ctx context.Context, shutdown <-chan struct{}, fleet Fleet) <-chan struct{} {
	d.mu.Lock()
	d.apps = map[string]*appState{}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, job := range fleet.Jobs {
		st := &appState{phase: PhaseIdle, last: time.Now(), timeout: job.App.Timeout, status: job.App.Name + " starting"}
		d.mu.Lock()
		d.apps[job.App.Name] = st
		d.mu.Unlock()
		o := job.Options
		o.Heartbeat = func(p Phase) { d.beat(st, p) }
		a, err := New(job.App, o)
		if err != nil {
			d.Log.Error().Str("app", job.App.Name).Err(err).Msg("app not started")
			continue
		}
		interval := fleet.Interval
		if job.Interval > 0 {
			interval = job.Interval
		}
		wg.Go(func() {
			a.Run(ctx, Schedule{Interval: interval}, nil, func(r RunStatus) { d.report(shutdown, job, st, r) })
		})
	}
	d.notifyStatus()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

func (d *Daemon) beat(st *appState, p Phase) {
	d.mu.Lock()
	st.phase, st.last = p, time.Now()
	d.mu.Unlock()
}

func (d *Daemon) report(shutdown <-chan struct{}, job Job, st *appState, r RunStatus) {
	if r.NeedsReboot && job.Reboot != nil {
		if err := job.Reboot.Restart(shutdown); err != nil {
			d.Log.Error().Err(err).Str("app", r.App).Msg("hard reset failed")
		}
	}
	if d.OnCheck != nil {
		d.OnCheck(r)
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

func (d *Daemon) notifyStatus() {
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
// timeout plus slack, and a switch must end within SwitchTimeout. The stall
// timer aborts a silent transfer after the timeout, so only a wedged agent
// outlives these bounds. Otherwise it names the first app found stuck.
func (d *Daemon) healthy(now time.Time, slack time.Duration) (bool, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, st := range d.apps {
		limit := st.timeout + slack
		switch st.phase {
		case PhaseIdle:
			continue
		case PhaseSwitch:
			limit = SwitchTimeout + slack
		}
		if now.Sub(st.last) > limit {
			return false, name
		}
	}
	return true, ""
}

// pingWatchdog sends WATCHDOG=1 at half of wd while healthy, and withholds
// it when an app is wedged, so systemd restarts the daemon. It returns when
// ctx ends.
func (d *Daemon) pingWatchdog(ctx context.Context, wd time.Duration) {
	t := time.NewTicker(wd / 2)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if ok, app := d.healthy(now, wd/2); ok {
				d.notify(NotifyWatchdog)
				warned = false
			} else if !warned {
				d.Log.Error().Str("app", app).Msg("check shows no progress: withholding watchdog pings")
				warned = true
			}
		}
	}
}
