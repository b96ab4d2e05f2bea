//go:build linux

package main

// Health-gated commits and rollbacks against a real systemd user manager:
// the real binary updates an app unit, watches it through its trial, and
// commits it or switches back to the release before.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// trialScript is a release whose app records its start, then behaves as
// told: "run" loops, "exit N" exits at once, "die-after S N" exits with N
// after S seconds.
func trialScript(v, behave string) string {
	return fmt.Sprintf(`echo "start %s $$" >> "$2"
case %q in
run) while :; do sleep 0.1; done ;;
exit*) exit ${3:-%s} ;;
die-after*) sleep %s; exit 4 ;;
esac
`, v, behave, strings.TrimPrefix(behave, "exit "), strings.TrimPrefix(behave, "die-after "))
}

type trialDevice struct {
	t                          *testing.T
	m                          *testenv.UserManager
	srv                        *sdServer
	dir, appDir, logPath, stat string
	env                        []string
	extra                      []string
}

func newTrialDevice(t *testing.T, releases map[string]string, extra ...string) *trialDevice {
	t.Helper()
	d := &trialDevice{t: t, m: testenv.StartUserManager(t), srv: newSDServer(t), dir: t.TempDir(), extra: extra}
	d.appDir, d.logPath = filepath.Join(d.dir, "app"), filepath.Join(d.dir, "app.log")
	for v, behave := range releases {
		d.srv.add(v, map[string]string{"app.sh": trialScript(v, behave), "VERSION": v + "\n"})
	}
	d.m.WriteUnit(t, "app.service", fmt.Sprintf("[Service]\nType=simple\nExecStart=/bin/sh %q %q %q\nRestart=on-failure\nRestartSec=200ms\n",
		filepath.Join(d.appDir, "app.sh"), d.appDir, d.logPath))
	d.env = sdEnv(d.m.Env...)
	return d
}

func (d *trialDevice) args(verb string, more ...string) []string {
	a := []string{verb, "--host", d.srv.URL, "--project", "p", "--files", "app.sh,VERSION",
		"--app-dir", d.appDir, "--state-dir", filepath.Join(d.dir, "state"), "--runtime-dir", filepath.Join(d.dir, "run"),
		"--unit", "app.service", "--systemd-bus", "user", "--trial", "2s", "--start-timeout", "5s", "--health-grace", "1s"}
	return append(append(a, d.extra...), more...)
}

func (d *trialDevice) run(verb string, more ...string) (int, string) {
	d.t.Helper()
	return sdRun(d.t, d.env, d.args(verb, more...)...)
}

// installed returns the version in the app dir and the status of the app.
func (d *trialDevice) status() map[string]any {
	d.t.Helper()
	code, out := sdRunOut(d.t, d.env, append(d.args("status"), "--json")...)
	if code != 0 {
		d.t.Fatalf("status = exit %d: %s", code, out)
	}
	var s struct {
		Apps []map[string]any `json:"apps"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Apps) != 1 {
		d.t.Fatalf("status --json = %q (%v)", out, err)
	}
	return s.Apps[0]
}

// startV1 installs v1 (committed) and starts the app on it.
func (d *trialDevice) startV1() (pid string) {
	d.t.Helper()
	d.srv.publish("v1")
	if code, stderr := d.run("update"); code != ExitOK {
		d.t.Fatalf("update to v1 = exit %d:\n%s", code, stderr)
	}
	d.m.Systemctl(d.t, "start", "app.service")
	return d.waitStart("v1", "")
}

// waitStart waits for a start of release v by a process other than not.
func (d *trialDevice) waitStart(v, not string) (pid string) {
	d.t.Helper()
	sdWait(d.t, 10*time.Second, "the app starts on "+v, func() (bool, string) {
		pid = sdProp(d.t, d.m, "app.service", "MainPID")
		return pid != not && pid != "0" && slices.Contains(sdLines(d.logPath), "start "+v+" "+pid) &&
			sdProp(d.t, d.m, "app.service", "ActiveState") == "active", fmt.Sprintf("MainPID %s, log %q", pid, sdLines(d.logPath))
	})
	return pid
}

func (d *trialDevice) appVersion() string {
	return strings.TrimSpace(sdTree(d.t, d.appDir)["VERSION"])
}

// A release that fails its trial is rolled back: the old app runs again
// under a new MainPID, the update exits 1 saying why, the version is marked
// bad and is not downloaded again while the server names it; a later tag
// is installed.
func TestTrialRollsBack(t *testing.T) {
	tests := []struct {
		name, behave string
		extra        []string
		want         []string // the reason says one of these (a restart by
		// Restart=on-failure may come before the agent reads the exit status)
	}{
		{"exits at start", "exit 3", nil, []string{"status 3", "restarted"}},
		{"dies within the trial", "die-after 1", []string{"--trial", "3s"}, []string{"status 4", "restarted"}},
		{"health command fails", "run", []string{"--health-command", "/bin/sh", "--health-command", "-c", "--health-command", "if grep -qx v2 VERSION; then echo not ready; exit 1; fi"},
			[]string{"health_command exited 1: not ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newTrialDevice(t, map[string]string{"v1": "run", "v2": tt.behave, "v3": "run"}, tt.extra...)
			pid1 := d.startV1()
			d.srv.publish("v2")
			start := time.Now()
			code, stderr := d.run("update")
			if code != ExitFailed || !strings.Contains(stderr, "rolled back") || !slices.ContainsFunc(tt.want, func(w string) bool { return strings.Contains(stderr, w) }) {
				t.Fatalf("update to a failing v2 = exit %d, want 1 saying rolled back and one of %q:\n%s", code, tt.want, stderr)
			}
			t.Logf("judged and rolled back in %v", time.Since(start).Round(time.Millisecond))
			if v := d.appVersion(); v != "v1" {
				t.Fatalf("after the rollback the app dir holds %q, want v1", v)
			}
			d.waitStart("v1", pid1)
			st := d.status()
			bad, _ := st["bad_versions"].([]any)
			last, _ := st["last_rollback"].(map[string]any)
			if st["version"] != "v1" || st["trial"] != nil || len(bad) != 1 || last["from"] != "v2" || last["to"] != "v1" {
				t.Errorf("status after the rollback = %v, want v1, no trial, v2 bad, last rollback v2 -> v1", st)
			}

			// The bad version is not downloaded again while it is named.
			d.srv.takeRequests()
			if code, stderr := d.run("update"); code != ExitOK || !strings.Contains(stderr, "failed its trial") {
				t.Errorf("update while v2 is named = exit %d, want 0 saying it failed its trial:\n%s", code, stderr)
			}
			if code, out := sdRunOut(t, d.env, d.args("check")...); code != ExitOK || !strings.Contains(out, "failed its trial") {
				t.Errorf("check while v2 is named = exit %d, %q; want 0 saying so", code, out)
			}
			if got := d.srv.takeRequests(); !slices.Equal(got, []string{"/p/version", "/p/version"}) {
				t.Errorf("requests while the bad v2 is named = %q, want only version", got)
			}

			// A later tag is installed (and committed).
			d.srv.publish("v3")
			if code, stderr := d.run("update"); code != ExitOK {
				t.Fatalf("update to v3 = exit %d:\n%s", code, stderr)
			}
			if v := d.appVersion(); v != "v3" {
				t.Errorf("after v3, app dir holds %q", v)
			}
			if st := d.status(); st["trial"] != nil || len(st["bad_versions"].([]any)) != 0 {
				t.Errorf("status after v3 = %v, want committed and v2's mark gone (the server moved on)", st)
			}
		})
	}
}

// A healthy release is committed; rollback --to switches back by hand and
// marks the release it leaves; retry clears the mark; on_failure = "keep"
// keeps a failing release.
func TestTrialCommitRollbackRetryKeep(t *testing.T) {
	d := newTrialDevice(t, map[string]string{"v1": "run", "v2": "run", "v3": "exit 5"})
	pid1 := d.startV1()
	d.srv.publish("v2")
	if code, stderr := d.run("update"); code != ExitOK {
		t.Fatalf("update to a healthy v2 = exit %d:\n%s", code, stderr)
	}
	pid2 := d.waitStart("v2", pid1)
	if st := d.status(); st["version"] != "v2" || st["trial"] != nil {
		t.Fatalf("status after a healthy v2 = %v, want v2 committed", st)
	}

	// By hand: back to v1; v2 is marked bad until retry.
	if code, out := sdRunOut(t, d.env, d.args("rollback", "--to", "v1")...); code != ExitOK || !strings.Contains(out, "rolled back from v2") {
		t.Fatalf("rollback --to v1 = exit %d, %q", code, out)
	}
	d.waitStart("v1", pid2)
	if v := d.appVersion(); v != "v1" {
		t.Fatalf("after rollback --to v1, app dir holds %q", v)
	}
	if code, stderr := d.run("update"); code != ExitOK || d.appVersion() != "v1" {
		t.Fatalf("update while v2 is bad = exit %d, app %s; want 0 and v1 kept:\n%s", code, d.appVersion(), stderr)
	}
	if code, out := sdRunOut(t, d.env, d.args("retry")...); code != ExitOK || !strings.Contains(out, "cleared v2") {
		t.Fatalf("retry = exit %d, %q", code, out)
	}
	if code, stderr := d.run("update"); code != ExitOK || d.appVersion() != "v2" {
		t.Fatalf("update after retry = exit %d, app %s; want v2 again:\n%s", code, d.appVersion(), stderr)
	}

	// on_failure = "keep": a failing v3 stays, reported.
	d.srv.publish("v3")
	code, stderr := sdRunOut(t, d.env, d.args("update", "--on-failure", "keep")...)
	if code != ExitFailed || !strings.Contains(stderr, "kept") || d.appVersion() != "v3" {
		t.Fatalf("update to a failing v3 with on_failure keep = exit %d, app %s; want 1, kept:\n%s", code, d.appVersion(), stderr)
	}
}

// sdRunOut runs the agent binary to completion and returns its exit code
// and standard output (standard error follows it on failure).
func sdRunOut(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(sdBinary(t), args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String()
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), stdout.String() + stderr.String()
	}
	t.Fatalf("ota-agent %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	return -1, ""
}
