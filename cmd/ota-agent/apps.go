package main

import (
	"context"
	"errors"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/rs/zerolog"
)

// loadApps returns the configuration with the apps to act on: from flags
// alone when --host or --project is given without --config (the
// single-app case), else from the config file, narrowed to the names given
// as arguments, each app flag given overriding its key in every app.
// --runtime-dir overrides the file's runtime_dir.
func loadApps(c *commonFlags, names []string) (*Config, error) {
	cfg := defaultConfig()
	given := c.app.set()
	if (given["host"] || given["project"]) && !flagGiven(c.app.fs, "config") {
		if len(names) > 0 {
			return nil, usageErrorf("app names (%v) and app flags exclude each other", names)
		}
		a, err := c.app.app()
		if err != nil {
			return nil, err
		}
		cfg.Apps = []agent.App{a}
	} else {
		var err error
		if cfg, err = loadConfigWith(c.config, c.app.overlay); err != nil {
			return nil, err
		}
		if cfg.Apps, err = selectApps(cfg, names); err != nil {
			return nil, err
		}
	}
	if c.runtimeDir != "" {
		cfg.RuntimeDir = c.runtimeDir
	}
	if c.rebootGrace > 0 {
		cfg.RebootGrace = c.rebootGrace
	}
	return cfg, nil
}

// forEachApp runs fn for every app, one after another; one app's failure
// never stops the others. Each failure is logged with its app; the result
// is the most serious exit code (2 > 1 > 75 > 100 > 0).
func forEachApp(ctx context.Context, apps []agent.App, log zerolog.Logger, fn func(context.Context, agent.App) error) error {
	code := ExitOK
	for _, a := range apps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err := explain(fn(ctx, a))
		c := codeOf(err)
		if c != ExitOK && c != ExitUpdateAvail && !errors.Is(err, context.Canceled) {
			log.Error().Str("app", a.Name).Int("exit", c).Msg(err.Error())
		}
		code = worst(code, c)
	}
	if code != ExitOK {
		return exitCodeError{code}
	}
	return nil
}
