package main

import (
	"bytes"
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// doctorRun runs `ota-agent doctor args...` with env, and returns its
// output and exit code.
func doctorRun(t *testing.T, env doctorEnv, args ...string) (string, int) {
	t.Helper()
	if env.now == nil {
		env.now = time.Now
	}
	var out, errb bytes.Buffer
	g := &globals{stdout: &out, stderr: &errb}
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	o := &doctorOptions{apps: newAppsCmd(fs), env: env}
	pos, err := parseArgs(fs, args)
	if err != nil {
		t.Fatal(err)
	}
	code := g.exitCode(runDoctor(context.Background(), g, o, pos))
	return out.String() + errb.String(), code
}

// doctorApp is the flags of one app served by url, in dir.
func doctorApp(t *testing.T, url string, extra ...string) []string {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	return append([]string{"--host", url, "--project", "p", "--files", "a", "--app-dir", filepath.Join(dir, "app"),
		"--state-dir", filepath.Join(dir, "state"), "--runtime-dir", filepath.Join(dir, "run")}, extra...)
}

func versionServer(t *testing.T, code int, body string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestDoctorChecksFail makes each check of doctor fail once, on purpose,
// against the real thing (a server, the disk, D-Bus, systemctl, /proc),
// and wants its line to say FAIL, the problem and the fix, and exit 1.
func TestDoctorChecksFail(t *testing.T) {
	good := versionServer(t, 200, "v1\n")
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("v1\n")) }))
	defer tlsSrv.Close()
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	badConfig := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(badConfig, []byte("interval = 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Something holds /dev/null open (a stand-in for a watchdog daemon
	// holding /dev/watchdog, which a test must never open).
	holder := exec.Command("sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()

	for _, tc := range []struct {
		name string
		env  doctorEnv
		args []string
		want []string // in the output
	}{
		{"config", doctorEnv{}, []string{"--config", badConfig}, []string{"FAIL  config:", "interval", "fix:"}},
		{"clock", doctorEnv{now: func() time.Time { return time.Date(1970, 1, 1, 0, 0, 42, 0, time.UTC) }},
			doctorApp(t, good.URL), []string{"FAIL  clock: it says 1970-01-01T00:00:42Z", "timedatectl set-ntp true"}},
		{"packaged units not enabled (not installed here)", doctorEnv{}, doctorApp(t, good.URL),
			[]string{"FAIL  units:", "ota-agent.service is", "fix: systemctl enable"}},
		{"server unreachable", doctorEnv{}, doctorApp(t, "http://127.0.0.1:1"),
			[]string{"FAIL  p: server: server unreachable", "fix: check host, the network and DNS"}},
		{"credentials refused", doctorEnv{}, doctorApp(t, versionServer(t, 401, "no").URL),
			[]string{"FAIL  p: server:", "401", "fix: the server refuses the credentials"}},
		{"no version file", doctorEnv{}, doctorApp(t, versionServer(t, 404, "").URL),
			[]string{"FAIL  p: server:", "404", "fix: no version file there"}},
		{"unsafe tag", doctorEnv{}, doctorApp(t, versionServer(t, 200, "<html>portal</html>").URL),
			[]string{"FAIL  p: server:", "not a safe version tag", "captive portal"}},
		{"TLS: unknown CA", doctorEnv{}, doctorApp(t, tlsSrv.URL),
			[]string{"FAIL  p: server:", "set ca_file"}},
		{"app dir not a directory", doctorEnv{}, append(doctorApp(t, good.URL)[:8], "--app-dir", notDir),
			[]string{"FAIL  p: dirs: app_dir " + notDir, "is not a directory", "fix:"}},
		{"unit missing or no D-Bus", doctorEnv{}, doctorApp(t, good.URL, "--unit", "no-such-ota-test.service"),
			[]string{"FAIL  p: unit:", "no-such-ota-test.service"}},
		{"watchdog device missing", doctorEnv{}, doctorApp(t, good.URL, "--reset", "hard", "--hard-reset", "watchdog",
			"--watchdog-device", "/dev/no-such-watchdog"), []string{"FAIL  p: watchdog:", "/dev/no-such-watchdog", "modules-load.d"}},
		{"watchdog device held", doctorEnv{}, doctorApp(t, good.URL, "--reset", "hard", "--hard-reset", "watchdog",
			"--watchdog-device", "/dev/null"), []string{"FAIL  p: watchdog: /dev/null is held by PID", `hard_reset = "reboot"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := doctorRun(t, tc.env, tc.args...)
			if code != ExitFailed {
				t.Errorf("doctor = %d, want %d\n%s", code, ExitFailed, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("doctor output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestDoctorFreeSpace fills a small tmpfs: the state dir's filesystem has
// less free than a download keeps.
func TestDoctorFreeSpace(t *testing.T) {
	testenv.Require(t, "root (to mount a tmpfs)", os.Geteuid() == 0)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", dir).CombinedOutput(); err != nil {
		testenv.Require(t, "mount -t tmpfs: "+string(out), false)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	if err := os.WriteFile(filepath.Join(dir, "fill"), make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	args := doctorApp(t, versionServer(t, 200, "v1\n").URL)
	args = append(args, "--state-dir", filepath.Join(dir, "state"))
	out, code := doctorRun(t, doctorEnv{}, args...)
	if code != ExitFailed || !strings.Contains(out, "FAIL  p: dirs:") || !strings.Contains(out, "under the 4.0 MiB a download keeps free") {
		t.Errorf("doctor = %d, want %d and a free-space failure:\n%s", code, ExitFailed, out)
	}
}

// TestDoctorPasses: a reachable server, writable dirs and a sane clock
// pass (the units line needs a booted system: the deb e2e test runs
// doctor there, where every line passes).
func TestDoctorPasses(t *testing.T) {
	out, _ := doctorRun(t, doctorEnv{}, doctorApp(t, versionServer(t, 200, "v1\n").URL)...)
	for _, w := range []string{"ok    config: valid, 1 app(s)", "ok    clock:", "ok    p: server:", "version v1 (installed: (none installed))",
		"ok    p: dirs:", "on one filesystem"} {
		if !strings.Contains(out, w) {
			t.Errorf("doctor output lacks %q:\n%s", w, out)
		}
	}
}
