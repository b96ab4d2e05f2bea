// Package agent runs the update cycle for one app: it asks the server which
// version to run, downloads a new release into staging while the app keeps
// running, and switches it in between a stop and a start of the app.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
	"github.com/rs/zerolog"
)

// Resetter restarts the app around a switch. Stop reports whether the app
// was running, so an update at boot (before the app's unit started) starts
// nothing; Start runs after the switch only if Stop found the app running.
type Resetter interface {
	Stop(ctx context.Context) (wasActive bool, err error)
	Start(ctx context.Context) error
}

// checker is a resetter that can tell, before any download, that it will
// be able to do its job (the unit exists).
type checker interface {
	Check(ctx context.Context) error
}

// Options configure an Agent.
type Options struct {
	Log       zerolog.Logger
	Reset     Resetter      // nil: switch only
	UserAgent string        // default "ota-agent"
	LockWait  time.Duration // how long Update waits for another holder of the app's lock
	// Heartbeat, if set, is called as a check moves through its phases and
	// whenever response bytes arrive (PhaseTransfer): the daemon's watchdog
	// pings only while every check is idle or visibly moving.
	Heartbeat func(Phase)
	// Progress, if set, is called as a release downloads: at its start,
	// as bytes arrive, after each file and at the end (a progress line).
	Progress func(Progress)
	// RuntimeDir, if set, receives each check's outcome (store.WriteStatus):
	// volatile, so routine checks never write to the SD card.
	RuntimeDir string
	// Unit is the app's systemd unit, whatever its reset: a trial watches
	// it and a rollback restarts it. nil: the app has none.
	Unit Unit
	// Boot says the app has not started yet (update --boot): a switch
	// leaves its trial open for the daemon to judge once the app runs.
	Boot bool
	// Force installs the published release even when it is the installed
	// one (update --force): every file is fetched again and switched in,
	// which repairs an app dir that drifted (Verify).
	Force bool
}

// Unit is the app's systemd unit as a trial and a rollback use it
// (reset.Unit).
type Unit interface {
	Resetter
	prober
	failedResetter
}

// Phase is where a check is, for Heartbeat.
type Phase int

// Phases of a check, in order.
const (
	PhaseCheck    Phase = iota // talking to the server; bounded by the app's timeout
	PhaseTransfer              // bytes arrived
	PhaseSwitch                // stop, switch, start; bounded by switchTimeout
	PhaseIdle                  // the check is over
)

// Agent updates one app.
type Agent struct {
	app    App
	layout wire.Layout
	c      *client
	reset  Resetter
	log    zerolog.Logger
	wait   time.Duration
	rundir string
	beat   func(Phase)
	keys   []wire.PublicKey // public_keys: signed manifests only
	unit   Unit
	boot   bool
	force  bool
	// badSaid is the bad version whose refusal was last logged, so the
	// daemon says it once.
	badSaid string
	// prog follows a release's download for Options.Progress.
	prog *progress
	// last is the version the server last sent in full, with its validators.
	last struct {
		tag string
		validators
	}
}

// Result is what Check or Update found and did.
type Result struct {
	App         string `json:"app"`
	Installed   string `json:"installed"` // the version before the run ("" if none)
	Remote      string `json:"remote"`    // the version the server publishes
	Available   bool   `json:"available"` // Remote differs from Installed
	Updated     bool   `json:"updated"`   // Update switched to Remote
	NeedsReboot bool   `json:"needs_reboot,omitempty"`
	// Bad is set when Remote failed its trial here: it is not installed
	// while the server names it.
	Bad      *store.BadVersion `json:"bad,omitempty"`
	Requests int64             `json:"requests"`
	Bytes    int64             `json:"bytes"`
}

// New returns an Agent for app, which must have passed Validate.
func New(app App, o Options) (*Agent, error) {
	if o.UserAgent == "" {
		o.UserAgent = "ota-agent"
	}
	c, err := newClient(&app, o.UserAgent)
	if err != nil {
		return nil, err
	}
	if o.Heartbeat == nil {
		o.Heartbeat = func(Phase) {}
	}
	prog := &progress{report: o.Progress, client: c}
	c.progress = func() { o.Heartbeat(PhaseTransfer); prog.bytes() }
	keys, err := parseKeys(app.PublicKeys)
	if err != nil {
		return nil, &ConfigError{App: app.Name, Key: "public_keys", Msg: err.Error()}
	}
	a := &Agent{
		app:    app,
		layout: wire.Layout{Host: app.Host, Project: app.Project, Prefix: app.UseVersionPrefix},
		c:      c,
		reset:  o.Reset,
		log:    o.Log.With().Str("app", app.Name).Logger(),
		wait:   o.LockWait,
		rundir: o.RuntimeDir,
		beat:   o.Heartbeat,
		keys:   keys,
		unit:   o.Unit,
		boot:   o.Boot,
		force:  o.Force,
		prog:   prog,
	}
	return a, nil
}

// App returns the app this agent manages.
func (a *Agent) App() App { return a.app }

func (a *Agent) open() (*store.Store, error) {
	return store.Open(a.app.StateDir(), a.app.AppDir, store.Options{Mode: a.app.Install, KeepReleases: a.app.KeepReleases, Log: a.log})
}

// layoutError makes an app dir that cannot be switched where it is (a
// read-only mount) the configuration error it is.
func (a *Agent) layoutError(err error) error {
	if errors.Is(err, store.ErrLayout) {
		return &ConfigError{App: a.app.Name, Key: "app_dir", Msg: err.Error()}
	}
	return err
}

// remoteVersion fetches and validates the published version tag: the whole
// body of <project>/version, whitespace-trimmed, from a 200 answer only.
// Within one Agent the request is conditional once the server gave
// validators, so an unchanged version costs a 304 and no body.
func (a *Agent) remoteVersion(ctx context.Context) (string, error) {
	url := a.layout.VersionURL()
	var v *validators
	if a.last.tag != "" {
		v = &a.last.validators
	}
	resp, err := a.c.get(ctx, url, v)
	if errors.Is(err, errNotModified) {
		return a.last.tag, nil
	}
	if err != nil {
		return "", err
	}
	defer resp.Close()
	if resp.ContentLength > wire.MaxVersionBody {
		return "", fmt.Errorf("GET %s: version body is %d bytes, at most %d: not a version tag", url, resp.ContentLength, wire.MaxVersionBody)
	}
	b, err := io.ReadAll(io.LimitReader(resp, wire.MaxVersionBody+1))
	if err != nil {
		return "", err
	}
	if len(b) > wire.MaxVersionBody {
		return "", fmt.Errorf("GET %s: version body is over %d bytes: not a version tag", url, wire.MaxVersionBody)
	}
	tag := strings.TrimSpace(string(b))
	if err := wire.CheckTag(tag); err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	a.last.tag = tag
	a.last.validators = validators{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	return tag, nil
}

// Check asks the server for its version and compares it with the installed
// one. It never downloads a release and takes no lock (a check works while
// an update runs); it writes only its outcome, under the runtime dir.
func (a *Agent) Check(ctx context.Context) (res Result, err error) {
	res = Result{App: a.app.Name}
	r0, b0 := a.c.requests.Load(), a.c.bytes.Load()
	defer func() { a.count(&res, r0, b0); a.record(res, err) }()
	st, err := store.ReadState(a.app.StateDir())
	if err != nil {
		return res, err
	}
	res.Installed = st.Version
	res.Remote, err = a.remoteVersion(ctx)
	if err != nil {
		return res, err
	}
	// Any difference is an update, an older tag included: that is how
	// operators roll a fleet back. A release that failed its trial here is
	// not, while the server names it.
	res.Available = res.Remote != res.Installed
	if mark, ok := st.BadMark(res.Remote); ok && res.Available {
		res.Available, res.Bad = false, &mark
	}
	return res, nil
}

// record keeps the outcome of a check for `status`; failing to is only
// worth a debug line (a CLI run without /run/ota-agent, for one).
func (a *Agent) record(res Result, err error) {
	if a.rundir == "" || errors.Is(err, context.Canceled) {
		return
	}
	st := store.Status{At: time.Now().UTC(), Remote: res.Remote}
	switch {
	case errors.Is(err, ErrUnreachable):
		st.Outcome, st.Error = store.OutcomeUnreachable, err.Error()
	case err != nil:
		st.Outcome, st.Error = store.OutcomeFailed, err.Error()
	case res.Updated:
		st.Outcome = store.OutcomeUpdated
	case res.Available:
		st.Outcome = store.OutcomeAvailable
	default:
		st.Outcome = store.OutcomeUpToDate
	}
	if werr := store.WriteStatus(a.rundir, a.app.Name, st); werr != nil {
		a.log.Debug().Err(werr).Msg("last check not recorded")
	}
}

// count fills in the requests and body bytes of this run alone.
func (a *Agent) count(res *Result, r0, b0 int64) {
	res.Requests, res.Bytes = a.c.requests.Load()-r0, a.c.bytes.Load()-b0
}

// Recover finishes or undoes a switch that a crash interrupted.
func (a *Agent) Recover(ctx context.Context) error {
	return a.locked(ctx, func(s *store.Store) error { return a.countBoot(ctx, s, false) })
}

// Update brings the app to the published version: check, download every
// file into staging (the app keeps running), then stop the app, switch,
// start it. Nothing in the app changes unless every file arrived whole.
// When up to date it costs one request.
func (a *Agent) Update(ctx context.Context) (res Result, err error) {
	res = Result{App: a.app.Name}
	r0, b0 := a.c.requests.Load(), a.c.bytes.Load()
	defer func() { a.count(&res, r0, b0); a.record(res, err) }()
	s, err := a.open()
	if err != nil {
		return res, err
	}
	l, err := s.Lock(ctx, a.wait)
	if err != nil {
		return res, err
	}
	defer l.Unlock()
	if err := s.Recover(); err != nil {
		return res, fmt.Errorf("recover an interrupted switch: %w", err)
	}
	if err := a.countBoot(ctx, s, !a.boot); err != nil {
		return res, err
	}
	// A trial an earlier run left open (a crash, a reboot) is judged
	// first, once the app runs: not at boot, before it starts.
	if !a.boot {
		if err := a.judgeOpen(ctx, s); err != nil {
			return res, err
		}
	}
	st, err := s.State()
	if err != nil {
		return res, err
	}
	res.Installed = st.Version
	if res.Remote, err = a.remoteVersion(ctx); err != nil {
		return res, err
	}
	if res.Bad, err = a.refuseBad(s, st, res.Remote); err != nil || res.Bad != nil {
		return res, err
	}
	if res.Available = res.Remote != res.Installed || a.force; !res.Available {
		return res, nil // the caller says so, once
	}
	if a.force && res.Remote == res.Installed && a.app.Install == store.Symlink {
		return res, fmt.Errorf("a forced reinstall of %s is refused: in symlink mode releases/%s is the very directory the app runs, never rewritten in place; publish the release under a new tag to repair it", res.Remote, res.Remote)
	}
	if a.app.Reset == ResetHard {
		volatile, fsType, err := store.Volatile(a.app.StateDir())
		if err != nil {
			return res, err
		}
		if volatile {
			return res, &ConfigError{App: a.app.Name, Key: "reset", Msg: fmt.Sprintf(
				"hard reset refused: state dir %s is on %s, which does not survive a reboot, so every boot would reinstall and reboot again; put state_dir on persistent storage",
				a.app.StateDir(), fsType)}
		}
	}
	if c, ok := a.reset.(checker); ok {
		if err := c.Check(ctx); err != nil {
			return res, err
		}
	}
	// The manifest, if any, is checked (signature, replay) before anything
	// is downloaded; a configuration that cannot work (a missing unit, a
	// volatile state dir for a hard reset) is found before it is fetched.
	rel, err := a.release(ctx, st, res.Remote)
	if err != nil {
		return res, err
	}
	// What would stop the switch half-way is found before the download.
	if err := s.Preflight(rel.paths(a.app.Files)); err != nil {
		return res, a.layoutError(err)
	}
	a.log.Info().Str("from", orNone(res.Installed)).Str("to", res.Remote).Msg("update available: downloading")
	stage, err := s.Stage(res.Remote)
	if err != nil {
		return res, err
	}
	defer stage.Close()
	if err := a.stageRelease(ctx, stage, rel); err != nil {
		return res, err
	}
	var opts store.InstallOptions
	trial := a.onTrial()
	if trial {
		opts.Trial = &store.Trial{Version: res.Remote, From: res.Installed, Since: time.Now().UTC(), BootID: bootID(),
			RebootPending: a.app.Reset == ResetHard}
	}
	wasActive, err := a.switchTo(ctx, s, stage, opts)
	var notStarted *startError
	if trial && errors.As(err, &notStarted) {
		// Switched, but the new release did not start: its trial fails.
		a.log.Info().Str("from", orNone(res.Installed)).Str("to", res.Remote).Msg("installed")
		return res, a.settle(ctx, s, a.notStartedVerdict(ctx, notStarted.err), true)
	}
	if err != nil {
		return res, err
	}
	res.Updated = true
	res.NeedsReboot = a.app.Reset == ResetHard
	a.log.Info().Str("from", orNone(res.Installed)).Str("to", res.Remote).Int("files", len(rel.paths(a.app.Files))).Msg("installed")
	switch {
	case !trial:
	case a.app.Reset == ResetHard || a.boot:
		// The app starts after the reboot, or after this boot-time
		// update: the daemon judges the trial then.
		a.log.Info().Str("version", res.Remote).Msg("on trial: judged once the app runs")
	case a.reset != nil && !wasActive:
		// Its unit was stopped: nothing runs to judge.
		err = s.Edit(func(st *store.State) error { st.Trial = nil; return nil })
	default:
		v, jerr := a.judge(ctx)
		if jerr != nil {
			return res, fmt.Errorf("judge %s: %w (the trial stays open: the daemon or the next update judges it)", res.Remote, jerr)
		}
		err = a.settle(ctx, s, v, true)
		res.Updated = err == nil
	}
	return res, err
}

func (a *Agent) download(ctx context.Context, stage *store.Stage, tag, file string) error {
	if _, ok := stage.Have(file); ok {
		a.log.Debug().Str("file", file).Msg("reusing a complete download from an earlier run")
		return nil
	}
	url := a.layout.FileURL(tag, file)
	resp, d, err := a.fetchFile(ctx, stage, url, file)
	if err != nil {
		return err
	}
	defer resp.Close()
	a.prog.file(file, resp.ContentLength)
	if _, err := stage.Download(file, d); err != nil {
		if errors.Is(err, store.ErrTruncated) {
			err = fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		return fmt.Errorf("download %s: %w", url, err)
	}
	a.log.Debug().Str("url", url).Int64("bytes", resp.ContentLength).Msg("downloaded")
	return nil
}

// switchTo stops the app (if it runs), switches, and starts it again, so no
// running process ever sees a mix of two releases.
func (a *Agent) switchTo(ctx context.Context, s *store.Store, stage *store.Stage, o store.InstallOptions) (wasActive bool, err error) {
	a.beat(PhaseSwitch)
	// A signal must not leave the app stopped between Stop and Start.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), SwitchTimeout)
	defer cancel()
	if a.reset != nil {
		if wasActive, err = a.reset.Stop(ctx); err != nil {
			return false, err
		}
	}
	_, err = s.InstallWith(stage, o)
	err = a.layoutError(err)
	if wasActive {
		// After a failed switch this starts the old release again.
		if serr := a.reset.Start(ctx); serr != nil {
			if err == nil {
				return wasActive, &startError{serr}
			}
			return wasActive, errors.Join(err, serr)
		}
	}
	return wasActive, err
}

// startError is a switch that went through, after which the app's unit
// did not start on the new release.
type startError struct{ err error }

func (e *startError) Error() string {
	return "the new release was switched in but did not start: " + e.err.Error()
}
func (e *startError) Unwrap() error { return e.err }

// SwitchTimeout bounds stop, switch and start once a download is complete.
const SwitchTimeout = 3 * time.Minute

func orNone(v string) string {
	if v == "" {
		return "(none)"
	}
	return v
}
