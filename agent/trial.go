package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
)

// A switched release is on trial: it must stay healthy for App.Trial, or
// the release it replaced comes back and it is marked bad. Healthy means
// the unit becomes active within StartTimeout and then keeps one run (one
// InvocationID, no restart, never failed) for the whole trial, and the
// health command and URL pass at its end, retried until Trial+HealthGrace.
// The trial is in state.json, so it survives a crash or a reboot: the
// daemon judges a trial it finds open, and after MaxBootAttempts boots with
// it open, Recover (at boot, before the app starts) rolls it back.

// Trial defaults.
const (
	DefaultTrial           = 30 * time.Second
	DefaultStartTimeout    = 90 * time.Second
	DefaultHealthTimeout   = 10 * time.Second
	DefaultHealthGrace     = 60 * time.Second
	DefaultMaxBootAttempts = 3
)

// What a failed trial does.
const (
	OnFailureRollback = "rollback" // reinstate the previous release (default)
	OnFailureKeep     = "keep"     // report, keep the release
)

// trialPoll is how often a trial looks at the unit; healthRetry how often a
// failed health check is tried again within the grace.
const (
	trialPoll   = 200 * time.Millisecond
	healthRetry = 2 * time.Second
)

// ErrRolledBack marks an update whose release failed its trial and was
// rolled back: the operation failed (exit 1), the app runs what it ran.
var ErrRolledBack = errors.New("rolled back")

// prober tells how the app's unit is doing (reset.Unit).
type prober interface {
	Probe(ctx context.Context) (reset.Health, error)
}

// failedResetter clears a unit's failed state before a start (reset.Unit).
type failedResetter interface {
	ResetFailed(ctx context.Context) error
}

var _ Unit = (*reset.Unit)(nil)

// onTrial reports whether a switch to a release is judged: a trial is
// set, and there is a unit or a health check to judge by.
func (a *Agent) onTrial() bool {
	return a.app.Trial > 0 && (a.unit != nil || len(a.app.HealthCommand) > 0 || a.app.HealthURL != "")
}

// verdict is the end of a trial: "" when healthy, else why not.
type verdict string

// judge watches the release on trial until it proves healthy or not. It
// returns an error only when it could not judge (ctx ended, D-Bus gone).
func (a *Agent) judge(ctx context.Context) (verdict, error) {
	p, hasUnit := prober(a.unit), a.unit != nil
	start := time.Now()
	var first reset.Health
	if hasUnit {
		var err error
		if first, err = a.waitActive(ctx, p, start); err != nil || first.ActiveState != "active" {
			return a.unitVerdict(first, start, err)
		}
	}
	active := time.Now()
	end, grace := active.Add(a.app.Trial), active.Add(a.app.Trial+a.app.HealthGrace)
	var last string
	for {
		a.beat(PhaseSwitch)
		now := time.Now()
		if hasUnit {
			h, err := p.Probe(ctx)
			if err != nil {
				return "", err
			}
			if stoppedCleanly(first, h) {
				return "", errStopped
			}
			if v := runChanged(first, h, now.Sub(active)); v != "" {
				return v, nil
			}
		}
		if !now.Before(end) {
			if last = a.healthChecks(ctx); last == "" {
				return "", nil
			}
			if !now.Before(grace) {
				return verdict(last), nil
			}
		}
		wait := trialPoll
		if !now.Before(end) {
			wait = healthRetry
		}
		if err := sleep(ctx, wait); err != nil {
			return "", err
		}
	}
}

// waitActive waits up to StartTimeout for the unit to be active; a failed
// unit ends the wait at once.
func (a *Agent) waitActive(ctx context.Context, p prober, start time.Time) (reset.Health, error) {
	for {
		a.beat(PhaseSwitch)
		h, err := p.Probe(ctx)
		if err != nil {
			return h, err
		}
		switch {
		case h.ActiveState == "active", h.ActiveState == "failed":
			return h, nil
		case time.Since(start) >= a.app.StartTimeout:
			return h, nil
		}
		if err := sleep(ctx, trialPoll); err != nil {
			return h, err
		}
	}
}

func (a *Agent) unitVerdict(h reset.Health, start time.Time, err error) (verdict, error) {
	if err != nil {
		return "", err
	}
	if h.ActiveState == "failed" {
		return verdict(fmt.Sprintf("%s failed at start%s", a.app.Unit, how(h))), nil
	}
	return verdict(fmt.Sprintf("%s was not active within %v (still %s/%s)", a.app.Unit, a.app.StartTimeout, h.ActiveState, h.SubState)), nil
}

// errStopped is a unit stopped cleanly during its trial (a shutdown, an
// operator's `systemctl stop`): no verdict either way, the trial stays open.
var errStopped = errors.New("the unit was stopped during its trial")

// runChanged says how the unit's run ended, if it did: failed, restarted
// by systemd, or replaced by another run.
func runChanged(first, now reset.Health, after time.Duration) verdict {
	switch {
	case now.ActiveState == "failed":
		return verdict(fmt.Sprintf("the unit failed after %v%s", after.Round(time.Second), how(now)))
	case now.NRestarts != first.NRestarts:
		return verdict(fmt.Sprintf("the unit restarted %d time(s) in %v%s", now.NRestarts-first.NRestarts, after.Round(time.Second), how(now)))
	case now.InvocationID != first.InvocationID:
		return verdict(fmt.Sprintf("the unit's run ended after %v (now %s/%s)%s", after.Round(time.Second), now.ActiveState, now.SubState, how(now)))
	case now.ActiveState != "active" && now.ActiveState != "reloading":
		return verdict(fmt.Sprintf("the unit is %s/%s after %v%s", now.ActiveState, now.SubState, after.Round(time.Second), how(now)))
	}
	return ""
}

// stoppedCleanly reports a unit that someone stopped (deactivating, or
// inactive with result "success" and no restart): at shutdown the app may
// stop before the agent hears of it, and that says nothing of the release.
func stoppedCleanly(first, now reset.Health) bool {
	if now.NRestarts != first.NRestarts || now.Result != "" && now.Result != "success" {
		return false
	}
	return now.ActiveState == "deactivating" || now.ActiveState == "inactive"
}

// notStartedVerdict says why a release switched in did not start: the
// start error, and how its main process ended when the unit tells.
func (a *Agent) notStartedVerdict(ctx context.Context, err error) verdict {
	v := fmt.Sprintf("it did not start: %v", err)
	if a.unit != nil {
		if h, perr := a.unit.Probe(ctx); perr == nil {
			v += how(h)
		}
	}
	return verdict(v)
}

func how(h reset.Health) string {
	var parts []string
	if e := h.Exited(); e != "" {
		parts = append(parts, "its process "+e)
	}
	if h.Result != "" && h.Result != "success" {
		parts = append(parts, "result "+h.Result)
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

// healthChecks runs the health command and URL; "" when both pass (or
// none is set), else what failed.
func (a *Agent) healthChecks(ctx context.Context) string {
	if len(a.app.HealthCommand) > 0 {
		if msg := a.healthCommand(ctx); msg != "" {
			return msg
		}
	}
	if a.app.HealthURL != "" {
		if msg := a.healthURL(ctx); msg != "" {
			return msg
		}
	}
	return ""
}

// healthCommand runs the argv without a shell, as the app dir's owner,
// in a process group of its own that is killed after HealthTimeout.
func (a *Agent) healthCommand(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, a.app.HealthTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.app.HealthCommand[0], a.app.HealthCommand[1:]...)
	cmd.Dir = a.app.AppDir
	cmd.SysProcAttr = healthSysProcAttr(a.app.AppDir)
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return ""
	}
	line := lastLine(out.String())
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return fmt.Sprintf("health_command did not finish within %v", a.app.HealthTimeout)
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		if line != "" {
			return fmt.Sprintf("health_command exited %d: %s", ee.ExitCode(), line)
		}
		return fmt.Sprintf("health_command exited %d", ee.ExitCode())
	}
	return fmt.Sprintf("health_command: %v", err)
}

// healthSysProcAttr runs the health command in its own process group, as
// the owner of the app dir when the agent is root.
func healthSysProcAttr(appDir string) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() != 0 {
		return attr
	}
	fi, err := os.Stat(appDir)
	if err != nil {
		return attr
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		attr.Credential = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
	}
	return attr
}

func killGroup(pid int) error { return syscall.Kill(-pid, syscall.SIGKILL) }

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// healthURL asks HealthURL for a 2xx within HealthTimeout.
func (a *Agent) healthURL(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, a.app.HealthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.app.HealthURL, nil)
	if err != nil {
		return fmt.Sprintf("health_url: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Sprintf("health_url %s: %v", a.app.HealthURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Sprintf("health_url %s answered %s", a.app.HealthURL, resp.Status)
	}
	return ""
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle ends the trial of the release st names, under the lock: commit
// when healthy; else roll back (OnFailureRollback, with something to go
// back to) or keep it and report. It returns ErrRolledBack (wrapped, with
// the reason) after a rollback, and an error naming the verdict when kept.
func (a *Agent) settle(ctx context.Context, s *store.Store, v verdict, restart bool) error {
	st, err := s.State()
	if err != nil || st.Trial == nil {
		return err
	}
	t := *st.Trial
	if v == "" {
		if err := s.Edit(func(st *store.State) error { st.Trial = nil; return nil }); err != nil {
			return err
		}
		a.log.Info().Str("version", t.Version).Msg("release healthy: committed")
		return nil
	}
	if a.app.OnFailure == OnFailureKeep || t.From == "" {
		if err := s.Edit(func(st *store.State) error { st.Trial = nil; return nil }); err != nil {
			return err
		}
		why := "on_failure is keep"
		if t.From == "" {
			why = "a first install has nothing to go back to"
		}
		return fmt.Errorf("release %s failed its trial (%s); kept, as %s", t.Version, v, why)
	}
	if err := a.rollback(ctx, s, t.Version, t.From, string(v), restart); err != nil {
		return fmt.Errorf("release %s failed its trial (%s); rolling back to %s failed: %w", t.Version, v, t.From, err)
	}
	return fmt.Errorf("%w: release %s failed its trial (%s); %s is back and %s is marked bad", ErrRolledBack, t.Version, v, t.From, t.Version)
}

// rollback switches from release bad back to the kept release to, as an
// update switches, and marks bad as bad with reason. With restart the app
// is started again after the switch even if the bad release left its unit
// failed (its failed state is reset first).
func (a *Agent) rollback(ctx context.Context, s *store.Store, bad, to, reason string, restart bool) error {
	stage, err := s.StageRelease(to)
	if err != nil {
		return err
	}
	defer stage.Close()
	a.log.Warn().Str("from", bad).Str("to", to).Str("reason", reason).Msg("rolling back")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), SwitchTimeout)
	defer cancel()
	u := a.unit
	if !restart {
		u = nil // at boot: the app has not started, and starts by itself
	}
	if u != nil {
		if _, err := u.Stop(ctx); err != nil {
			return err
		}
	}
	_, err = s.InstallWith(stage, store.InstallOptions{Rollback: &store.Rollback{From: bad, To: to, Reason: reason, At: time.Now().UTC()}})
	if u != nil {
		// The bad release may have left its unit failed, or hit the
		// start rate limit: clear that, then start the good one.
		if rerr := u.ResetFailed(ctx); rerr != nil {
			a.log.Debug().Err(rerr).Msg("reset-failed")
		}
		if serr := u.Start(ctx); serr != nil {
			return errors.Join(err, serr)
		}
	}
	return a.layoutError(err)
}

// refuseBad forgets the bad marks of versions the server no longer names
// (a later return to one is a new decision of the operator), and returns
// the mark of remote if it is marked: then nothing is downloaded.
func (a *Agent) refuseBad(s *store.Store, st store.State, remote string) (*store.BadVersion, error) {
	stale := false
	for _, b := range st.Bad {
		if b.Version != remote {
			stale = true
		}
	}
	if stale {
		err := s.Edit(func(st *store.State) error {
			st.Bad = slices.DeleteFunc(st.Bad, func(b store.BadVersion) bool { return b.Version != remote })
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	mark, ok := st.BadMark(remote)
	if !ok || remote == st.Version {
		a.badSaid = ""
		return nil, nil
	}
	if a.badSaid != remote {
		a.log.Warn().Str("version", remote).Str("reason", mark.Reason).
			Msg("the server names a release that failed its trial here: not installed while it does (ota-agent retry clears the mark)")
		a.badSaid = remote
	}
	return &mark, nil
}

// countBoot counts a boot that started with a trial open (not the reboot
// the agent asked for), and rolls the release back once it has seen
// MaxBootAttempts of them: a release that hangs or reboot-loops the board
// is undone before its app starts. restart says whether the app may be
// running (not at boot).
func (a *Agent) countBoot(ctx context.Context, s *store.Store, restart bool) error {
	st, err := s.State()
	if err != nil || st.Trial == nil {
		return err
	}
	boot := bootID()
	if boot == "" || st.Trial.BootID == boot {
		return nil
	}
	var t store.Trial
	err = s.Edit(func(st *store.State) error {
		if st.Trial.RebootPending {
			st.Trial.RebootPending = false
		} else {
			st.Trial.BootAttempts++
		}
		st.Trial.BootID = boot
		t = *st.Trial
		return nil
	})
	if err != nil || t.BootAttempts < a.app.MaxBootAttempts {
		return err
	}
	reason := fmt.Sprintf("%d boots with the trial open (max_boot_attempts %d)", t.BootAttempts, a.app.MaxBootAttempts)
	if a.app.OnFailure == OnFailureKeep || t.From == "" {
		a.log.Error().Str("version", t.Version).Str("reason", reason).Msg("release failed its trial; kept")
		return s.Edit(func(st *store.State) error { st.Trial = nil; return nil })
	}
	return a.rollback(ctx, s, t.Version, t.From, reason, restart)
}

// JudgeOpenTrial judges a trial that an earlier run left open (after a
// hard reset, an update at boot, or the daemon's own restart): the app
// is running now. It does nothing without one, or before the reboot the
// agent asked for. It holds the app's lock while it judges.
func (a *Agent) JudgeOpenTrial(ctx context.Context) error {
	return a.locked(ctx, func(s *store.Store) error {
		if err := a.countBoot(ctx, s, true); err != nil {
			return err
		}
		return a.judgeOpen(ctx, s)
	})
}

// judgeOpen judges the trial state.json has open, if any (not before the
// reboot the agent asked for), under the caller's lock.
func (a *Agent) judgeOpen(ctx context.Context, s *store.Store) error {
	st, err := s.State()
	if err != nil || st.Trial == nil || st.Trial.RebootPending {
		return err
	}
	a.log.Info().Str("version", st.Trial.Version).Msg("judging the release on trial")
	v, err := a.judge(ctx)
	if err != nil {
		return fmt.Errorf("judge %s: %w (the trial stays open)", st.Trial.Version, err)
	}
	return a.settle(ctx, s, v, true)
}

// bootID names this boot of the machine; "" where it cannot be read.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// locked runs fn with the app's store, under its lock, after Recover.
func (a *Agent) locked(ctx context.Context, fn func(*store.Store) error) error {
	s, err := a.open()
	if err != nil {
		return err
	}
	l, err := s.Lock(ctx, a.wait)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if err := s.Recover(); err != nil {
		return err
	}
	return fn(s)
}

// ErrNoTrial is returned by Commit when no release is on trial.
var ErrNoTrial = errors.New("no release is on trial")

// Commit ends the trial of the installed release as healthy, by hand.
func (a *Agent) Commit(ctx context.Context) (version string, err error) {
	err = a.locked(ctx, func(s *store.Store) error {
		return s.Edit(func(st *store.State) error {
			if st.Trial == nil {
				return ErrNoTrial
			}
			version, st.Trial = st.Trial.Version, nil
			return nil
		})
	})
	return version, err
}

// RollbackTo switches the app, by hand, to the kept release to (""; the
// one before the installed release), as a failed trial would: the release
// it leaves is marked bad until Retry.
func (a *Agent) RollbackTo(ctx context.Context, to string) (from string, err error) {
	err = a.locked(ctx, func(s *store.Store) error {
		st, err := s.State()
		if err != nil {
			return err
		}
		from = st.Version
		if to == "" {
			to = st.Previous
		}
		switch {
		case from == "":
			return errors.New("nothing is installed")
		case to == "":
			return fmt.Errorf("%s has no release before it to go back to", from)
		case to == from:
			return fmt.Errorf("%s is the installed release", to)
		}
		return a.rollback(ctx, s, from, to, "rolled back by hand", true)
	})
	return from, err
}

// Retry clears the app's bad marks, so the releases they name are tried
// again (a tag republished after a fix); it returns the versions cleared.
func (a *Agent) Retry(ctx context.Context) (cleared []string, err error) {
	err = a.locked(ctx, func(s *store.Store) error {
		return s.Edit(func(st *store.State) error {
			for _, b := range st.Bad {
				cleared = append(cleared, b.Version)
			}
			st.Bad = nil
			return nil
		})
	})
	return cleared, err
}
