package main

import (
	"errors"
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
	runtimeDir string
	app        appFlags
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", defaultConfigPath, "configuration file")
	fs.StringVar(&c.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&c.runtimeDir, "runtime-dir", "", "where the last check of each app is kept, volatile (default runtime_dir, else "+store.DefaultRuntimeDir+")")
	c.app.register(fs)
}

// appsCmd is the setup shared by the commands that act on apps: the
// common flags, the logger, and the apps from flags or the config file.
type appsCmd struct {
	fs  *flag.FlagSet
	c   commonFlags
	log zerolog.Logger
}

// newAppsCmd makes the flag set of command name; the command adds its own
// flags to a.fs before calling parse.
func newAppsCmd(g *globals, name, about string) *appsCmd {
	a := &appsCmd{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	a.fs.Usage = func() {
		g.printf("usage: ota-agent %s [flags] [APP...]\n\n%s\n\nflags:\n", name, about)
		a.fs.SetOutput(g.stdout)
		a.fs.PrintDefaults()
	}
	a.c.register(a.fs)
	return a
}

// parse parses args, sets up logging and loads the apps.
func (a *appsCmd) parse(g *globals, args []string) (*Config, error) {
	if err := parse(a.fs, g, args); err != nil {
		return nil, err
	}
	var err error
	if a.log, err = newLogger(g.stderr, a.c.logLevel); err != nil {
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
func (a *appsCmd) load() (*Config, error) { return loadApps(&a.c, a.fs.Args()) }

// parse parses args; -h prints the flags and returns errHelp.
func parse(fs *flag.FlagSet, g *globals, args []string) error {
	fs.SetOutput(g.stderr)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// waitFlag is --wait (wait as long as it takes) or --wait=DURATION.
type waitFlag struct{ d time.Duration }

func (w *waitFlag) IsBoolFlag() bool { return true }
func (w *waitFlag) String() string   { return w.d.String() }
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
