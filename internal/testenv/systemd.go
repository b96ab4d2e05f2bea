package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// SystemdBinary is the manager StartUserManager runs as "systemd --user".
const SystemdBinary = "/lib/systemd/systemd"

// Bounds of the user manager's life in a test.
const (
	managerReadyTimeout = 10 * time.Second // start until SystemState is running
	managerExitTimeout  = 10 * time.Second // `systemctl --user exit` until the process is gone
	systemctlTimeout    = 30 * time.Second // one systemctl call
)

// UserManager is a private systemd user manager (systemd --user) started for
// one test: its own cgroup, mount namespace, runtime directory, unit
// directory and D-Bus session bus. It sees
// the host's packaged user units (/usr/lib/systemd/user) but no user's own.
type UserManager struct {
	// RuntimeDir is the manager's XDG_RUNTIME_DIR: its private socket
	// (systemd/private) and the session bus socket (bus) live there.
	RuntimeDir string
	// ConfigDir is the manager's XDG_CONFIG_HOME: unit files go into
	// ConfigDir/systemd/user (see WriteUnit).
	ConfigDir string
	// Env is what a client needs to reach this manager, as KEY=value:
	// XDG_RUNTIME_DIR (systemctl --user) and DBUS_SESSION_BUS_ADDRESS
	// (go-systemd's NewUserConnectionContext; godbus does not derive it).
	Env []string
	// LogPath is the manager's log and its units' stdout and stderr, for
	// tests that check what a unit printed. Its tail is logged when the test
	// fails.
	LogPath string

	dir     string
	cgroups []string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	kmsg    *os.File
	copied  chan struct{}
}

var managerSeq atomic.Int64

// StartUserManager starts a user manager for the test and stops it, and
// removes everything it made, when the test ends. It returns once
// `systemctl --user show -p SystemState` says running (or degraded: a host
// unit failed, the manager works) and the session bus socket exists, within
// 10 s (about 0.1 s on the development machine).
//
// It needs Linux, root, cgroupfs (hybrid or unified), unshare, systemctl and
// dbus-daemon. When any is missing, or the manager does not come up, the
// test is skipped with the reason, or fails when CI is "true" (Require).
//
// Clients in the test process use it through m.Env (see Setenv); the
// manager hands a clean environment to its units.
func StartUserManager(t testing.TB) *UserManager {
	t.Helper()
	Require(t, "systemd --user (Linux only)", runtime.GOOS == "linux")
	Require(t, "systemd --user (needs root for cgroups and mounts)", os.Geteuid() == 0)
	for _, bin := range []string{SystemdBinary, "unshare", "systemctl", "dbus-daemon"} {
		_, err := exec.LookPath(bin)
		Require(t, "systemd --user (needs "+bin+")", err == nil)
	}
	roots, err := cgroupRoots()
	Require(t, fmt.Sprintf("systemd --user (%v)", err), err == nil)

	m := &UserManager{exited: make(chan struct{}), copied: make(chan struct{})}
	if err := m.start(t, roots); err != nil {
		m.stop(t)
		Require(t, fmt.Sprintf("systemd --user (%v)", err), false)
	}
	t.Cleanup(func() { m.stop(t) })
	if err := m.waitReady(); err != nil {
		Require(t, fmt.Sprintf("systemd --user (%v; log:\n%s)", err, m.logTail()), false)
	}
	return m
}

// cgroupRoots returns the hierarchies the manager needs a cgroup in: the
// unified one, plus the named systemd one on a hybrid (v1+v2) host.
func cgroupRoots() ([]string, error) {
	const base = "/sys/fs/cgroup"
	if fileExists(filepath.Join(base, "cgroup.controllers")) {
		return []string{base}, nil // unified only
	}
	var roots []string
	for _, h := range []string{"unified", "systemd"} {
		if fileExists(filepath.Join(base, h, "cgroup.procs")) {
			roots = append(roots, filepath.Join(base, h))
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("no cgroup2 or name=systemd hierarchy under " + base)
	}
	return roots, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// waitReady polls the manager until it runs, exits, or the time is up.
func (m *UserManager) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), managerReadyTimeout)
	defer cancel()
	bus := filepath.Join(m.RuntimeDir, "bus")
	state := ""
	for ctx.Err() == nil {
		select {
		case <-m.exited:
			return fmt.Errorf("manager exited during start: %v", m.waitErr)
		default:
		}
		out, err := m.systemctl(ctx, "show", "-p", "SystemState", "--value")
		if err == nil {
			state = strings.TrimSpace(out)
			if (state == "running" || state == "degraded") && fileExists(bus) {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("manager not running after %v (SystemState %q)", managerReadyTimeout, state)
}

// stop ends the manager and removes what start made; safe on a partial start.
func (m *UserManager) stop(t testing.TB) {
	if m.cmd != nil && m.cmd.Process != nil {
		select {
		case <-m.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), managerExitTimeout)
			m.systemctl(ctx, "exit")
			select {
			case <-m.exited:
			case <-ctx.Done():
				t.Logf("systemd --user did not exit within %v; killing it", managerExitTimeout)
				m.cmd.Process.Kill()
				<-m.exited
			}
			cancel()
		}
	}
	if m.kmsg != nil {
		m.kmsg.Close()
		<-m.copied
	}
	if t.Failed() && m.LogPath != "" {
		t.Logf("systemd --user log (%s):\n%s", m.LogPath, m.logTail())
	}
	for _, cg := range m.cgroups {
		if err := removeCgroup(cg); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	}
	if m.dir != "" {
		os.RemoveAll(m.dir)
	}
}

// logTail is the end of the manager's log, for failure messages.
func (m *UserManager) logTail() string {
	b, err := os.ReadFile(m.LogPath)
	if err != nil {
		return err.Error()
	}
	const max = 16 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// Setenv points this test's D-Bus and systemctl clients at the manager, with
// t.Setenv (so the test cannot be parallel).
func (m *UserManager) Setenv(t testing.TB) {
	t.Helper()
	for _, kv := range m.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// WriteUnit writes a unit file into ConfigDir/systemd/user and reloads the
// manager, so the unit is known when it returns. It fails the test on error.
func (m *UserManager) WriteUnit(t testing.TB, name, content string) {
	t.Helper()
	if name == "" || strings.ContainsRune(name, '/') {
		t.Fatalf("WriteUnit(%q): not a unit file name", name)
	}
	p := filepath.Join(m.ConfigDir, "systemd", "user", name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatalf("WriteUnit: %v", err)
	}
	m.Systemctl(t, "daemon-reload")
}

// Systemctl runs `systemctl --user args...` against the manager and returns
// its standard output without surrounding white space. A non-zero exit
// fails the test, so ask for states with `show -p ... --value` (always 0)
// rather than `is-active` (3 when inactive).
func (m *UserManager) Systemctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), systemctlTimeout)
	defer cancel()
	out, err := m.systemctl(ctx, args...)
	if err != nil {
		t.Fatalf("systemctl --user %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out)
}

// TrySystemctl is Systemctl for commands that may fail: it returns stdout
// without surrounding white space, and an error carrying stderr, instead of
// failing the test.
func (m *UserManager) TrySystemctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), systemctlTimeout)
	defer cancel()
	out, err := m.systemctl(ctx, args...)
	return strings.TrimSpace(out), err
}

// systemctl returns stdout, or an error that carries stderr.
func (m *UserManager) systemctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "systemctl", append([]string{"--user"}, args...)...)
	// Later entries win. XDG_CONFIG_HOME: enable, mask and edit write
	// unit files on the client side; they must land in ConfigDir, not ~.
	cmd.Env = append(os.Environ(), m.Env...)
	cmd.Env = append(cmd.Env, "XDG_CONFIG_HOME="+m.ConfigDir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
