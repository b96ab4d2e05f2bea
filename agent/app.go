package agent

import (
	"time"

	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
)

// Defaults that a config file or flag may override.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultMaxFileSize  = 1 << 30 // 1 GiB: larger than any app release we expect on a Pi
	DefaultKeepReleases = 2
	DefaultStateRoot    = "/var/lib/ota-agent"
	// DefaultMinRate and DefaultMinRateWindow cut a transfer that averages
	// below 1 KiB/s over a minute: a trickle that would hold a check for
	// ever, never a slow but real link (2G data moves ten times as much).
	DefaultMinRate       = 1 << 10
	DefaultMinRateWindow = time.Minute
)

// Limits on what a config file or flag may ask for.
const (
	// MinInterval is the shortest check interval (the daemon's, an app's,
	// --interval): a shorter one only loads the server. Smaller values are
	// configuration errors, never silently raised.
	MinInterval = time.Second
	// MinRateWindowFloor is the shortest min_rate_window: over less, the
	// jitter of a real link looks like a trickle.
	MinRateWindowFloor = time.Second
)

// Reset kinds.
const (
	ResetNone = "none"
	ResetSoft = "soft"
	ResetHard = "hard"
)

// App is one managed application, as the configuration describes it. The
// command line fills it from config.toml or from flags; Validate checks it.
type App struct {
	Name              string        // unique, path-safe; default: Project
	Host              string        // http(s)://host[:port][/base]
	Project           string        // directory on the server
	Files             []string      // release files, relative to AppDir
	UseVersionPrefix  bool          // "<v>_<file>" (true) or "<v>/<file>"
	AppDir            string        // where the app's files live
	StateRoot         string        // the app's state is StateRoot/Name
	Install           store.Mode    // store.InPlace (default) or store.Symlink
	Reset             string        // ResetNone, ResetSoft or ResetHard
	Unit              string        // systemd unit of the app, for soft resets; see reset.CheckUnitName
	SystemdBus        reset.Bus     // reset.BusSystem (default) or reset.BusUser
	HardReset         reset.Method  // reset.MethodReboot (default) or reset.MethodWatchdog
	WatchdogDevice    string        // for reset.MethodWatchdog; default reset.DefaultWatchdogDevice
	Timeout           time.Duration // bounds each wait, not a whole transfer
	User              string        // Basic auth user
	Password          string        // Basic auth password (never logged)
	CAFile            string        // extra CA bundle (PEM) for https
	AllowInsecureAuth bool          // allow Basic auth over plain http
	MaxFileSize       int64         // per-file size cap in bytes
	KeepReleases      int           // releases kept on disk for rollback
	Interval          time.Duration // daemon check interval (0: the global one; else at least MinInterval)
	// MinRate (bytes per second) and MinRateWindow: a transfer that brings
	// fewer than MinRate*MinRateWindow bytes in any MinRateWindow is cut
	// (ErrUnreachable). MinRate 0 turns the check off.
	MinRate       int64
	MinRateWindow time.Duration
	// PublicKeys are minisign public keys (the base64 line of a .pub
	// file): set, every release needs a manifest signed by one of them.
	PublicKeys []string
	// Trial is how long a switched release must stay healthy before it is
	// committed (0: at once; the config's default is DefaultTrial). The
	// unit must be active within StartTimeout; HealthCommand (argv, no
	// shell) and HealthURL must pass at the end of the trial, each within
	// HealthTimeout, retried until Trial+HealthGrace. OnFailure says what
	// a failed trial does; MaxBootAttempts how many boots a trial may see.
	Trial           time.Duration
	StartTimeout    time.Duration
	HealthCommand   []string
	HealthURL       string
	HealthTimeout   time.Duration
	HealthGrace     time.Duration
	OnFailure       string // OnFailureRollback (default) or OnFailureKeep
	MaxBootAttempts int
}

// StateDir is the directory that holds this app's state.json, lock,
// staging/ and releases/.
func (a *App) StateDir() string { return a.StateRoot + "/" + a.Name }
