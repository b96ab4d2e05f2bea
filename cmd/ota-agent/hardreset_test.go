package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/reset"
)

// machine is a reset.Machine that records what a hard reset does to the
// machine instead of doing it; tests replace its functions.
type machine struct {
	mu               sync.Mutex
	calls            []string
	rebootViaSystemd func(ctx context.Context, bus reset.Bus) error
	fireWatchdog     func(ctx context.Context, dev string) (time.Duration, error)
	rebootNow        func() error
}

var _ reset.Machine = (*machine)(nil)

func (m *machine) Reboot(ctx context.Context, bus reset.Bus) error {
	return m.rebootViaSystemd(ctx, bus)
}
func (m *machine) FireWatchdog(ctx context.Context, dev string) (time.Duration, error) {
	return m.fireWatchdog(ctx, dev)
}
func (m *machine) RebootNow() error { return m.rebootNow() }

func (m *machine) record(s string) {
	m.mu.Lock()
	m.calls = append(m.calls, s)
	m.mu.Unlock()
}

func (m *machine) steps() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.calls, ",")
}

// fakeMachine is a board that never goes down: systemd queues the reboot,
// the watchdog arms (with a 10 ms timeout) or fails with watchdogErr, and
// reboot(2) returns.
func fakeMachine(watchdogErr error) *machine {
	m := &machine{}
	m.rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error { m.record("reboot.target"); return nil }
	m.fireWatchdog = func(ctx context.Context, dev string) (time.Duration, error) {
		m.record("watchdog " + dev)
		return 10 * time.Millisecond, watchdogErr
	}
	m.rebootNow = func() error { m.record("reboot(2)"); return nil }
	return m
}

// runCLIOn is runCLI with m as the machine a hard reset acts on.
func runCLIOn(t *testing.T, m reset.Machine, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdout: &out, stderr: &errb, machine: m}
	code := g.exitCode(g.dispatch(context.Background(), args))
	return code, out.String(), errb.String()
}

// hardConfig writes a config of hard-reset apps (one, two, three: name to
// host), global keys first and extra in every app.
func hardConfig(t *testing.T, dir string, apps map[string]string, global, extra string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\nruntime_dir = %q\n%s\n", filepath.Join(dir, "state"), filepath.Join(dir, "run"), global)
	for _, name := range []string{"one", "two", "three"} {
		host, ok := apps[name]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "[[app]]\nname = %q\nhost = %q\nproject = \"p\"\nfiles = [\"a.py\", \"lib/b.py\"]\napp_dir = %q\nreset = \"hard\"\n%s\n",
			name, host, filepath.Join(dir, name), extra)
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// With several apps the board reboots once, after all of them switched;
// a failing app does not prevent the others' reboot.
func TestHardResetRebootsOnceAfterAllApps(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v2", nil)
	broken := cliServer(t, "v2", map[string]int{"/p/v2_a.py": 404})
	// The board "does not go down": after grace the fallbacks follow.
	const grace = `reboot_grace = "10ms"`
	cfg := hardConfig(t, dir, map[string]string{"one": srv.URL, "two": broken.URL, "three": srv.URL}, grace, "")
	m := fakeMachine(nil)
	var seen []string
	m.rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error {
		seen = append(seen, readTree(filepath.Join(dir, "one"))+readTree(filepath.Join(dir, "three")))
		m.record("reboot.target")
		return nil
	}
	code, _, stderr := runCLIOn(t, m, "update", "--config", cfg)
	if code != ExitFailed {
		t.Fatalf("update = exit %d, want 1 (app two failed); stderr:\n%s", code, stderr)
	}
	want := "reboot.target,watchdog /dev/watchdog,reboot(2)"
	if got := m.steps(); got != want {
		t.Errorf("hard reset steps = %s, want %s", got, want)
	}
	if len(seen) != 1 || seen[0] != "a.py=a2;lib/b.py=b2;a.py=a2;lib/b.py=b2;" {
		t.Errorf("at the reboot the apps held %q, want both switched to v2, one reboot", seen)
	}
	// Up to date: no reboot.
	m.calls = nil
	cfg = hardConfig(t, dir, map[string]string{"one": srv.URL, "three": srv.URL}, grace, "")
	if code, _, stderr := runCLIOn(t, m, "update", "--config", cfg); code != 0 || len(m.calls) != 0 {
		t.Errorf("update when up to date = exit %d, reset steps %v; want 0 and none\n%s", code, m.calls, stderr)
	}
}

// hard_reset and watchdog_device reach the hard reset.
func TestHardResetWatchdog(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		// Armed: it waits for the reset; a board still up after the
		// watchdog's timeout plus grace gets reboot(2).
		{"armed", nil, "watchdog /dev/wd9,reboot(2)"},
		{"busy falls back to systemd", reset.ErrWatchdogBusy, "watchdog /dev/wd9,reboot.target,reboot(2)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			srv := cliServer(t, "v2", nil)
			cfg := hardConfig(t, dir, map[string]string{"one": srv.URL}, `reboot_grace = "10ms"`, "hard_reset = \"watchdog\"\nwatchdog_device = \"/dev/wd9\"")
			m := fakeMachine(tt.err)
			m.rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error {
				m.record("reboot.target")
				return context.Canceled // stop the fallbacks here
			}
			fireOnce := m.fireWatchdog
			n := 0
			m.fireWatchdog = func(ctx context.Context, dev string) (time.Duration, error) {
				if n++; n > 1 {
					return 0, reset.ErrWatchdogBusy
				}
				return fireOnce(ctx, dev)
			}
			runCLIOn(t, m, "update", "--config", cfg)
			if got := m.steps(); got != tt.want {
				t.Errorf("hard reset steps = %s, want %s", got, tt.want)
			}
		})
	}
}

// State on a filesystem that forgets it at reboot would reinstall and
// reboot for ever: refused before anything is downloaded.
func TestHardResetRefusedOnVolatileState(t *testing.T) {
	testenv.Require(t, "root (to mount a tmpfs)", os.Geteuid() == 0)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, syscall.MNT_DETACH) })
	srv := cliServer(t, "v2", nil)
	cfg := hardConfig(t, dir, map[string]string{"one": srv.URL}, "", "")
	m := fakeMachine(nil)
	code, _, stderr := runCLIOn(t, m, "update", "--config", cfg)
	if code != ExitUsage || !strings.Contains(stderr, "tmpfs") || !strings.Contains(stderr, "does not survive a reboot") {
		t.Fatalf("update with state on tmpfs = exit %d, stderr %q; want 2 explaining why", code, stderr)
	}
	if len(m.calls) != 0 {
		t.Errorf("reset steps = %v, want none", m.calls)
	}
	if got := readTree(filepath.Join(dir, "one")); got != "" {
		t.Errorf("app dir = %q, want nothing installed", got)
	}
}
