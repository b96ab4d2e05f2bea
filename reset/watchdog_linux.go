//go:build linux

package reset

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// device is an open watchdog character device (linux/watchdog.h).
type device interface {
	GetSupport() (*unix.WatchdogInfo, error) // WDIOC_GETSUPPORT
	SetTimeout(seconds int) error            // WDIOC_SETTIMEOUT
	GetTimeout() (seconds int, err error)    // WDIOC_GETTIMEOUT
	Keepalive() error                        // WDIOC_KEEPALIVE
	Write(p []byte) (int, error)
	Close() error
}

// watchdogHost is what Fire does to the machine; nil fields are the real
// open(2) of the device and sync(2).
type watchdogHost struct {
	open func(path string) (device, error)
	sync func()
}

func (h watchdogHost) openDevice(path string) (device, error) {
	if h.open == nil {
		return openFD(path)
	}
	return h.open(path)
}

func (h watchdogHost) syncDisks() {
	if h.sync == nil {
		unix.Sync()
		return
	}
	h.sync()
}

// armed keeps every fired device referenced until the process ends.
var armed struct {
	sync.Mutex
	devices []device
}

// fdDevice is a raw descriptor rather than an *os.File, whose finalizer
// would close it once unreferenced.
type fdDevice int

func openFD(path string) (device, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fdDevice(fd), nil
}

func (d fdDevice) GetSupport() (*unix.WatchdogInfo, error) { return unix.IoctlGetWatchdogInfo(int(d)) }
func (d fdDevice) SetTimeout(s int) error {
	return unix.IoctlSetPointerInt(int(d), unix.WDIOC_SETTIMEOUT, s)
}
func (d fdDevice) GetTimeout() (int, error)    { return unix.IoctlGetInt(int(d), unix.WDIOC_GETTIMEOUT) }
func (d fdDevice) Keepalive() error            { return unix.IoctlWatchdogKeepalive(int(d)) }
func (d fdDevice) Write(p []byte) (int, error) { return unix.Write(int(d), p) }
func (d fdDevice) Close() error                { return unix.Close(int(d)) }

func (w *Watchdog) fire(ctx context.Context) (time.Duration, error) {
	path := w.device()
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("watchdog %s: %w", path, err)
	}
	// The reset is abrupt: get everything written so far onto the disk.
	w.host.syncDisks()

	d, err := w.host.openDevice(path)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return 0, fmt.Errorf("%w: %w", ErrWatchdogBusy, err)
		}
		return 0, fmt.Errorf("watchdog: %w", err)
	}
	// From here on the watchdog is counting: opening it starts it.
	info, err := d.GetSupport()
	if err != nil {
		// Possibly not a watchdog at all: writing 'V' to it could do harm.
		d.Close()
		return 0, fmt.Errorf("watchdog %s: WDIOC_GETSUPPORT: %w", path, err)
	}
	fail := func(err error) (time.Duration, error) {
		if info.Options&unix.WDIOF_MAGICCLOSE != 0 {
			d.Write([]byte("V"))
		}
		d.Close()
		return 0, fmt.Errorf("watchdog %s: %w", path, err)
	}

	if w.Timeout > 0 {
		secs := int((w.Timeout + time.Second - 1) / time.Second)
		switch {
		case info.Options&unix.WDIOF_SETTIMEOUT == 0:
			w.Log.Debug().Str("device", path).Int("requested_s", secs).Msg("watchdog timeout is fixed; keeping it")
		default:
			if err := d.SetTimeout(secs); err != nil {
				// EINVAL: outside the driver's range. Its own timeout still resets the board.
				if !errors.Is(err, unix.EINVAL) {
					return fail(fmt.Errorf("WDIOC_SETTIMEOUT %d s: %w", secs, err))
				}
				w.Log.Warn().Str("device", path).Int("requested_s", secs).Err(err).Msg("watchdog refused the timeout; keeping its own")
			}
		}
	}
	secs, err := d.GetTimeout()
	if err != nil {
		return fail(fmt.Errorf("WDIOC_GETTIMEOUT: %w", err))
	}
	// Feed once so the full timeout starts now; any byte but 'V' pings.
	if info.Options&unix.WDIOF_KEEPALIVEPING != 0 {
		err = d.Keepalive()
	} else {
		_, err = d.Write([]byte{0})
	}
	if err != nil {
		return fail(fmt.Errorf("keepalive: %w", err))
	}

	// Leak the descriptor on purpose: closing without 'V' would not stop the
	// watchdog, but holding it open also keeps any other process from opening
	// and feeding it, and keeps the garbage collector away from it.
	armed.Lock()
	armed.devices = append(armed.devices, d)
	armed.Unlock()

	timeout := time.Duration(secs) * time.Second
	w.Log.Info().Str("device", path).
		Str("identity", strings.TrimRight(string(info.Identity[:]), "\x00")).
		Dur("timeout", timeout).
		Msg("watchdog armed and no longer fed; the board resets when it expires")
	return timeout, nil
}
