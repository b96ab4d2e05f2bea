package reset

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Machine is what a hard reset does to the host it runs on. Host is the
// real one; tests pass a recording fake, so no test ever reboots or arms
// the watchdog of the machine it runs on.
type Machine interface {
	// Reboot queues reboot.target on bus and returns (see Reboot).
	Reboot(ctx context.Context, bus Bus) error
	// FireWatchdog arms the watchdog device and stops feeding it; it
	// returns the timeout in effect (see Watchdog.Fire).
	FireWatchdog(ctx context.Context, device string) (time.Duration, error)
	// RebootNow restarts the machine at once with reboot(2) (see Restart).
	RebootNow() error
}

// Host is this machine: Reboot, Watchdog.Fire and Restart.
type Host struct {
	Log zerolog.Logger // receives the armed watchdog's identity and timeout
}

func (Host) Reboot(ctx context.Context, bus Bus) error { return Reboot(ctx, bus) }
func (h Host) FireWatchdog(ctx context.Context, device string) (time.Duration, error) {
	return (&Watchdog{Device: device, Log: h.Log}).Fire(ctx)
}
func (Host) RebootNow() error { return Restart() }

// Hard restarts the board once, after every app that asked for a hard
// reset has switched. It is the whole chain of fallbacks, so that a board
// meant to restart does restart:
//
//   - MethodWatchdog: sync, arm the hardware watchdog and stop feeding it,
//     then wait for the reset (the watchdog's timeout plus Grace) and fall
//     back to reboot(2). When the device cannot be armed (another process
//     owns it: systemd's RuntimeWatchdogSec=, a watchdog daemon; or no such
//     device) it goes on as for MethodReboot.
//   - MethodReboot (the default): start reboot.target on Bus as `systemctl reboot` does,
//     so every unit is stopped in order and filesystems unmount cleanly.
//     If the board is still up Grace later (or systemd refused), arm the
//     watchdog, wait Grace more, then reboot(2).
//
// A Hard holds no state between calls; its zero Machine is Host.
type Hard struct {
	Method         Method        // "" means MethodReboot
	Bus            Bus           // the manager that reboots; "" means BusSystem
	WatchdogDevice string        // "" means DefaultWatchdogDevice
	Grace          time.Duration // how long the board may take to go down before the next fallback
	Log            zerolog.Logger
	// Machine does the resets; nil: Host{Log}.
	Machine Machine
	// After is how Restart waits out Grace; nil: time.After.
	After func(time.Duration) <-chan time.Time
}

// Restart restarts the board: see Hard for the order of the fallbacks.
//
// shutdown closes when the process is told to stop (SIGTERM, SIGINT): once
// a reset is asked for, that is systemd stopping the agent on its way down,
// so the reboot is under way and Restart returns nil at once; no fallback
// fires in the middle of the clean shutdown. Nothing else ends Restart
// early: it takes no context on purpose, so no deadline (boot_deadline) or
// reload can cut the chain short and leave a board that was meant to
// restart running. It returns nil when it waited out every fallback up to
// reboot(2) (whose success never returns), and an error only when reboot(2)
// itself failed: the board could not be restarted.
func (h *Hard) Restart(shutdown <-chan struct{}) error {
	m, after := h.Machine, h.After
	if m == nil {
		m = Host{Log: h.Log}
	}
	if after == nil {
		after = time.After
	}
	device := h.WatchdogDevice
	if device == "" {
		device = DefaultWatchdogDevice
	}
	// wait reports whether the shutdown came before d passed.
	wait := func(d time.Duration) bool {
		select {
		case <-shutdown:
			return true
		case <-after(d):
			return false
		}
	}
	// The D-Bus and ioctl calls need a context; none of them may be cut
	// short by anything the caller had running.
	ctx := context.Background()
	method := h.Method
	if method == "" {
		method = MethodReboot
	}
	h.Log.Warn().Str("how", string(method)).Msg("hard reset: restarting the board")
	if method == MethodWatchdog {
		got, err := m.FireWatchdog(ctx, device)
		if err == nil {
			// Wait for the reset rather than return: at boot, returning
			// would let the app start on the new release only to be
			// killed by the reset moments later.
			if wait(got + h.Grace) {
				return nil
			}
			h.Log.Error().Dur("waited", got+h.Grace).Msg("still running after the watchdog should have reset the board")
			return h.rebootNow(m)
		}
		if errors.Is(err, ErrWatchdogBusy) {
			h.Log.Warn().Err(err).Msg("the watchdog is owned by another process (systemd's RuntimeWatchdogSec= or a watchdog daemon); rebooting through systemd instead")
		} else {
			h.Log.Error().Err(err).Msg("watchdog failed; rebooting through systemd instead")
		}
	}
	if err := m.Reboot(ctx, h.Bus); err != nil {
		h.Log.Error().Err(err).Msg("reboot through systemd failed")
	} else {
		if wait(h.Grace) {
			return nil
		}
		h.Log.Error().Dur("grace", h.Grace).Msg("still running after the reboot was queued")
	}
	if _, err := m.FireWatchdog(ctx, device); err == nil {
		h.Log.Warn().Msg("watchdog armed as a fallback")
		if wait(h.Grace) {
			return nil
		}
	}
	return h.rebootNow(m)
}

func (h *Hard) rebootNow(m Machine) error {
	if err := m.RebootNow(); err != nil {
		return fmt.Errorf("reboot(2): %w", err)
	}
	return nil
}
