package main

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// What a hard reset does to the machine, behind hooks: tests replace them
// so no test ever reboots or arms the watchdog of the machine it runs on.
var (
	rebootViaSystemd = reset.Reboot
	fireWatchdog     = func(ctx context.Context, device string, log zerolog.Logger) (time.Duration, error) {
		return (&reset.Watchdog{Device: device, Log: log}).Fire(ctx)
	}
	// rebootNow is the last resort when systemd did not reboot in time.
	rebootNow  = reset.Restart
	afterGrace = time.After
)

// hardReset restarts the board once for the apps that asked for it (names,
// all switched by now): with the hardware watchdog if the first of them
// asks for it and the device is free, else through systemd's reboot.target,
// which stops every unit cleanly. If the board is still up after grace, it
// falls back to the watchdog, then to reboot(2). With the watchdog armed it
// waits for the reset (its timeout plus grace), then falls back to reboot(2). Once the reboot is asked
// for, the end of ctx (SIGTERM: systemd stopping the agent on its way down)
// means the reboot is under way: hardReset returns nil at once, so the
// clean shutdown is not held up and no fallback fires in the middle of it.
func hardReset(ctx context.Context, apps []agent.App, names []string, grace time.Duration, log zerolog.Logger) error {
	var first agent.App
	for _, a := range apps {
		if a.Name == names[0] {
			first = a
		}
	}
	device := first.WatchdogDevice
	if device == "" {
		device = reset.DefaultWatchdogDevice
	}
	log.Warn().Strs("apps", names).Str("how", string(first.HardReset)).Msg("hard reset: restarting the board")
	stopping := ctx.Done()
	ctx = context.WithoutCancel(ctx) // a SIGTERM now is the reboot itself
	if first.HardReset == "watchdog" {
		got, err := fireWatchdog(ctx, device, log)
		if err == nil {
			// Wait for the reset rather than return: at boot, returning
			// would let the app start on the new release only to be
			// killed by the reset moments later.
			select {
			case <-stopping:
				return nil
			case <-afterGrace(got + grace):
			}
			log.Error().Dur("waited", got+grace).Msg("still running after the watchdog should have reset the board")
			if err := rebootNow(); err != nil {
				return fmt.Errorf("reboot(2): %w", err)
			}
			return nil
		}
		if errors.Is(err, reset.ErrWatchdogBusy) {
			log.Warn().Err(err).Msg("the watchdog is owned by another process (systemd's RuntimeWatchdogSec= or a watchdog daemon); rebooting through systemd instead")
		} else {
			log.Error().Err(err).Msg("watchdog failed; rebooting through systemd instead")
		}
	}
	if err := rebootViaSystemd(ctx, reset.Bus(first.SystemdBus)); err != nil {
		log.Error().Err(err).Msg("reboot through systemd failed")
	} else {
		select {
		case <-stopping:
			return nil
		case <-afterGrace(grace):
		}
		log.Error().Dur("grace", grace).Msg("still running after the reboot was queued")
	}
	if _, err := fireWatchdog(ctx, device, log); err == nil {
		log.Warn().Msg("watchdog armed as a fallback")
		select {
		case <-stopping:
			return nil
		case <-afterGrace(grace):
		}
	}
	if err := rebootNow(); err != nil {
		return fmt.Errorf("reboot(2): %w", err)
	}
	return nil
}
