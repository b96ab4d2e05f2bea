package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/wire"
)

// doctorClockFloor is a time every sane clock is past: a board without a
// real-time clock that has not synced yet says 1970 (or its image's build
// date), and TLS certificates do not verify.
var doctorClockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// doctorMinFree is the space the agent keeps free on the state dir's
// filesystem (a download stops before less is left).
const doctorMinFree = 4 << 20

// packagedUnits are the units the package installs and enables.
var packagedUnits = []string{"ota-agent-recover.service", "ota-agent-boot.service", "ota-agent.service"}

type doctorOptions struct {
	apps *appsCmd
	env  doctorEnv
}

// doctorEnv is what doctor reads of the machine beyond the config: the
// clock, and the systemctl it asks whether the packaged units are enabled.
// Tests replace it.
type doctorEnv struct {
	now       func() time.Time
	systemctl string // "" looks it up in PATH
}

func doctorFlags(fs *flag.FlagSet) runFunc {
	o := &doctorOptions{apps: newAppsCmd(fs), env: doctorEnv{now: time.Now}}
	return func(ctx context.Context, g *globals, args []string) error { return runDoctor(ctx, g, o, args) }
}

// doctor collects the checklist's lines.
type doctor struct {
	g      *globals
	failed bool
}

// ok prints a passed check.
func (d *doctor) ok(what, format string, args ...any) {
	d.g.printf("ok    %s: %s\n", what, fmt.Sprintf(format, args...))
}

// fail prints a failed check: the problem, then the fix.
func (d *doctor) fail(what string, err error, fix string) {
	d.failed = true
	d.g.printf("FAIL  %s: %v\n", what, err)
	if fix != "" {
		d.g.printf("      fix: %s\n", fix)
	}
}

// runDoctor runs the checklist: the config, the clock, the packaged units,
// then for each app its server (reachable, TLS, credentials, a safe tag),
// its dirs (writable, on one mount or not, free space), its unit and bus,
// and its watchdog device. Exit 0 when every check passes, 1 otherwise.
// Nothing is written but a temporary runtime dir, removed at the end.
func runDoctor(ctx context.Context, g *globals, o *doctorOptions, args []string) error {
	d := &doctor{g: g}
	cfg, err := o.apps.setup(g, args)
	if err != nil {
		d.fail("config", err, "correct the key it names (the README's configuration reference lists them all)")
		return exitCodeError{ExitFailed}
	}
	d.ok("config", "valid, %d app(s)", len(cfg.Apps))
	d.clock(o.env.now())
	d.units(ctx, o.env.systemctl)
	tmp, err := os.MkdirTemp("", "ota-agent-doctor-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, app := range cfg.Apps {
		d.server(ctx, app, tmp, userAgent(cfg))
		d.dirs(app)
		d.unit(ctx, app)
		d.watchdog(app)
	}
	if d.failed {
		return exitCodeError{ExitFailed}
	}
	return nil
}

func (d *doctor) clock(now time.Time) {
	if now.Before(doctorClockFloor) {
		d.fail("clock", fmt.Errorf("it says %s, before %s", now.UTC().Format(time.RFC3339), doctorClockFloor.Format(time.DateOnly)),
			"sync it (timedatectl set-ntp true; systemd-timesyncd), or TLS certificates will not verify")
		return
	}
	d.ok("clock", "%s", now.UTC().Format(time.RFC3339))
}

// units asks systemctl whether the packaged units are enabled.
func (d *doctor) units(ctx context.Context, systemctl string) {
	if systemctl == "" {
		p, err := exec.LookPath("systemctl")
		if err != nil {
			d.fail("units", errors.New("no systemctl: not a systemd system"), "the units need systemd; run ota-agent update from cron otherwise")
			return
		}
		systemctl = p
	}
	out, _ := exec.CommandContext(ctx, systemctl, append([]string{"is-enabled"}, packagedUnits...)...).Output()
	states := strings.Fields(string(out))
	var off []string
	for i, u := range packagedUnits {
		if i >= len(states) || states[i] != "enabled" {
			state := "unknown"
			if i < len(states) {
				state = states[i]
			}
			off = append(off, u+" is "+state)
		}
	}
	if len(off) > 0 {
		d.fail("units", errors.New(strings.Join(off, ", ")), "systemctl enable "+strings.Join(packagedUnits, " "))
		return
	}
	d.ok("units", "%s enabled", strings.Join(packagedUnits, ", "))
}

// server asks the app's server for its version, as check does.
func (d *doctor) server(ctx context.Context, app agent.App, runtimeDir, ua string) {
	what := app.Name + ": server"
	ag, err := agent.New(app, agent.Options{UserAgent: ua, RuntimeDir: runtimeDir})
	if err != nil {
		d.fail(what, err, "correct the key it names")
		return
	}
	res, err := ag.Check(ctx)
	var se *agent.StatusError
	switch {
	case err == nil:
		d.ok(what, "%s answers; version %s (installed: %s)", app.Host, res.Remote, orNone(res.Installed))
	case errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden):
		d.fail(what, err, "the server refuses the credentials: check user and password_file (or LoadCredential=)")
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		d.fail(what, err, "no version file there: check host and project (and use_version_prefix)")
	case errors.Is(err, wire.ErrBadTag):
		d.fail(what, err, "the version file must hold one safe tag ([A-Za-z0-9][A-Za-z0-9._+-]*), not a page: check host (a captive portal?)")
	case errors.Is(err, agent.ErrUnreachable):
		if h := explain(err); h != err {
			d.fail(what, h, "")
			return
		}
		d.fail(what, err, "check host, the network and DNS (the board must reach "+app.Host+")")
	default:
		d.fail(what, explain(err), "")
	}
}

// dirs checks the app dir and the state dir: writable, on one mount or
// not (across mounts each release is copied), and the space left.
func (d *doctor) dirs(app agent.App) {
	what := app.Name + ": dirs"
	appDir, err := writableDir(app.AppDir, false)
	if err != nil {
		d.fail(what, fmt.Errorf("app_dir %s: %w", app.AppDir, err), "create it, or make it writable (ReadWritePaths= under ProtectSystem=strict)")
		return
	}
	stateDir, err := writableDir(app.StateDir(), true)
	if err != nil {
		d.fail(what, fmt.Errorf("state_dir %s: %w", app.StateDir(), err), "make it writable (StateDirectory= in the unit creates it)")
		return
	}
	var a, s unix.Stat_t
	var fsStat unix.Statfs_t
	if unix.Stat(appDir, &a) != nil || unix.Stat(stateDir, &s) != nil || unix.Statfs(stateDir, &fsStat) != nil {
		d.fail(what, errors.New("cannot stat them"), "")
		return
	}
	free := int64(fsStat.Bavail) * int64(fsStat.Bsize)
	if free < doctorMinFree {
		d.fail(what, fmt.Errorf("%s free on %s's filesystem, under the %s a download keeps free", sizeString(free), stateDir, sizeString(doctorMinFree)),
			"free space there, or set state_dir on a larger filesystem")
		return
	}
	mounts := "on one filesystem: a switch links, copies nothing"
	if a.Dev != s.Dev {
		mounts = "on different filesystems: each release is copied across (see The switch)"
	}
	d.ok(what, "%s and %s writable, %s; %s free", app.AppDir, app.StateDir(), mounts, sizeString(free))
}

// writableDir returns dir, or with missingOK the nearest existing parent
// (the agent creates the rest), once it is a directory the agent may write.
func writableDir(dir string, missingOK bool) (string, error) {
	for {
		fi, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) && missingOK && filepath.Dir(dir) != dir {
			dir = filepath.Dir(dir)
			continue
		}
		if err != nil {
			return "", err
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("%s is not a directory", dir)
		}
		if err := unix.Access(dir, unix.W_OK); err != nil {
			return "", fmt.Errorf("%s is not writable: %w", dir, err)
		}
		return dir, nil
	}
}

// unit checks that the app's unit exists and its bus answers.
func (d *doctor) unit(ctx context.Context, app agent.App) {
	if app.Unit == "" {
		return
	}
	what := app.Name + ": unit"
	u := &reset.Unit{Name: app.Unit, Bus: app.SystemdBus}
	if err := u.Check(ctx); err != nil {
		d.fail(what, explain(err), "")
		return
	}
	d.ok(what, "%s exists; the %s bus answers", app.Unit, app.SystemdBus)
}

// watchdog checks, for hard_reset = "watchdog", that the device is there
// and no other process holds it (systemd's RuntimeWatchdogSec=, a watchdog
// daemon). It never opens the device: opening arms it.
func (d *doctor) watchdog(app agent.App) {
	if app.Reset != agent.ResetHard || app.HardReset != reset.MethodWatchdog {
		return
	}
	what := app.Name + ": watchdog"
	dev := app.WatchdogDevice
	if dev == "" {
		dev = reset.DefaultWatchdogDevice
	}
	fi, err := os.Stat(dev)
	if err == nil && fi.Mode()&fs.ModeCharDevice == 0 {
		err = fmt.Errorf("%s is not a character device", dev)
	}
	if err != nil {
		d.fail(what, err, "load the watchdog driver before ota-agent-boot.service (bcm2835_wdt on a Pi; elsewhere list it in /etc/modules-load.d/)")
		return
	}
	if pid, comm := watchdogHolder(dev); pid > 0 {
		d.fail(what, fmt.Errorf("%s is held by PID %d (%s)", dev, pid, comm),
			`the agent will reboot through systemd instead; to use the watchdog, stop its holder (systemd's RuntimeWatchdogSec=, a watchdog daemon) or set hard_reset = "reboot"`)
		return
	}
	d.ok(what, "%s present and free", dev)
}

// watchdogHolder returns a process that has dev open, from /proc/*/fd.
func watchdogHolder(dev string) (int, string) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && target == dev {
				comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				return pid, strings.TrimSpace(string(comm))
			}
		}
	}
	return 0, ""
}

// sizeString is n bytes in MiB or GiB, for people.
func sizeString(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
