package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/reset"
)

// machine replaces what a hard reset does to the machine and records it.
type machine struct {
	calls []string
}

func fakeMachine(t *testing.T, watchdogErr error, grace chan time.Time) *machine {
	m := &machine{}
	oldReboot, oldFire, oldNow, oldAfter := rebootViaSystemd, fireWatchdog, rebootNow, afterGrace
	t.Cleanup(func() { rebootViaSystemd, fireWatchdog, rebootNow, afterGrace = oldReboot, oldFire, oldNow, oldAfter })
	rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error { m.calls = append(m.calls, "reboot.target"); return nil }
	fireWatchdog = func(ctx context.Context, dev string, log zerolog.Logger) (time.Duration, error) {
		m.calls = append(m.calls, "watchdog "+dev)
		return 15 * time.Second, watchdogErr
	}
	rebootNow = func() error { m.calls = append(m.calls, "reboot(2)"); return nil }
	afterGrace = func(time.Duration) <-chan time.Time { return grace }
	return m
}

func hardConfig(t *testing.T, dir string, apps map[string]string, extra string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\nruntime_dir = %q\n", filepath.Join(dir, "state"), filepath.Join(dir, "run"))
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
	cfg := hardConfig(t, dir, map[string]string{"one": srv.URL, "two": broken.URL, "three": srv.URL}, "")
	m := fakeMachine(t, nil, nil)
	var seen []string
	rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error {
		seen = append(seen, readTree(filepath.Join(dir, "one"))+readTree(filepath.Join(dir, "three")))
		m.calls = append(m.calls, "reboot.target")
		return nil
	}
	grace := make(chan time.Time)
	afterGrace = func(time.Duration) <-chan time.Time { return grace }
	go func() {
		// The board "does not go down": after grace the fallbacks follow.
		grace <- time.Now()
		grace <- time.Now()
	}()
	code, _, stderr := runCLI(t, "update", "--config", cfg)
	if code != ExitFailed {
		t.Fatalf("update = exit %d, want 1 (app two failed); stderr:\n%s", code, stderr)
	}
	want := "reboot.target,watchdog /dev/watchdog,reboot(2)"
	if got := strings.Join(m.calls, ","); got != want {
		t.Errorf("hard reset steps = %s, want %s", got, want)
	}
	if len(seen) != 1 || seen[0] != "a.py=a2;lib/b.py=b2;a.py=a2;lib/b.py=b2;" {
		t.Errorf("at the reboot the apps held %q, want both switched to v2, one reboot", seen)
	}
	// Up to date: no reboot.
	m.calls = nil
	cfg = hardConfig(t, dir, map[string]string{"one": srv.URL, "three": srv.URL}, "")
	if code, _, stderr := runCLI(t, "update", "--config", cfg); code != 0 || len(m.calls) != 0 {
		t.Errorf("update when up to date = exit %d, reset steps %v; want 0 and none\n%s", code, m.calls, stderr)
	}
}

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
			cfg := hardConfig(t, dir, map[string]string{"one": srv.URL}, "hard_reset = \"watchdog\"\nwatchdog_device = \"/dev/wd9\"")
			grace := make(chan time.Time, 1)
			grace <- time.Now()
			m := fakeMachine(t, tt.err, grace)
			rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error {
				m.calls = append(m.calls, "reboot.target")
				return context.Canceled // stop the fallbacks here
			}
			fireOnce := fireWatchdog
			n := 0
			fireWatchdog = func(ctx context.Context, dev string, log zerolog.Logger) (time.Duration, error) {
				if n++; n > 1 {
					return 0, reset.ErrWatchdogBusy
				}
				return fireOnce(ctx, dev, log)
			}
			runCLI(t, "update", "--config", cfg)
			if got := strings.Join(m.calls, ","); got != tt.want {
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
	cfg := hardConfig(t, dir, map[string]string{"one": srv.URL}, "")
	m := fakeMachine(t, nil, nil)
	code, _, stderr := runCLI(t, "update", "--config", cfg)
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
