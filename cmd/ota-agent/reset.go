package main

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
)

// The compiler checks that the reset package has what the agent needs.
var (
	_ agent.Resetter = (*reset.Unit)(nil)
	_ agent.Rebooter = (*reset.Hard)(nil)
)

// resetterFor returns how the app is restarted around a switch: its unit
// for "soft"; nil for "none" and "hard" (a hard reset happens once, after
// every app is switched).
func resetterFor(app agent.App, log zerolog.Logger) agent.Resetter {
	if app.Reset != agent.ResetSoft {
		return nil
	}
	return &reset.Unit{Name: app.Unit, Bus: app.SystemdBus, Log: log.With().Str("app", app.Name).Logger()}
}

// unitFor returns the app's unit whatever its reset, for its trial and a
// rollback; nil when it has none.
func unitFor(app agent.App, log zerolog.Logger) agent.Unit {
	if app.Unit == "" {
		return nil
	}
	return &reset.Unit{Name: app.Unit, Bus: app.SystemdBus, Log: log.With().Str("app", app.Name).Logger()}
}

// hardResetFor returns the one board restart for the apps named (all
// switched by now), as the first of them configures it. m is the machine
// it acts on; nil is this host.
func hardResetFor(first agent.App, names []string, grace time.Duration, m reset.Machine, log zerolog.Logger) *reset.Hard {
	return &reset.Hard{
		Method: first.HardReset, Bus: first.SystemdBus, WatchdogDevice: first.WatchdogDevice, Grace: grace,
		Log: log.With().Strs("apps", names).Logger(), Machine: m,
	}
}
