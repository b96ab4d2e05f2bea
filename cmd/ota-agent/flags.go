package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/store"
)

// usageErrorf is a command-line mistake (exit 2).
func usageErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// commonFlags are the flags of every command that acts on apps.
type commonFlags struct {
	config     string
	logLevel   string
	logFormat  string
	runtimeDir string
	app        appFlags
	// rebootGrace is --reboot-grace, of update and run (registerRebootGrace).
	rebootGrace time.Duration
}

// registerRebootGrace adds --reboot-grace, the global reboot_grace.
func (c *commonFlags) registerRebootGrace(fs *flag.FlagSet) {
	fs.DurationVar(&c.rebootGrace, "reboot-grace", 0, "how long a hard reset waits for the board to go down before the next fallback (default reboot_grace, else 90s)")
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", defaultConfigPath, "configuration file")
	fs.StringVar(&c.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "", "text (readable lines) or json (JSON lines); default text on a terminal, json otherwise")
	fs.StringVar(&c.runtimeDir, "runtime-dir", "", "where the last check of each app is kept, volatile (default runtime_dir, else "+store.DefaultRuntimeDir+")")
	c.app.register(fs)
}

// appsCmd is the setup shared by the commands that act on apps: the
// common flags, the logger, and the apps from flags or the config file.
type appsCmd struct {
	fs    *flag.FlagSet
	c     commonFlags
	names []string // the apps named on the command line
	log   zerolog.Logger
}

// newAppsCmd adds the common flags to fs; the command adds its own.
func newAppsCmd(fs *flag.FlagSet) *appsCmd {
	a := &appsCmd{fs: fs}
	a.c.register(fs)
	return a
}

// setup sets up logging and loads the apps named (all when none is).
func (a *appsCmd) setup(g *globals, names []string) (*Config, error) {
	a.names = names
	var err error
	if a.log, err = newLoggerFormat(g.stderr, a.c.logLevel, a.c.logFormat); err != nil {
		return nil, err
	}
	cfg, err := a.load()
	if err != nil {
		return nil, err
	}
	// Once per run: the daemon's reloads go through load alone.
	for _, w := range cfg.Warnings {
		a.log.Warn().Msg(w)
	}
	return cfg, nil
}

// flagGiven reports whether the flag name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// load (re)reads the apps, as the command line named them.
func (a *appsCmd) load() (*Config, error) { return loadApps(&a.c, a.names) }

// waitFlag is --wait (wait as long as it takes) or --wait=DURATION.
type waitFlag struct{ d time.Duration }

func (w *waitFlag) IsBoolFlag() bool { return true }
func (w *waitFlag) argName() string  { return "DURATION" }

// accepts takes a duration after --wait as its value ("--wait 30s").
func (w *waitFlag) accepts(arg string) bool {
	d, err := time.ParseDuration(arg)
	return err == nil && d >= 0
}
func (w *waitFlag) String() string { return w.d.String() }
func (w *waitFlag) Set(s string) error {
	switch s {
	case "true":
		w.d = 365 * 24 * time.Hour
	case "false":
		w.d = 0
	default:
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return fmt.Errorf("want a duration such as 30s, got %q", s)
		}
		w.d = d
	}
	return nil
}
