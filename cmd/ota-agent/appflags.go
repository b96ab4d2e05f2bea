package main

import (
	"errors"
	"flag"
	"fmt"
	"reflect"
	"strings"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
)

// appFlags configures one app on the command line, with no config file.
type appFlags struct {
	fs                               *flag.FlagSet
	name, host, project, files       string
	appDir, stateDir                 string
	noVersionPrefix                  bool
	install, reset, unit, systemdBus string
	hardReset, timeout, maxFileSize  string
	watchdogDevice                   string
	user, passwordFile, caFile       string
	allowInsecureAuth                bool
	keepReleases                     int
	minRate, minRateWindow           string
	publicKeys                       string
	trial, startTimeout, healthURL   string
	healthTimeout, healthGrace       string
	onFailure                        string
	healthCommand                    argvFlag
	maxBootAttempts                  int
}

// argvFlag collects a repeatable flag, one argv element per use.
type argvFlag []string

func (a *argvFlag) String() string     { return strings.Join(*a, " ") }
func (a *argvFlag) Set(v string) error { *a = append(*a, v); return nil }

var appFlagNames = map[string]bool{
	"name": true, "host": true, "project": true, "files": true, "app-dir": true, "state-dir": true,
	"no-version-prefix": true, "install": true, "reset": true, "unit": true, "systemd-bus": true,
	"hard-reset": true, "watchdog-device": true, "timeout": true, "user": true, "password-file": true, "ca-file": true,
	"allow-insecure-auth": true, "max-file-size": true, "keep-releases": true, "min-rate": true, "min-rate-window": true, "public-keys": true,
	"trial": true, "start-timeout": true, "health-command": true, "health-url": true, "health-timeout": true,
	"health-grace": true, "on-failure": true, "max-boot-attempts": true,
}

// The app flags that matter to check (reaching the server and the unit)
// and to the commands that only act on the disk and the unit (status,
// recover, commit, rollback, retry); their help shows only these, and
// every app flag is accepted all the same.
var (
	checkAppFlags = []string{"name", "host", "project", "no-version-prefix", "app-dir", "state-dir", "unit", "systemd-bus",
		"timeout", "user", "password-file", "ca-file", "allow-insecure-auth"}
	localAppFlags = []string{"name", "host", "project", "app-dir", "state-dir", "install", "unit", "systemd-bus", "keep-releases"}
)

// flagArgs names the value of the flags whose usage does not, for help.
var flagArgs = map[string]string{
	"config": "FILE", "log-level": "LEVEL", "project": "NAME", "name": "NAME", "files": "LIST", "install": "MODE",
	"reset": "MODE", "unit": "UNIT", "systemd-bus": "BUS", "hard-reset": "METHOD", "watchdog-device": "DEVICE",
	"timeout": "DURATION", "user": "USER", "max-file-size": "SIZE", "min-rate": "SIZE", "min-rate-window": "DURATION",
	"public-keys": "KEYS", "trial": "DURATION", "start-timeout": "DURATION", "health-command": "ARG", "health-url": "URL",
	"health-timeout": "DURATION", "health-grace": "DURATION", "on-failure": "ACTION", "reboot-grace": "DURATION",
	"log-format": "FORMAT",
}

// register adds the app flags to fs. There is no --password: a command line
// is visible to every user of the board.
func (f *appFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.host, "host", "", "server `URL`, http:// or https:// (one app from flags, no config file)")
	fs.StringVar(&f.project, "project", "", "the app's directory on the server")
	fs.StringVar(&f.files, "files", "", "release files, comma-separated, relative to --app-dir")
	fs.StringVar(&f.appDir, "app-dir", "", "directory the app's files live in")
	fs.StringVar(&f.stateDir, "state-dir", "", "state directory (default "+agent.DefaultStateRoot+")")
	fs.BoolVar(&f.noVersionPrefix, "no-version-prefix", false, "files are at <version>/<file>, not <version>_<file>")
	fs.StringVar(&f.install, "install", "", fmt.Sprintf("%s (default) or %s", store.InPlace, store.Symlink))
	fs.StringVar(&f.reset, "reset", "", "none, soft or hard (default soft with --unit, else none)")
	fs.StringVar(&f.unit, "unit", "", "the app's systemd unit, stopped and started around a switch")
	fs.StringVar(&f.systemdBus, "systemd-bus", "", fmt.Sprintf("%s (default) or %s", reset.BusSystem, reset.BusUser))
	fs.StringVar(&f.hardReset, "hard-reset", "", fmt.Sprintf("%s (default) or %s", reset.MethodReboot, reset.MethodWatchdog))
	fs.StringVar(&f.watchdogDevice, "watchdog-device", "", fmt.Sprintf("the hardware watchdog for --hard-reset %s (default %s)", reset.MethodWatchdog, reset.DefaultWatchdogDevice))
	fs.StringVar(&f.timeout, "timeout", "", "bound on each network wait (default 5s)")
	fs.StringVar(&f.user, "user", "", "Basic auth user")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the Basic auth password")
	fs.StringVar(&f.caFile, "ca-file", "", "extra CA bundle (PEM) for https")
	fs.BoolVar(&f.allowInsecureAuth, "allow-insecure-auth", false, "allow Basic auth over plain http")
	fs.StringVar(&f.maxFileSize, "max-file-size", "", "per-file size cap, bytes or like 512MiB (default 1GiB)")
	fs.IntVar(&f.keepReleases, "keep-releases", 0, fmt.Sprintf("releases kept for rollback (default %d)", agent.DefaultKeepReleases))
	fs.StringVar(&f.minRate, "min-rate", "", "cut a transfer slower than this many bytes a second over --min-rate-window, like 1KiB; 0: never (default 1KiB)")
	fs.StringVar(&f.minRateWindow, "min-rate-window", "", fmt.Sprintf("the window of --min-rate (default %v)", agent.DefaultMinRateWindow))
	fs.StringVar(&f.publicKeys, "public-keys", "", "minisign public keys (the base64 line of a .pub file), comma-separated: every release must come with a manifest signed by one")
	fs.StringVar(&f.name, "name", "", "the app's name, for its state directory (default: --project)")
	fs.StringVar(&f.trial, "trial", "", fmt.Sprintf("how long a new release must stay healthy before it is committed; 0s: at once (default %v)", agent.DefaultTrial))
	fs.StringVar(&f.startTimeout, "start-timeout", "", fmt.Sprintf("how long the unit may take to become active in a trial (default %v)", agent.DefaultStartTimeout))
	fs.Var(&f.healthCommand, "health-command", "health check run at the end of a trial, without a shell: one argv element per use (--health-command /usr/bin/curl --health-command -f ...)")
	fs.StringVar(&f.healthURL, "health-url", "", "health check URL that must answer 2xx at the end of a trial")
	fs.StringVar(&f.healthTimeout, "health-timeout", "", fmt.Sprintf("bound on each health check (default %v)", agent.DefaultHealthTimeout))
	fs.StringVar(&f.healthGrace, "health-grace", "", fmt.Sprintf("how long after the trial failed health checks are retried (default %v)", agent.DefaultHealthGrace))
	fs.StringVar(&f.onFailure, "on-failure", "", fmt.Sprintf("what a failed trial does: %s (default) or %s", agent.OnFailureRollback, agent.OnFailureKeep))
	fs.IntVar(&f.maxBootAttempts, "max-boot-attempts", 0, fmt.Sprintf("boots a trial may see before it is rolled back at boot (default %d)", agent.DefaultMaxBootAttempts))
}

// set returns the app flags given on the command line.
func (f *appFlags) set() map[string]bool {
	given := map[string]bool{}
	if f.fs != nil {
		f.fs.Visit(func(fl *flag.Flag) {
			if appFlagNames[fl.Name] {
				given[fl.Name] = true
			}
		})
	}
	return given
}

// any reports whether an app flag was given, so the app comes from flags
// rather than from the config file.
func (f *appFlags) any() bool { return len(f.set()) > 0 }

// flagMsg rewrites Validate's messages, which speak of config keys.
var flagMsg = strings.NewReplacer(
	"allow_insecure_auth = true", "--allow-insecure-auth",
	"(password, password_file or ", "(--password-file or ",
	"needs unit,", "needs --unit,",
)

// config is the app the flags describe, as an [[app]] table would give it.
// A flag given empty is as absent as an empty string in the file.
func (f *appFlags) config() appConfig {
	given := f.set()
	c := appConfig{
		Name: f.name, Host: f.host, Project: f.project, AppDir: f.appDir, StateDir: f.stateDir,
		Install: f.install, Reset: f.reset, Unit: f.unit, SystemdBus: f.systemdBus, HardReset: f.hardReset,
		WatchdogDevice: f.watchdogDevice, Timeout: f.timeout, User: f.user, PasswordFile: f.passwordFile,
		CAFile: f.caFile, AllowInsecureAuth: f.allowInsecureAuth, MinRateWindow: f.minRateWindow,
		Trial: f.trial, StartTimeout: f.startTimeout, HealthCommand: f.healthCommand, HealthURL: f.healthURL,
		HealthTimeout: f.healthTimeout, HealthGrace: f.healthGrace, OnFailure: f.onFailure,
	}
	if given["max-boot-attempts"] {
		n := f.maxBootAttempts
		c.MaxBootAttempts = &n
	}
	for _, k := range strings.Split(f.publicKeys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			c.PublicKeys = append(c.PublicKeys, k)
		}
	}
	for _, file := range strings.Split(f.files, ",") {
		if file = strings.TrimSpace(file); file != "" {
			c.Files = append(c.Files, file)
		}
	}
	if given["no-version-prefix"] {
		prefix := !f.noVersionPrefix
		c.UseVersionPrefix = &prefix
	}
	if given["max-file-size"] {
		c.MaxFileSize = f.maxFileSize
	}
	if given["keep-releases"] {
		keep := f.keepReleases
		c.KeepReleases = &keep
	}
	if given["min-rate"] {
		c.MinRate = f.minRate
	}
	return c
}

// overlay sets the keys of c whose flags were given, as an [[app]] table
// overridden by the command line. A flag's key is its name with "_" for
// "-" (--no-version-prefix: use_version_prefix); --password-file replaces
// a password too.
func (f *appFlags) overlay(c *appConfig) {
	from := reflect.ValueOf(f.config())
	to := reflect.ValueOf(c).Elem()
	for name := range f.set() {
		key := strings.ReplaceAll(name, "-", "_")
		switch name {
		case "no-version-prefix":
			key = "use_version_prefix"
		case "password-file":
			c.Password = ""
		}
		for i := range to.NumField() {
			if to.Type().Field(i).Tag.Get("toml") == key {
				to.Field(i).Set(from.Field(i))
			}
		}
	}
}

// app builds and validates the app the flags describe, with the builder a
// config file's apps go through. Errors are *agent.ConfigError whose Key is
// the flag ("--timeout").
func (f *appFlags) app() (agent.App, error) {
	c := f.config()
	a, err := c.app(agent.DefaultStateRoot, "")
	if err == nil {
		// The same checks as a config file's apps get, overlaps and aliases included.
		err = agent.ValidateApps([]agent.App{a})
	}
	if err != nil {
		return agent.App{}, toFlagError(err)
	}
	return a, nil
}

// toFlagError renames a config key in err to its flag.
func toFlagError(err error) error {
	var ce *agent.ConfigError
	if errors.As(err, &ce) && ce.Key != "" && !strings.HasPrefix(ce.Key, "--") {
		key := ce.Key
		if key == "password" {
			key = "password_file"
		}
		ce.Key = "--" + strings.ReplaceAll(key, "_", "-")
		ce.Msg = flagMsg.Replace(ce.Msg)
	}
	return err
}
