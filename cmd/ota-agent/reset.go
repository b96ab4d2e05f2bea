package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
)

// The compiler checks that reset.Unit is what the agent needs.
var _ agent.Resetter = (*reset.Unit)(nil)

// resetterFor returns how the app is restarted around a switch: its unit
// for "soft"; nil for "none" and "hard" (a hard reset happens once, after
// every app is switched).
func resetterFor(app agent.App, log zerolog.Logger) agent.Resetter {
	if app.Reset != agent.ResetSoft {
		return nil
	}
	return &reset.Unit{Name: app.Unit, Bus: reset.Bus(app.SystemdBus), Log: log.With().Str("app", app.Name).Logger()}
}

// hardReset restarts the board once for the apps that asked for it: with
// the watchdog if the first of them says so and the device is free, else
// through systemd's reboot.target.
func hardReset(ctx context.Context, apps []agent.App, names []string, log zerolog.Logger) error {
	var first agent.App
	for _, a := range apps {
		if a.Name == names[0] {
			first = a
		}
	}
	log.Warn().Strs("apps", names).Str("how", first.HardReset).Msg("hard reset: restarting the board")
	ctx = context.WithoutCancel(ctx)
	if first.HardReset == "watchdog" {
		w := &reset.Watchdog{Device: reset.DefaultWatchdogDevice, Log: log}
		got, err := w.Fire(ctx)
		if err == nil {
			log.Warn().Dur("timeout", got).Msg("watchdog armed and no longer fed: the board resets when it expires")
			return nil
		}
		if !errors.Is(err, reset.ErrWatchdogBusy) {
			log.Error().Err(err).Msg("watchdog failed; rebooting through systemd instead")
		} else {
			log.Warn().Err(err).Msg("watchdog is owned by another process (systemd's RuntimeWatchdogSec= or a watchdog daemon); rebooting through systemd instead")
		}
	}
	if err := reset.Reboot(ctx, reset.Bus(first.SystemdBus)); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}
