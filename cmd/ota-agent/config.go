package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
)

// Config is the whole configuration: global settings and the apps, with
// defaults applied and validated.
type Config struct {
	StateRoot    string        // global state_dir, default agent.DefaultStateRoot
	Interval     time.Duration // global interval, default agent.DefaultInterval
	BootDeadline time.Duration // global boot_deadline, default 2m
	RuntimeDir   string        // global runtime_dir, default store.DefaultRuntimeDir
	RebootGrace  time.Duration // global reboot_grace, default 90s
	// Identify is the global identify: "model" (default, also "") or "serial",
	// which adds the board's serial number to status and the User-Agent.
	Identify string
	// MetricsTextfile is the global metrics_textfile: the Prometheus
	// textfile written after each check; "" for none.
	MetricsTextfile string
	Apps            []agent.App
	// Warnings are worth telling the operator once per run, not errors: a
	// password in a file every user of the board can read.
	Warnings []string
}

const (
	defaultConfigPath   = "/etc/ota-agent/config.toml"
	defaultBootDeadline = 2 * time.Minute
	defaultRebootGrace  = 90 * time.Second
)

// fileConfig is config.toml as written: the global keys and the [[app]]
// tables. Durations are kept raw so a bad value is reported with its key
// and line.
type fileConfig struct {
	StateDir     string      `toml:"state_dir"`
	Interval     string      `toml:"interval"`
	BootDeadline string      `toml:"boot_deadline"`
	RuntimeDir   string      `toml:"runtime_dir"`
	RebootGrace  string      `toml:"reboot_grace"`
	Identify     string      `toml:"identify"`
	Metrics      string      `toml:"metrics_textfile"`
	PublicKeys   []string    `toml:"public_keys"` // the default of every app
	App          []appConfig `toml:"app"`
}

// globalKeys are the global keys, for suggestions: fileConfig's but app.
var globalKeys = slices.DeleteFunc(tomlKeys(reflect.TypeFor[fileConfig]()), func(k string) bool { return k == "app" })

// defaultConfig is the configuration before the file or flags say more.
func defaultConfig() *Config {
	return &Config{StateRoot: agent.DefaultStateRoot, Interval: agent.DefaultInterval, BootDeadline: defaultBootDeadline,
		RuntimeDir: store.DefaultRuntimeDir, RebootGrace: defaultRebootGrace}
}

// loadConfig reads, checks and completes the configuration at path. Every
// error is a *agent.ConfigError naming the app, key and line where known.
// Relative password_file and ca_file paths are taken from the config file's
// directory, as the daemon's working directory is not the operator's.
func loadConfig(path string) (*Config, error) { return loadConfigWith(path, nil) }

// loadConfigWith is loadConfig with override applied to each [[app]]
// table before it is built: the app flags given with a config file.
func loadConfigWith(path string, override func(*appConfig)) (*Config, error) {
	data, mode, err := readConfigFile(path)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			msg += "; write it, or give one app's flags (--host, --project, --app-dir)"
		}
		return nil, &agent.ConfigError{Msg: msg}
	}
	var fc fileConfig
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, decodeError(path, data, err)
	}
	pos := scanPositions(data)

	cfg := defaultConfig()
	global := func(key, format string, args ...any) error {
		return &agent.ConfigError{Key: key, Line: pos.lines[key], Msg: fmt.Sprintf(format, args...)}
	}
	if fc.StateDir != "" {
		cfg.StateRoot = filepath.Clean(fc.StateDir)
		if !filepath.IsAbs(cfg.StateRoot) {
			return nil, global("state_dir", "%q is not an absolute path", fc.StateDir)
		}
	}
	if fc.RuntimeDir != "" {
		cfg.RuntimeDir = filepath.Clean(fc.RuntimeDir)
		if !filepath.IsAbs(cfg.RuntimeDir) {
			return nil, global("runtime_dir", "%q is not an absolute path", fc.RuntimeDir)
		}
	}
	if fc.Interval != "" {
		if cfg.Interval, err = parseInterval(fc.Interval); err != nil {
			return nil, global("interval", "%v", err)
		}
	}
	if fc.RebootGrace != "" {
		if cfg.RebootGrace, err = parsePositiveDuration(fc.RebootGrace); err != nil {
			return nil, global("reboot_grace", "%v", err)
		}
	}
	if fc.Metrics != "" {
		if cfg.MetricsTextfile = filepath.Clean(fc.Metrics); !filepath.IsAbs(cfg.MetricsTextfile) {
			return nil, global("metrics_textfile", "%q is not an absolute path", fc.Metrics)
		}
	}
	switch cfg.Identify = fc.Identify; cfg.Identify {
	case "", "model", "serial":
	default:
		return nil, global("identify", "%q: want \"model\" or \"serial\"", fc.Identify)
	}
	if fc.BootDeadline != "" {
		if cfg.BootDeadline, err = parsePositiveDuration(fc.BootDeadline); err != nil {
			return nil, global("boot_deadline", "%v", err)
		}
	}
	if len(fc.App) == 0 {
		return nil, &agent.ConfigError{Msg: path + " has no [[app]] table: nothing to update"}
	}

	dir := filepath.Dir(path)
	for i := range fc.App {
		if fc.App[i].PublicKeys == nil {
			fc.App[i].PublicKeys = fc.PublicKeys
		}
		if override != nil {
			override(&fc.App[i])
		}
		a, err := fc.App[i].app(cfg.StateRoot, dir)
		if err != nil {
			return nil, pos.locate(err, i, fc.App[i])
		}
		cfg.Apps = append(cfg.Apps, a)
	}
	if err := agent.ValidateApps(cfg.Apps); err != nil {
		// ValidateApps names the later app of a clashing pair; names are
		// unique up to that app, so the last one with the name is it.
		i := 0
		var ce *agent.ConfigError
		if errors.As(err, &ce) {
			for j := range cfg.Apps {
				if cfg.Apps[j].Name == ce.App {
					i = j
				}
			}
		}
		return nil, pos.locate(err, i, fc.App[i])
	}
	var withPassword []string
	for i := range fc.App {
		if fc.App[i].Password != "" {
			withPassword = append(withPassword, cfg.Apps[i].Name)
		}
	}
	if w := passwordWarning(path, mode, withPassword); w != "" {
		cfg.Warnings = append(cfg.Warnings, w)
	}
	return cfg, nil
}

// readConfigFile reads the config file and its permission bits, from one
// open file so both describe the same file.
func readConfigFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	data, err := io.ReadAll(f)
	return data, fi.Mode().Perm(), err
}

// selectApps returns the apps named, in the order given, or all of them.
func selectApps(cfg *Config, names []string) ([]agent.App, error) {
	if len(names) == 0 {
		return append([]agent.App(nil), cfg.Apps...), nil
	}
	var apps []agent.App
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		found := false
		for _, a := range cfg.Apps {
			if a.Name == n {
				apps = append(apps, a)
				found = true
				break
			}
		}
		if !found {
			configured := make([]string, len(cfg.Apps))
			for i, a := range cfg.Apps {
				configured[i] = a.Name
			}
			return nil, &agent.ConfigError{Msg: fmt.Sprintf("no app named %s (configured: %s)",
				wire.Quote(n), strings.Join(configured, ", "))}
		}
	}
	return apps, nil
}
