package agent

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
)

// ApplyDefaults fills every unset field with its default. UseVersionPrefix
// is left alone: its default (true) cannot be told from an unset bool, so
// the loaders set it. Paths are cleaned, since a trailing slash on AppDir
// would make a symlink switch follow the link instead of replacing it.
func (a *App) ApplyDefaults() {
	if a.Name == "" {
		a.Name = a.Project
	}
	if a.Install == "" {
		a.Install = store.InPlace
	}
	if a.Reset == "" {
		a.Reset = ResetNone
		if a.Unit != "" {
			a.Reset = ResetSoft
		}
	}
	if a.SystemdBus == "" {
		a.SystemdBus = reset.BusSystem
	}
	if a.HardReset == "" {
		a.HardReset = reset.MethodReboot
	}
	if a.Timeout == 0 {
		a.Timeout = DefaultTimeout
	}
	if a.MaxFileSize == 0 {
		a.MaxFileSize = DefaultMaxFileSize
	}
	if a.KeepReleases == 0 {
		a.KeepReleases = DefaultKeepReleases
	}
	if a.MinRate == 0 {
		a.MinRate = DefaultMinRate
	}
	if a.MinRateWindow == 0 {
		a.MinRateWindow = DefaultMinRateWindow
	}
	if a.StartTimeout == 0 {
		a.StartTimeout = DefaultStartTimeout
	}
	if a.HealthTimeout == 0 {
		a.HealthTimeout = DefaultHealthTimeout
	}
	if a.HealthGrace == 0 {
		a.HealthGrace = DefaultHealthGrace
	}
	if a.OnFailure == "" {
		a.OnFailure = OnFailureRollback
	}
	if a.MaxBootAttempts == 0 {
		a.MaxBootAttempts = DefaultMaxBootAttempts
	}
	if a.StateRoot == "" {
		a.StateRoot = DefaultStateRoot
	}
	if a.AppDir != "" {
		a.AppDir = filepath.Clean(a.AppDir)
	}
	a.StateRoot = filepath.Clean(a.StateRoot)
}

// Validate checks one app after ApplyDefaults. Every problem is reported as
// a *ConfigError whose Key is the config file's key ("app_dir", "files");
// the first one found is returned. Validate reads no files and never puts the
// password into a message.
func (a *App) Validate() error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{App: a.Name, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	if a.Project == "" {
		return bad("project", "missing: the directory of the app on the server")
	}
	if err := wire.CheckTag(a.Name); err != nil {
		// The name is unsafe, so it is not repeated as the error's App.
		detail := strings.TrimPrefix(err.Error(), wire.ErrBadTag.Error()+": ")
		return &ConfigError{Key: "name", Msg: fmt.Sprintf(
			"not a safe name: %s (it names the state directory: [A-Za-z0-9][A-Za-z0-9._+-]*, at most %d bytes; the default is project)",
			detail, wire.MaxTagLen)}
	}
	if a.Host == "" {
		return bad("host", "missing: the server's http:// or https:// URL")
	}
	u, err := url.Parse(a.Host)
	if err != nil {
		// Only the inner error: the URL itself may hold credentials.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return bad("host", "not a URL: %v", err)
	}
	if u.User != nil {
		return bad("host", "has credentials in the URL; use user and password instead")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return bad("host", "%q is not an http:// or https:// URL", wire.Quote(a.Host))
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return bad("host", "%q has a query or fragment; give the base URL only", wire.Quote(a.Host))
	}
	if a.AppDir == "" {
		return bad("app_dir", "missing: the directory the app's files live in")
	}
	appDir := filepath.Clean(a.AppDir)
	if !filepath.IsAbs(appDir) {
		return bad("app_dir", "%q is not an absolute path", a.AppDir)
	}
	if appDir == "/" {
		return bad("app_dir", "must not be /")
	}
	if a.StateRoot == "" || !filepath.IsAbs(filepath.Clean(a.StateRoot)) {
		return bad("state_dir", "%q is not an absolute path", a.StateRoot)
	}
	if err := checkFiles(a.Files); err != nil {
		return bad("files", "%v", err)
	}
	if _, err := parseKeys(a.PublicKeys); err != nil {
		return bad("public_keys", "%v", err)
	}
	switch a.Install {
	case store.InPlace, store.Symlink:
	default:
		return bad("install", "%q is not %q or %q", a.Install, store.InPlace, store.Symlink)
	}
	switch a.Reset {
	case ResetNone, ResetHard:
	case ResetSoft:
		if a.Unit == "" {
			return bad("reset", "%q needs unit, the app's systemd unit to stop and start", ResetSoft)
		}
	default:
		return bad("reset", "%q is not %q, %q or %q", a.Reset, ResetNone, ResetSoft, ResetHard)
	}
	if a.Unit != "" {
		if err := reset.CheckUnitName(a.Unit); err != nil {
			return bad("unit", "%v", err)
		}
	}
	switch a.SystemdBus {
	case reset.BusSystem, reset.BusUser:
	default:
		return bad("systemd_bus", "%q is not %q or %q", string(a.SystemdBus), reset.BusSystem, reset.BusUser)
	}
	switch a.HardReset {
	case reset.MethodReboot, reset.MethodWatchdog:
	default:
		return bad("hard_reset", "%q is not %q or %q", a.HardReset, reset.MethodReboot, reset.MethodWatchdog)
	}
	if a.Timeout <= 0 {
		return bad("timeout", "%v is not positive", a.Timeout)
	}
	if a.MaxFileSize <= 0 {
		return bad("max_file_size", "%d is not positive", a.MaxFileSize)
	}
	if a.KeepReleases < 1 {
		return bad("keep_releases", "%d is less than 1", a.KeepReleases)
	}
	if a.Interval != 0 {
		if err := CheckInterval(a.Interval); err != nil {
			return bad("interval", "%v", err)
		}
	}
	if a.MinRate < 0 {
		return bad("min_rate", "%d is negative (0 turns the check off)", a.MinRate)
	}
	if a.MinRateWindow < MinRateWindowFloor {
		return bad("min_rate_window", "%v is below the minimum of %v", a.MinRateWindow, MinRateWindowFloor)
	}
	if err := a.validateTrial(bad); err != nil {
		return err
	}
	switch {
	case a.User != "" && a.Password == "":
		return bad("user", "user is set but no password (password, password_file or $CREDENTIALS_DIRECTORY/%s.password)", a.Name)
	case a.User == "" && a.Password != "":
		return bad("password", "password is set but no user")
	case a.User != "" && u.Scheme == "http" && !a.AllowInsecureAuth:
		return bad("host", "Basic auth over plain http sends the password in clear; use https or set allow_insecure_auth = true")
	}
	return nil
}

// CheckInterval refuses a check interval (the daemon's, an app's) below
// MinInterval. A smaller one is an error, never silently raised.
func CheckInterval(d time.Duration) error {
	if d < MinInterval {
		return fmt.Errorf("%v is below the minimum of %v", d, MinInterval)
	}
	return nil
}

// checkFiles refuses unsafe paths, duplicates, and a path that is both a file
// and the directory of another ("lib" and "lib/util.py").
func checkFiles(files []string) error {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if err := wire.CheckPath(f); err != nil {
			return err
		}
		if seen[f] {
			return fmt.Errorf("%q is listed twice", f)
		}
		seen[f] = true
	}
	for _, f := range files {
		for dir := f; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if seen[dir] {
				return fmt.Errorf("%q is a file, but %q needs it as a directory", dir, f)
			}
		}
	}
	return nil
}

// ValidateApps validates every app, then what the apps must not share: a
// name, or any overlap between their app_dirs and state directories (one
// app's files inside another's, or an app's state inside its own app_dir,
// where an update or a symlink switch would clobber it). The later app of a
// clashing pair is the one reported. Paths are compared with their
// symlinks resolved, and existing directories by device and inode, so an
// alias (a symlink, a bind mount) is no way around it; an app_dir that is
// a system directory (/, /usr, /etc, /boot, ...) is refused.
func ValidateApps(apps []App) error {
	type dir struct {
		app  int
		key  string // "app_dir" or "state_dir"
		path string
		id   fileID
		ok   bool // id is known: the directory exists
	}
	var dirs []dir
	names := make(map[string]bool, len(apps))
	for i := range apps {
		a := &apps[i]
		if err := a.Validate(); err != nil {
			return err
		}
		if err := a.checkSystemDir(); err != nil {
			return err
		}
		if names[a.Name] {
			return &ConfigError{App: a.Name, Key: "name", Msg: fmt.Sprintf("two apps are named %q", a.Name)}
		}
		names[a.Name] = true
		appDir := dir{app: i, key: "app_dir", path: a.appDirPath()}
		if a.Install != store.Symlink {
			appDir.id, appDir.ok = idOf(appDir.path)
		}
		stateDir := dir{app: i, key: "state_dir", path: resolvePath(a.StateDir(), false)}
		stateDir.id, stateDir.ok = idOf(stateDir.path)
		dirs = append(dirs, appDir, stateDir)
	}
	for j, d := range dirs {
		for _, e := range dirs[:j] {
			var rel string
			switch {
			case d.path == e.path, d.ok && e.ok && d.id == e.id:
				rel = "is also"
			case within(d.path, e.path):
				rel = "lies inside"
			case within(e.path, d.path):
				rel = "contains"
			default:
				continue
			}
			what := "the app_dir"
			if e.key == "state_dir" {
				what = "the state directory"
			}
			if e.app == d.app {
				what += " of this app"
			} else {
				what += fmt.Sprintf(" of app %q", apps[e.app].Name)
			}
			if d.path != e.path {
				what += " " + e.path
			}
			return &ConfigError{App: apps[d.app].Name, Key: d.key, Msg: fmt.Sprintf("%s %s %s", d.path, rel, what)}
		}
	}
	return nil
}

// within reports whether path is dir or lies below it. Both are clean.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// validateTrial checks the trial's keys.
func (a *App) validateTrial(bad func(key, format string, args ...any) error) error {
	for _, d := range []struct {
		key      string
		v        time.Duration
		positive bool
	}{{"trial", a.Trial, false}, {"start_timeout", a.StartTimeout, true}, {"health_timeout", a.HealthTimeout, true}, {"health_grace", a.HealthGrace, false}} {
		if d.v < 0 || d.positive && d.v == 0 {
			return bad(d.key, "%v is not positive", d.v)
		}
	}
	if a.OnFailure != OnFailureRollback && a.OnFailure != OnFailureKeep {
		return bad("on_failure", "%q is not %q or %q", a.OnFailure, OnFailureRollback, OnFailureKeep)
	}
	if a.MaxBootAttempts < 1 {
		return bad("max_boot_attempts", "%d is less than 1", a.MaxBootAttempts)
	}
	if len(a.HealthCommand) > 0 && a.HealthCommand[0] == "" {
		return bad("health_command", "the program (its first element) is empty")
	}
	if a.HealthURL != "" {
		u, err := url.Parse(a.HealthURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("health_url", "%q is not an http:// or https:// URL", wire.Quote(a.HealthURL))
		}
	}
	return nil
}
