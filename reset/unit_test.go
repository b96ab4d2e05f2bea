package reset_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/reset"
)

// The agent drives a Unit through these two methods.
var _ interface {
	Stop(context.Context) (bool, error)
	Start(context.Context) error
	Check(context.Context) error
} = (*reset.Unit)(nil)

// userManager starts a private systemd user manager and points this test's
// D-Bus clients at it.
func userManager(t *testing.T) *testenv.UserManager {
	t.Helper()
	m := testenv.StartUserManager(t)
	m.Setenv(t)
	return m
}

// appScript is a long-running app: it records its PID and each start, and
// takes STOP_DELAY seconds to exit on SIGTERM (so a test can see Stop wait).
const appScript = `#!/bin/sh
dir=$1
trap 'sleep "${STOP_DELAY:-0}"; exit 0' TERM
echo $$ > "$dir/pid"
echo started >> "$dir/marker"
sleep 1000 &
wait
`

// writeApp writes the app's script and a simple service unit running it,
// and returns the directory the app writes into.
func writeApp(t *testing.T, m *testenv.UserManager, unit string, stopDelay time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "app.sh")
	if err := os.WriteFile(script, []byte(appScript), 0o755); err != nil {
		t.Fatal(err)
	}
	// KillMode=mixed: SIGTERM to the shell alone, so the sleep its trap
	// forks is not caught by systemd's control-group SIGTERM sweep.
	m.WriteUnit(t, unit, fmt.Sprintf(`[Service]
KillMode=mixed
Environment=STOP_DELAY=%.1f
ExecStart=/bin/sh "%s" "%s"
`, stopDelay.Seconds(), script, dir))
	return dir
}

// show reads one property of a unit.
func show(t *testing.T, m *testenv.UserManager, unit, prop string) string {
	t.Helper()
	return m.Systemctl(t, "show", unit, "-p", prop, "--value")
}

// waitPID waits until the app has written pid into dir (it runs
// asynchronously after a simple service's start job).
func waitPID(t *testing.T, dir string, pid string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "pid"))
		if strings.TrimSpace(string(b)) == pid {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("app wrote pid %q, want %q (MainPID)", strings.TrimSpace(string(b)), pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid string) bool {
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
	if err != nil {
		return false
	}
	// A zombie is dead: "pid (comm) Z ...".
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnitCheck(t *testing.T) {
	m := userManager(t)
	writeApp(t, m, "app.service", 0)
	ctx := testCtx(t)

	if err := (&reset.Unit{Name: "app.service", Bus: reset.BusUser}).Check(ctx); err != nil {
		t.Errorf("Check(%q) = %v, want nil", "app.service", err)
	}
	// D-Bus takes a name as given: a bare one is refused, not completed.
	if err := (&reset.Unit{Name: "app", Bus: reset.BusUser}).Check(ctx); err == nil || !strings.Contains(err.Error(), `"app.service"`) {
		t.Errorf("Check(%q) = %v, want an error suggesting app.service", "app", err)
	}

	u := &reset.Unit{Name: "missing.service", Bus: reset.BusUser}
	err := u.Check(ctx)
	if !errors.Is(err, reset.ErrUnitNotFound) {
		t.Fatalf("Check(missing) = %v, want ErrUnitNotFound", err)
	}
	for _, want := range []string{"missing.service", "user bus"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check(missing) = %q, want it to name %q", err, want)
		}
	}

	m.Systemctl(t, "mask", "masked.service")
	m.Systemctl(t, "daemon-reload")
	u = &reset.Unit{Name: "masked.service", Bus: reset.BusUser}
	if err := u.Check(ctx); err == nil || !strings.Contains(err.Error(), "masked") {
		t.Errorf("Check(masked) = %v, want an error saying masked", err)
	}
}

func TestUnitStopStart(t *testing.T) {
	m := userManager(t)
	dir := writeApp(t, m, "app.service", 0)
	ctx := testCtx(t)
	m.Systemctl(t, "start", "app.service")
	oldPID, oldInv := show(t, m, "app.service", "MainPID"), show(t, m, "app.service", "InvocationID")
	waitPID(t, dir, oldPID)

	u := &reset.Unit{Name: "app.service", Bus: reset.BusUser}
	start := time.Now()
	wasActive, err := u.Stop(ctx)
	t.Logf("Stop took %v", time.Since(start))
	if err != nil || !wasActive {
		t.Fatalf("Stop() = %v, %v; want true, nil", wasActive, err)
	}
	if got := show(t, m, "app.service", "ActiveState"); got != "inactive" {
		t.Errorf("ActiveState after Stop = %q, want inactive", got)
	}
	if alive(oldPID) {
		t.Errorf("old main process %s still running after Stop", oldPID)
	}

	// Stopping what is already stopped is a no-op that says so.
	if wasActive, err := u.Stop(ctx); err != nil || wasActive {
		t.Errorf("second Stop() = %v, %v; want false, nil", wasActive, err)
	}

	start = time.Now()
	if err := u.Start(ctx); err != nil {
		t.Fatalf("Start() = %v, want nil", err)
	}
	t.Logf("Start took %v", time.Since(start))
	if got := show(t, m, "app.service", "ActiveState"); got != "active" {
		t.Errorf("ActiveState after Start = %q, want active", got)
	}
	newPID, newInv := show(t, m, "app.service", "MainPID"), show(t, m, "app.service", "InvocationID")
	if newPID == oldPID || newPID == "0" {
		t.Errorf("MainPID after Start = %s, want a new one (was %s)", newPID, oldPID)
	}
	if newInv == oldInv || newInv == "" {
		t.Errorf("InvocationID after Start = %q, want a new one (was %q)", newInv, oldInv)
	}
	waitPID(t, dir, newPID)
	b, _ := os.ReadFile(filepath.Join(dir, "marker"))
	if n := strings.Count(string(b), "started"); n != 2 {
		t.Errorf("app started %d times, want 2", n)
	}

	// A unit that is still running (started by someone else during the
	// switch) was not restarted by Start: that is an error.
	err = u.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("Start() on a running unit = %v, want an 'already running' error", err)
	}
	if got := show(t, m, "app.service", "MainPID"); got != newPID {
		t.Errorf("MainPID = %s after Start on a running unit, want it untouched (%s)", got, newPID)
	}
}

func TestUnitStopWaitsForExit(t *testing.T) {
	m := userManager(t)
	const delay = 600 * time.Millisecond
	dir := writeApp(t, m, "slow.service", delay)
	m.Systemctl(t, "start", "slow.service")
	pid := show(t, m, "slow.service", "MainPID")
	waitPID(t, dir, pid)

	u := &reset.Unit{Name: "slow.service", Bus: reset.BusUser}
	start := time.Now()
	wasActive, err := u.Stop(testCtx(t))
	took := time.Since(start)
	if err != nil || !wasActive {
		t.Fatalf("Stop() = %v, %v; want true, nil", wasActive, err)
	}
	if took < delay {
		t.Errorf("Stop() returned after %v, before the app's %v shutdown", took, delay)
	}
	if alive(pid) {
		t.Errorf("main process %s still running when Stop returned", pid)
	}
}

func TestUnitStopAtBoot(t *testing.T) {
	m := userManager(t)
	writeApp(t, m, "app.service", 0)

	u := &reset.Unit{Name: "app.service", Bus: reset.BusUser}
	wasActive, err := u.Stop(testCtx(t))
	if err != nil || wasActive {
		t.Fatalf("Stop() of a never-started unit = %v, %v; want false, nil", wasActive, err)
	}
	if got := show(t, m, "app.service", "ActiveState"); got != "inactive" {
		t.Errorf("ActiveState = %q, want inactive (untouched)", got)
	}
}

func TestUnitStopMissing(t *testing.T) {
	userManager(t)
	u := &reset.Unit{Name: "missing.service", Bus: reset.BusUser}
	if _, err := u.Stop(testCtx(t)); !errors.Is(err, reset.ErrUnitNotFound) {
		t.Errorf("Stop(missing) = %v, want ErrUnitNotFound", err)
	}
	if err := u.Start(testCtx(t)); !errors.Is(err, reset.ErrUnitNotFound) {
		t.Errorf("Start(missing) = %v, want ErrUnitNotFound", err)
	}
}

func TestUnitStartFails(t *testing.T) {
	tests := []struct {
		name, unit string
		want       string // in the error, beside the unit's name
	}{
		{
			name: "binary missing",
			unit: "[Service]\nType=exec\nExecStart=/nonexistent/ota-test-app\n",
			want: `job result "failed"`,
		},
		{
			name: "exits before ready",
			unit: "[Service]\nType=notify\nExecStart=/bin/false\n",
			want: `unit result "exit-code"`,
		},
		{
			name: "oneshot fails",
			unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/false\n",
			want: `job result "failed"`,
		},
		{
			name: "done but not active",
			unit: "[Service]\nType=oneshot\nExecStart=/bin/true\n",
			want: "inactive/dead after its start job",
		},
	}
	m := userManager(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("bad%d.service", i)
			m.WriteUnit(t, name, tt.unit)
			u := &reset.Unit{Name: name, Bus: reset.BusUser}
			err := u.Start(testCtx(t))
			if err == nil {
				t.Fatal("Start() = nil, want an error")
			}
			for _, want := range []string{name, "user bus", tt.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Start() = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestUnitStartCancelled(t *testing.T) {
	m := userManager(t)
	// Never sends READY=1: the start job stays queued.
	m.WriteUnit(t, "hang.service", "[Service]\nType=notify\nExecStart=/bin/sleep 1000\nTimeoutStartSec=60\n")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	u := &reset.Unit{Name: "hang.service", Bus: reset.BusUser}
	start := time.Now()
	err := u.Start(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start() = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Start() returned after %v, want soon after its 300ms deadline", took)
	}
}

func TestUnitBadBus(t *testing.T) {
	u := &reset.Unit{Name: "app.service", Bus: "session"}
	if err := u.Check(context.Background()); err == nil || !strings.Contains(err.Error(), `"session"`) {
		t.Errorf("Check() with bus %q = %v, want an unknown-bus error", u.Bus, err)
	}
	if err := reset.Reboot(context.Background(), "session"); err == nil {
		t.Error("Reboot() with an unknown bus = nil, want an error")
	}
	if err := (&reset.Unit{Bus: reset.BusUser}).Check(context.Background()); err == nil {
		t.Error("Check() with no unit name = nil, want an error")
	}
}

func TestUnitSystemBusUnreachable(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	u := &reset.Unit{Name: "app.service"} // zero Bus: the system manager
	err := u.Check(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "app.service (system bus)") {
		t.Errorf("Check() = %v, want an error naming app.service and the system bus", err)
	}
}

func TestReboot(t *testing.T) {
	m := userManager(t)
	ctx := testCtx(t)

	// A user manager has no reboot.target of its own.
	if err := reset.Reboot(ctx, reset.BusUser); err == nil || !strings.Contains(err.Error(), "reboot.target") {
		t.Fatalf("Reboot() without reboot.target = %v, want an error naming it", err)
	}

	// A stand-in reboot.target whose start takes a while, so the test can
	// see the job queued and irreversible.
	dir := t.TempDir()
	m.WriteUnit(t, "shutdown-work.service", fmt.Sprintf(
		"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'sleep 1; touch \"%s/rebooted\"'\n", dir))
	m.WriteUnit(t, "reboot.target", "[Unit]\nRequires=shutdown-work.service\nAfter=shutdown-work.service\n")

	start := time.Now()
	if err := reset.Reboot(ctx, reset.BusUser); err != nil {
		t.Fatalf("Reboot() = %v, want nil", err)
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("Reboot() took %v: it should return once the job is queued", took)
	}
	// replace-irreversibly: a later conflicting job cannot cancel it.
	_, err := m.TrySystemctl("stop", "--no-block", "reboot.target")
	if err == nil || !strings.Contains(err.Error(), "destructive") {
		t.Errorf("stop of a queued reboot.target: %v, want it refused as destructive", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for show(t, m, "reboot.target", "ActiveState") != "active" {
		if time.Now().After(deadline) {
			t.Fatal("reboot.target not active 10 s after Reboot")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "rebooted")); err != nil {
		t.Errorf("reboot.target reached without its work: %v", err)
	}
}

func TestCheckUnitName(t *testing.T) {
	for _, tt := range []struct {
		name, want string // want: a part of the error, "" for nil
	}{
		{"app.service", ""},
		{"app@1.service", ""},
		{"data.mount", ""},
		{"app", `"app" has no unit type; did you mean "app.service"?`},
		{".service", "has no unit type"},
		{"../app.service", "is not a unit name"},
		{`a\b.service`, "is not a unit name"},
		{"app\n.service", "is not a unit name"},
	} {
		err := reset.CheckUnitName(tt.name)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckUnitName(%q) = %v, want %q", tt.name, err, tt.want)
		}
	}
}
