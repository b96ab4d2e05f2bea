// Package reset restarts what runs a release: one systemd unit (soft reset),
// or the whole board through systemd's reboot.target or a hardware watchdog
// (hard reset).
//
// Unit control goes over D-Bus and waits for each systemd job, so a caller
// knows that no process of the old release is still running when Stop
// returns, and that the new release is running when Start returns.
package reset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// activeWait bounds how long Start waits, after its job is done, for a unit
// that is still activating to become active.
const activeWait = 10 * time.Second

// Bus selects the system or the user manager.
type Bus string

// The buses a Unit or Reboot can use. The zero value means BusSystem.
const (
	BusSystem Bus = "system" // PID 1, reached through DBUS_SYSTEM_BUS_ADDRESS or the default system bus
	BusUser   Bus = "user"   // the user's manager, reached through DBUS_SESSION_BUS_ADDRESS
)

// ErrUnitNotFound means systemd has no unit of that name (LoadState
// "not-found"): usually a typo in the configuration.
var ErrUnitNotFound = errors.New("unit not found")

// ErrNoBus means the bus of the manager could not be reached: no system
// D-Bus (systemd is not running, or not as PID 1), or no session bus for
// BusUser (no user manager, or neither DBUS_SESSION_BUS_ADDRESS nor
// $XDG_RUNTIME_DIR/bus). Nothing was asked of systemd.
var ErrNoBus = errors.New("no D-Bus connection to systemd")

// String returns the bus name used in errors; the zero value reads "system".
func (b Bus) String() string {
	if b == "" {
		return string(BusSystem)
	}
	return string(b)
}

// validate fails for anything but "", "system" and "user".
func (b Bus) validate() error {
	switch b {
	case "", BusSystem, BusUser:
		return nil
	}
	return fmt.Errorf("unknown systemd bus %q (want %q or %q)", string(b), BusSystem, BusUser)
}

// Unit soft-resets one systemd unit.
//
// Each method connects to the bus, does its work and closes the connection:
// a Unit holds no connection and no state between calls, so it may be kept
// for the life of the program and used from one goroutine at a time.
type Unit struct {
	// Name is the unit, e.g. "myapp.service", as CheckUnitName accepts it.
	Name string
	// Bus selects the manager; "" means BusSystem.
	Bus Bus
	// Log receives debug events (job results, invocation IDs). The zero
	// value discards them, like zerolog.Nop().
	Log zerolog.Logger
}

// Check fails when the unit cannot be controlled: the bus is unknown or
// unreachable, or the unit does not exist (an error wrapping
// ErrUnitNotFound) or is not loaded (masked, bad setting). Call it before
// anything is downloaded, so a wrong unit name is reported before any file
// is switched under a running app. It returns nil when the unit is loaded,
// whatever its active state.
func (u *Unit) Check(ctx context.Context) error {
	if err := u.validate(); err != nil {
		return err
	}
	return u.check(ctx)
}

// Stop stops the unit if it is running and waits until systemd reports the
// stop job's result.
//
// Outcomes:
//   - The unit was active, activating (including waiting for an automatic
//     restart) or reloading: it is stopped; Stop returns (true, nil) once the
//     job result is "done". The caller should Start it after the switch.
//   - The unit was already inactive or failed (for example at boot, before
//     it started): Stop does nothing and returns (false, nil). The caller
//     must not start it: its own dependencies will.
//   - The unit was deactivating (someone else is stopping it): Stop waits
//     for that stop to finish and returns (false, nil).
//   - Any failure (unknown unit, bus error, job result other than "done",
//     ctx done while waiting) returns an error naming the unit, the bus and
//     the job result; wasActive then still tells whether it was running
//     before, so the caller can try to bring it back.
func (u *Unit) Stop(ctx context.Context) (wasActive bool, err error) {
	if err := u.validate(); err != nil {
		return false, err
	}
	return u.stop(ctx)
}

// Start starts the unit, waits for the start job's result ("done", else an
// error naming the unit, the bus, the job result and the unit's result such
// as "exit-code"), then confirms that the unit is active, polling briefly
// (at most activeWait, and never past ctx) while it is still activating.
//
// Start also proves that a new process set is running: it reads the unit's
// InvocationID just before starting it, and fails unless the unit ends with
// a different, non-empty one. After a clean Stop the old ID is already
// empty; when the unit is still running (something started it again during
// the switch, e.g. socket activation), the start job is a no-op, the ID is
// unchanged, and Start returns an error, because those processes may have
// seen a mix of releases. The caller then has to restart the unit.
//
// A unit that reaches "active" and fails later (a Type=simple service that
// exits right away) is not caught here; proving health is the caller's
// trial step. A Type=oneshot unit needs RemainAfterExit=yes to stay active.
func (u *Unit) Start(ctx context.Context) error {
	if err := u.validate(); err != nil {
		return err
	}
	return u.start(ctx)
}

// validate checks the fields every method needs.
func (u *Unit) validate() error {
	if u.Name == "" {
		return errors.New("systemd unit: no unit name")
	}
	if err := CheckUnitName(u.Name); err != nil {
		return fmt.Errorf("systemd unit: %w", err)
	}
	return u.Bus.validate()
}

// unitSuffixes are the unit types systemd accepts over D-Bus, which (unlike
// systemctl) does not append ".service" to a bare name.
var unitSuffixes = []string{
	".service", ".socket", ".target", ".device", ".mount", ".automount",
	".swap", ".timer", ".path", ".slice", ".scope",
}

// CheckUnitName is the one rule for a unit name: no slash, backslash or
// control character, and a unit type suffix ("app.service"). A bare name
// is refused with the ".service" it probably meant rather than completed,
// because D-Bus, unlike systemctl, takes the name as given. The name may
// come from a config file; errors quote it.
func CheckUnitName(name string) error {
	if strings.ContainsAny(name, "/\\") || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%q is not a unit name", quote(name))
	}
	for _, s := range unitSuffixes {
		if strings.HasSuffix(name, s) && len(name) > len(s) {
			return nil
		}
	}
	return fmt.Errorf("%q has no unit type; did you mean %q?", quote(name), name+".service")
}

// quote shortens a name for an error message, as wire.Quote does.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// errorf prefixes an error with the operation, the unit and the bus.
func (u *Unit) errorf(op, format string, args ...any) error {
	return fmt.Errorf("%s %s (%s bus): %w", op, u.Name, u.Bus, fmt.Errorf(format, args...))
}
