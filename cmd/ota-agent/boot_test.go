package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
)

// bootConfig writes a config with boot_deadline and apps (name to host)
// with reset "none".
func bootConfig(t *testing.T, dir, deadline string, apps ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\nruntime_dir = %q\nboot_deadline = %q\n", filepath.Join(dir, "state"), filepath.Join(dir, "run"), deadline)
	for i := 0; i < len(apps); i += 2 {
		fmt.Fprintf(&b, "[[app]]\nname = %q\nhost = %q\nproject = \"p\"\nfiles = [\"a.py\", \"lib/b.py\"]\napp_dir = %q\nreset = \"none\"\n",
			apps[i], apps[i+1], filepath.Join(dir, apps[i]))
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// stallingServer accepts every request and never answers it.
func stallingServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The boot deadline is "the server could not be reached", whatever the
// number of apps: the boot unit tolerates it (exit 75) and does not fail.
func TestBootDeadlineIsTempFail(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("%d apps", n), func(t *testing.T) {
			dir := t.TempDir()
			srv := stallingServer(t)
			var apps []string
			for i := range n {
				apps = append(apps, fmt.Sprintf("app%d", i), srv.URL)
			}
			cfg := bootConfig(t, dir, "1s", apps...)
			start := time.Now()
			code, _, stderr := runCLI(t, "update", "--boot", "--config", cfg)
			took := time.Since(start)
			if code != ExitTempFail {
				t.Errorf("update --boot against a stalling server, %d apps = exit %d, want 75; stderr:\n%s", n, code, stderr)
			}
			if took > 4*time.Second {
				t.Errorf("update --boot took %v, want about the 1s boot_deadline (the timeout is 5s)", took)
			}
			if n > 1 && !strings.Contains(stderr, "boot_deadline passed") {
				t.Errorf("stderr does not name the boot deadline:\n%s", stderr)
			}
		})
	}
}

// --wait behind another holder of the app's lock waits until the boot
// deadline, then gives up with 75.
func TestBootWaitForLockPastDeadline(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v2", nil)
	cfg := bootConfig(t, dir, "1s", "one", srv.URL)
	s, err := store.Open(filepath.Join(dir, "state", "one"), filepath.Join(dir, "one"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	start := time.Now()
	code, _, stderr := runCLI(t, "update", "--boot", "--wait", "--config", cfg)
	took := time.Since(start)
	if code != ExitTempFail {
		t.Errorf("update --boot --wait behind a held lock = exit %d, want 75; stderr:\n%s", code, stderr)
	}
	if took < time.Second || took > 5*time.Second {
		t.Errorf("update --boot --wait gave up after %v, want at the 1s boot_deadline", took)
	}
	if got := readTree(filepath.Join(dir, "one")); got != "" {
		t.Errorf("app dir = %q, want nothing installed", got)
	}
}

// A boot deadline that passes while a hard reset waits for the reboot does
// not end it: a board that does not go down still gets the watchdog, then
// reboot(2), each after reboot_grace.
func TestBootDeadlineDoesNotCutHardReset(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v2", nil)
	cfg := hardConfig(t, dir, map[string]string{"one": srv.URL}, "boot_deadline = \"1s\"\nreboot_grace = \"1500ms\"", "")
	m := fakeMachine(nil)
	start := time.Now()
	var at time.Duration
	m.rebootNow = func() error { at = time.Since(start); m.record("reboot(2)"); return nil }
	code, _, stderr := runCLIOn(t, m, "update", "--boot", "--config", cfg)
	if code != ExitOK {
		t.Errorf("update --boot = exit %d, want 0; stderr:\n%s", code, stderr)
	}
	if got, want := m.steps(), "reboot.target,watchdog /dev/watchdog,reboot(2)"; got != want {
		t.Errorf("hard reset steps = %s, want %s", got, want)
	}
	if at < 3*time.Second {
		t.Errorf("reboot(2) after %v, want after two reboot_grace (3s)", at)
	}
	if got := readTree(filepath.Join(dir, "one")); got != "a.py=a2;lib/b.py=b2;" {
		t.Errorf("app dir = %q, want v2", got)
	}
}

// SIGTERM (the end of the command's context) is the shutdown that tells
// the hard reset of update the reboot is under way.
func TestUpdateHardResetEndsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v2", nil)
	cfg := hardConfig(t, dir, map[string]string{"one": srv.URL}, `reboot_grace = "1h"`, "")
	m := fakeMachine(nil)
	ctx, stop := context.WithCancel(context.Background())
	m.rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error {
		m.record("reboot.target")
		stop() // systemd stops the agent on its way down
		return nil
	}
	g := &globals{stdout: &strings.Builder{}, stderr: &strings.Builder{}, machine: m}
	done := make(chan int, 1)
	go func() { done <- g.exitCode(g.dispatch(ctx, []string{"update", "--config", cfg})) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("update still waiting after the SIGTERM of the shutdown")
	}
	if got := m.steps(); got != "reboot.target" {
		t.Errorf("hard reset steps = %s, want reboot.target only", got)
	}
}
