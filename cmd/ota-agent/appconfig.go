package main

import (
	"fmt"
	"path/filepath"
	"reflect"
	"time"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
)

// appConfig is one app as the configuration gives it: an [[app]] table as
// written, or the app flags (appFlags.config fills it), so that both go
// through one builder, appConfig.app. Durations and sizes are kept raw so
// a bad value is reported with its key; pointers and nil tell an explicit
// zero from an absent key; an empty string is an absent key.
type appConfig struct {
	Name              string   `toml:"name"`
	Host              string   `toml:"host"`
	Project           string   `toml:"project"`
	Files             []string `toml:"files"`
	UseVersionPrefix  *bool    `toml:"use_version_prefix"`
	AppDir            string   `toml:"app_dir"`
	StateDir          string   `toml:"state_dir"`
	Install           string   `toml:"install"`
	Reset             string   `toml:"reset"`
	Unit              string   `toml:"unit"`
	SystemdBus        string   `toml:"systemd_bus"`
	HardReset         string   `toml:"hard_reset"`
	WatchdogDevice    string   `toml:"watchdog_device"`
	Timeout           string   `toml:"timeout"`
	User              string   `toml:"user"`
	Password          string   `toml:"password"`
	PasswordFile      string   `toml:"password_file"`
	CAFile            string   `toml:"ca_file"`
	AllowInsecureAuth bool     `toml:"allow_insecure_auth"`
	MaxFileSize       any      `toml:"max_file_size"` // integer bytes or "512MiB"
	KeepReleases      *int     `toml:"keep_releases"`
	Interval          string   `toml:"interval"`
	MinRate           any      `toml:"min_rate"` // integer bytes per second or "1KiB"
	MinRateWindow     string   `toml:"min_rate_window"`
	PublicKeys        []string `toml:"public_keys"` // nil: the global public_keys
	Trial             string   `toml:"trial"`
	StartTimeout      string   `toml:"start_timeout"`
	HealthCommand     []string `toml:"health_command"`
	HealthURL         string   `toml:"health_url"`
	HealthTimeout     string   `toml:"health_timeout"`
	HealthGrace       string   `toml:"health_grace"`
	OnFailure         string   `toml:"on_failure"`
	MaxBootAttempts   *int     `toml:"max_boot_attempts"`
}

// appKeys are the keys of an [[app]] table, for suggestions.
var appKeys = tomlKeys(reflect.TypeFor[appConfig]())

// app turns one app's configuration into a validated agent.App. It is the
// one builder of an app, from a config file or from flags: strings become
// typed values here (store.Mode, reset.Bus, reset.Method, durations and
// sizes), defaults apply, and the app is validated on its own (the checks
// across apps are agent.ValidateApps'), so a file and flags that say the
// same give the same app. stateRoot is the global state_dir, which the
// app's own state_dir overrides. Relative password_file and ca_file paths
// are taken from configDir; "" keeps them as given (flags: the working
// directory). Errors are *agent.ConfigError keyed by the config file's key
// ("timeout"); the caller adds the app and line, or renames the key to its
// flag.
func (c *appConfig) app(stateRoot, configDir string) (agent.App, error) {
	bad := func(key, format string, args ...any) (agent.App, error) {
		return agent.App{}, &agent.ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	a := agent.App{
		Name: c.Name, Host: c.Host, Project: c.Project, Files: c.Files, UseVersionPrefix: true,
		AppDir: c.AppDir, StateRoot: stateRoot, Install: store.Mode(c.Install), Reset: c.Reset, Unit: c.Unit,
		SystemdBus: reset.Bus(c.SystemdBus), HardReset: reset.Method(c.HardReset), WatchdogDevice: c.WatchdogDevice,
		User: c.User, CAFile: inDir(configDir, c.CAFile), AllowInsecureAuth: c.AllowInsecureAuth,
		Trial: agent.DefaultTrial, HealthCommand: c.HealthCommand, HealthURL: c.HealthURL, OnFailure: c.OnFailure,
	}
	a.PublicKeys = c.PublicKeys
	if c.UseVersionPrefix != nil {
		a.UseVersionPrefix = *c.UseVersionPrefix
	}
	if c.StateDir != "" {
		a.StateRoot = c.StateDir
	}
	var timeout, interval, window time.Duration
	var maxSize, minRate int64
	var err error
	if c.Timeout != "" {
		if timeout, err = parseDuration(c.Timeout); err != nil {
			return bad("timeout", "%v", err)
		}
	}
	if c.Interval != "" {
		if interval, err = parseInterval(c.Interval); err != nil {
			return bad("interval", "%v", err)
		}
	}
	if c.MinRateWindow != "" {
		if window, err = parseDuration(c.MinRateWindow); err != nil {
			return bad("min_rate_window", "%v", err)
		}
	}
	if maxSize, err = sizeValue(c.MaxFileSize, "512MiB"); err != nil {
		return bad("max_file_size", "%v", err)
	}
	if minRate, err = sizeValue(c.MinRate, "1KiB"); err != nil {
		return bad("min_rate", "%v", err)
	}
	// The trial's durations, in key order so that the first bad one is
	// the one reported; given ones go in after the defaults, as above.
	trial := []struct {
		key, raw string
		dst      *time.Duration
		v        time.Duration
	}{
		{key: "trial", raw: c.Trial, dst: &a.Trial},
		{key: "start_timeout", raw: c.StartTimeout, dst: &a.StartTimeout},
		{key: "health_timeout", raw: c.HealthTimeout, dst: &a.HealthTimeout},
		{key: "health_grace", raw: c.HealthGrace, dst: &a.HealthGrace},
	}
	for i := range trial {
		if trial[i].raw == "" {
			continue
		}
		if trial[i].v, err = parseDuration(trial[i].raw); err != nil {
			return bad(trial[i].key, "%v", err)
		}
	}
	if c.Password != "" && c.PasswordFile != "" {
		return bad("password_file", "password and password_file are both set; use one")
	}
	a.Password = c.Password
	if err := readPassword(&a, inDir(configDir, c.PasswordFile)); err != nil {
		return agent.App{}, err
	}
	a.ApplyDefaults()
	// Numbers given go in after the defaults, so that an explicit 0 is
	// refused by Validate rather than replaced.
	if c.Timeout != "" {
		a.Timeout = timeout
	}
	if c.Interval != "" {
		a.Interval = interval
	}
	if c.MaxFileSize != nil {
		a.MaxFileSize = maxSize
	}
	if c.KeepReleases != nil {
		a.KeepReleases = *c.KeepReleases
	}
	if c.MinRate != nil {
		a.MinRate = minRate // 0 turns the check off
	}
	if c.MinRateWindow != "" {
		a.MinRateWindow = window
	}
	for _, d := range trial {
		if d.raw != "" {
			*d.dst = d.v
		}
	}
	if c.MaxBootAttempts != nil {
		a.MaxBootAttempts = *c.MaxBootAttempts
	}
	// Each app on its own first, so an error finds its app even when the
	// name is the problem.
	if err := a.Validate(); err != nil {
		return agent.App{}, err
	}
	return a, nil
}

// inDir is path taken from dir when it is relative and dir is set.
func inDir(dir, path string) string {
	if path == "" || dir == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// sizeValue reads a size key written as an integer or a string like
// example; nil (the key is absent) is 0.
func sizeValue(v any, example string) (int64, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int64:
		return v, nil
	case string:
		return parseSize(v)
	}
	return 0, fmt.Errorf("want an integer number of bytes or a string like %q", example)
}
