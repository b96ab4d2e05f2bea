package reset

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
)

// DefaultWatchdogDevice is the watchdog a zero Watchdog.Device means.
const DefaultWatchdogDevice = "/dev/watchdog"

// ErrWatchdogBusy means another process holds the watchdog device open
// (often systemd itself, with RuntimeWatchdogSec= set): only one may, so Fire
// cannot arm it. Fall back to Reboot.
var ErrWatchdogBusy = errors.New("watchdog device is in use by another process")

// Watchdog arms a hardware watchdog and stops feeding it so the board resets.
// It is the reset of last resort: it works when systemd cannot reboot
// cleanly, but nothing is shut down in order.
type Watchdog struct {
	// Device is the watchdog's character device; "" means
	// DefaultWatchdogDevice.
	Device string
	// Timeout is how soon the board should reset, rounded up to whole
	// seconds. The driver may clamp it to its range (the Raspberry Pi's
	// caps at about 15 s) or have a fixed timeout; Fire reports the one in
	// effect. Zero or less keeps the driver's current timeout.
	Timeout time.Duration
	// Log receives the armed device's identity and timeout. The zero value
	// discards it.
	Log zerolog.Logger

	// host opens the device and syncs the disks; the zero value is this
	// machine's. Tests set it, so no test arms a real watchdog.
	host watchdogHost
}

// Fire flushes the filesystems (sync), opens the watchdog, sets its timeout,
// feeds it once so the full timeout starts now, and then never feeds it
// again: the hardware resets the board after the returned duration.
//
// Outcomes:
//   - nil error: the watchdog is armed and the duration is the timeout the
//     driver reports (possibly clamped, see Timeout). The device stays open
//     for the life of the process and is never closed with the magic 'V',
//     so neither this process exiting nor anything else short of another
//     opener can disarm it. The caller should stop working and wait.
//   - an error wrapping ErrWatchdogBusy: another process holds the device;
//     nothing was armed.
//   - any other error (no such device, not a watchdog, ioctl failure, ctx
//     already done, not Linux: errors.ErrUnsupported): nothing is left
//     armed where the driver allows it (the device is closed with the magic
//     'V'; a driver built with nowayout keeps counting and resets the board
//     after its own timeout).
func (w *Watchdog) Fire(ctx context.Context) (time.Duration, error) {
	return w.fire(ctx)
}

// device returns the path Fire opens.
func (w *Watchdog) device() string {
	if w.Device == "" {
		return DefaultWatchdogDevice
	}
	return w.Device
}
