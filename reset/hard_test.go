package reset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMachine records what a hard reset asks of the machine, and waits
// through a clock the test controls.
type fakeMachine struct {
	mu          sync.Mutex
	calls       []string
	rebootErr   error
	watchdogErr []error // one per FireWatchdog call; past the end: nil
	onReboot    func()
}

func (m *fakeMachine) record(s string) {
	m.mu.Lock()
	m.calls = append(m.calls, s)
	m.mu.Unlock()
}

func (m *fakeMachine) steps() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.calls, ",")
}

func (m *fakeMachine) Reboot(ctx context.Context, bus Bus) error {
	if ctx.Err() != nil {
		m.record("reboot.target with a done context")
		return ctx.Err()
	}
	m.record("reboot.target " + bus.String())
	if m.onReboot != nil {
		m.onReboot()
	}
	return m.rebootErr
}

func (m *fakeMachine) FireWatchdog(ctx context.Context, device string) (time.Duration, error) {
	m.mu.Lock()
	n := 0
	for _, c := range m.calls {
		if strings.HasPrefix(c, "watchdog") {
			n++
		}
	}
	m.mu.Unlock()
	m.record("watchdog " + device)
	if n < len(m.watchdogErr) && m.watchdogErr[n] != nil {
		return 0, m.watchdogErr[n]
	}
	return 15 * time.Second, nil
}

func (m *fakeMachine) RebootNow() error { m.record("reboot(2)"); return nil }

// graceNow is a clock whose every wait is over at once; it records the
// waits asked for.
func graceNow(waits *[]time.Duration) func(time.Duration) <-chan time.Time {
	return func(d time.Duration) <-chan time.Time {
		*waits = append(*waits, d)
		c := make(chan time.Time, 1)
		c <- time.Now()
		return c
	}
}

// A board that does not go down gets every fallback in turn, each after
// its grace.
func TestHardFallbacks(t *testing.T) {
	busy := fmt.Errorf("%w: EBUSY", ErrWatchdogBusy)
	tests := []struct {
		name        string
		hard        Hard
		rebootErr   error
		watchdogErr []error
		want        string
		waits       []time.Duration
	}{
		{"reboot that never comes", Hard{}, nil, nil,
			"reboot.target system,watchdog /dev/watchdog,reboot(2)", []time.Duration{time.Minute, time.Minute}},
		{"reboot on the user bus", Hard{Method: MethodReboot, Bus: BusUser, WatchdogDevice: "/dev/wd9"}, nil, nil,
			"reboot.target user,watchdog /dev/wd9,reboot(2)", []time.Duration{time.Minute, time.Minute}},
		{"systemd refuses the reboot", Hard{}, errors.New("no reboot.target"), nil,
			"reboot.target system,watchdog /dev/watchdog,reboot(2)", []time.Duration{time.Minute}},
		{"no watchdog either", Hard{}, nil, []error{errors.New("no such device")},
			"reboot.target system,watchdog /dev/watchdog,reboot(2)", []time.Duration{time.Minute}},
		// Armed: it waits for the reset (the watchdog's timeout plus
		// grace); a board still up gets reboot(2).
		{"watchdog armed", Hard{Method: MethodWatchdog, WatchdogDevice: "/dev/wd9"}, nil, nil,
			"watchdog /dev/wd9,reboot(2)", []time.Duration{15*time.Second + time.Minute}},
		{"watchdog busy falls back to systemd", Hard{Method: MethodWatchdog, WatchdogDevice: "/dev/wd9"}, nil, []error{busy, busy},
			"watchdog /dev/wd9,reboot.target system,watchdog /dev/wd9,reboot(2)", []time.Duration{time.Minute}},
		{"watchdog fails, systemd refuses", Hard{Method: MethodWatchdog}, errors.New("refused"), []error{busy, busy},
			"watchdog /dev/watchdog,reboot.target system,watchdog /dev/watchdog,reboot(2)", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &fakeMachine{rebootErr: tt.rebootErr, watchdogErr: tt.watchdogErr}
			var waits []time.Duration
			h := tt.hard
			h.Grace, h.Machine, h.After = time.Minute, m, graceNow(&waits)
			if err := h.Restart(nil); err != nil {
				t.Errorf("Restart = %v, want nil", err)
			}
			if got := m.steps(); got != tt.want {
				t.Errorf("hard reset steps = %s, want %s", got, tt.want)
			}
			if fmt.Sprint(waits) != fmt.Sprint(tt.waits) {
				t.Errorf("waits = %v, want %v", waits, tt.waits)
			}
		})
	}
}

// Once the reboot is queued, the SIGTERM of the shutdown ends the hard reset
// at once: no wait for reboot_grace, no fallback in the middle of the clean
// shutdown.
func TestHardReturnsWhenStopped(t *testing.T) {
	shutdown := make(chan struct{})
	m := &fakeMachine{onReboot: func() { close(shutdown) }} // systemd stops the agent on its way down
	never := func(time.Duration) <-chan time.Time { return nil }
	h := &Hard{Grace: time.Hour, Machine: m, After: never}
	done := make(chan error, 1)
	go func() { done <- h.Restart(shutdown) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Restart = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Restart still waiting after the SIGTERM of the shutdown")
	}
	if got := m.steps(); got != "reboot.target system" {
		t.Errorf("hard reset steps = %s, want reboot.target only", got)
	}
}

// A watchdog armed and the shutdown under way: Restart returns without
// reboot(2).
func TestHardWatchdogReturnsWhenStopped(t *testing.T) {
	shutdown := make(chan struct{})
	close(shutdown)
	m := &fakeMachine{}
	h := &Hard{Method: MethodWatchdog, Grace: time.Hour, Machine: m, After: func(time.Duration) <-chan time.Time { return nil }}
	if err := h.Restart(shutdown); err != nil {
		t.Errorf("Restart = %v, want nil", err)
	}
	if got := m.steps(); got != "watchdog /dev/watchdog" {
		t.Errorf("hard reset steps = %s, want the watchdog only", got)
	}
}

// reboot(2) failing is the one error: the board could not be restarted.
func TestHardRebootNowFails(t *testing.T) {
	m := &failingNow{fakeMachine: &fakeMachine{}}
	var waits []time.Duration
	h := &Hard{Grace: time.Second, Machine: m, After: graceNow(&waits)}
	if err := h.Restart(nil); err == nil || !strings.Contains(err.Error(), "reboot(2)") {
		t.Errorf("Restart = %v, want an error naming reboot(2)", err)
	}
}

type failingNow struct{ *fakeMachine }

func (f *failingNow) RebootNow() error { return errors.New("EPERM") }
