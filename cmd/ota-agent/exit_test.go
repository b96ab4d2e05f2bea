package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/store"
)

// cliServer serves project "p" with v1 and v2 of a.py and lib/b.py;
// fail maps a URL path to a status to answer instead.
func cliServer(t *testing.T, version string, fail map[string]int) *httptest.Server {
	t.Helper()
	files := map[string]string{
		"/p/version": version + "\n",
		"/p/v1_a.py": "a1", "/p/v1_lib/b.py": "b1",
		"/p/v2_a.py": "a2", "/p/v2_lib/b.py": "b2",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, ok := fail[r.URL.Path]; ok {
			w.WriteHeader(code)
			return
		}
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// runCLI runs the command line in-process and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func appArgs(host, dir string) []string {
	return []string{"--host", host, "--project", "p", "--files", "a.py,lib/b.py",
		"--app-dir", filepath.Join(dir, "app"), "--state-dir", filepath.Join(dir, "state"),
		"--runtime-dir", filepath.Join(dir, "run"), "--timeout", "1s"}
}

func readTree(dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			fmt.Fprintf(&b, "%s=%s;", rel, c)
		}
		return nil
	})
	return b.String()
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name    string
		cmd     string
		version string
		fail    map[string]int
		host    string // overrides the server
		extra   []string
		want    int
		stderr  string
	}{
		{name: "update installs", cmd: "update", version: "v2", want: ExitOK},
		{name: "check finds an update", cmd: "check", version: "v2", want: ExitUpdateAvail},
		{name: "check up to date", cmd: "check", version: "v1", want: ExitOK},
		{name: "404 file", cmd: "update", version: "v2", fail: map[string]int{"/p/v2_lib/b.py": 404}, want: ExitFailed, stderr: "404"},
		{name: "500 file", cmd: "update", version: "v2", fail: map[string]int{"/p/v2_lib/b.py": 500}, want: ExitTempFail, stderr: "500"},
		{name: "503 version", cmd: "check", version: "v2", fail: map[string]int{"/p/version": 503}, want: ExitTempFail, stderr: "503"},
		{name: "wrong password", cmd: "update", version: "v2", fail: map[string]int{"/p/version": 401}, want: ExitFailed, stderr: "check user and password"},
		{name: "unreachable", cmd: "update", version: "v2", host: "http://127.0.0.1:1", want: ExitTempFail, stderr: "unreachable"},
		{name: "bad tag", cmd: "update", version: "../x", want: ExitFailed, stderr: "not a safe version tag"},
		{name: "half credentials", cmd: "update", version: "v2", extra: []string{"--user", "u"}, want: ExitUsage, stderr: "no password"},
		{name: "auth over http", cmd: "update", version: "v2", extra: []string{"--user", "u", "--password-file", "PWFILE"}, want: ExitUsage, stderr: "--allow-insecure-auth"},
		{name: "absolute file", cmd: "update", version: "v2", extra: []string{"--files", "/etc/passwd"}, want: ExitUsage, stderr: "absolute"},
		{name: "dotdot file", cmd: "update", version: "v2", extra: []string{"--files", "../x.py"}, want: ExitUsage, stderr: ".."},
		{name: "bad flag", cmd: "update", version: "v2", extra: []string{"--frobnicate"}, want: ExitUsage},
		{name: "bad timeout", cmd: "update", version: "v2", extra: []string{"--timeout", "soon"}, want: ExitUsage, stderr: "--timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pw := filepath.Join(dir, "pw")
			os.WriteFile(pw, []byte("secret\n"), 0o600)
			srv := cliServer(t, "v1", nil)
			if code, _, errs := runCLI(t, append([]string{"update"}, appArgs(srv.URL, dir)...)...); code != 0 {
				t.Fatalf("installing v1: exit %d: %s", code, errs)
			}
			before := readTree(filepath.Join(dir, "app"))
			srv = cliServer(t, tt.version, tt.fail)
			host := srv.URL
			if tt.host != "" {
				host = tt.host
			}
			args := append([]string{tt.cmd}, appArgs(host, dir)...)
			for _, e := range tt.extra {
				args = append(args, strings.ReplaceAll(e, "PWFILE", pw))
			}
			code, _, stderr := runCLI(t, args...)
			if code != tt.want {
				t.Fatalf("ota-agent %v = exit %d, want %d; stderr:\n%s", args, code, tt.want, stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to mention %q", stderr, tt.stderr)
			}
			if strings.Contains(stderr, "secret") {
				t.Errorf("stderr leaks the password: %q", stderr)
			}
			after := readTree(filepath.Join(dir, "app"))
			if tt.want != ExitOK || tt.cmd == "check" {
				if after != before {
					t.Errorf("app dir changed from %q to %q", before, after)
				}
			} else if after != "a.py=a2;lib/b.py=b2;" {
				t.Errorf("app dir = %q, want v2", after)
			}
		})
	}
}

// With several apps the most serious exit code wins and one app's failure
// never stops the others.
func TestSeveralAppsWorstCodeWins(t *testing.T) {
	dir := t.TempDir()
	good := cliServer(t, "v2", nil)
	broken := cliServer(t, "v2", map[string]int{"/p/v2_a.py": 404})
	down := "http://127.0.0.1:1"
	cfg := fmt.Sprintf(`state_dir = %q
[[app]]
name = "broken"
host = %q
project = "p"
files = ["a.py", "lib/b.py"]
app_dir = %q
[[app]]
name = "down"
host = %q
project = "p"
files = ["a.py"]
app_dir = %q
[[app]]
name = "good"
host = %q
project = "p"
files = ["a.py", "lib/b.py"]
app_dir = %q
`, filepath.Join(dir, "state"), broken.URL, filepath.Join(dir, "broken"), down, filepath.Join(dir, "down"), good.URL, filepath.Join(dir, "good"))
	path := filepath.Join(dir, "config.toml")
	os.WriteFile(path, []byte(cfg), 0o644)
	code, _, stderr := runCLI(t, "update", "--config", path, "--runtime-dir", filepath.Join(dir, "run"))
	if code != ExitFailed {
		t.Fatalf("update = exit %d, want %d (1 beats 75); stderr:\n%s", code, ExitFailed, stderr)
	}
	if got := readTree(filepath.Join(dir, "good")); got != "a.py=a2;lib/b.py=b2;" {
		t.Errorf("good app = %q, want v2 installed despite the others", got)
	}
	for _, name := range []string{"broken", "down"} {
		if !strings.Contains(stderr, `"app":"`+name+`"`) {
			t.Errorf("stderr does not name app %s: %s", name, stderr)
		}
	}
	code, _, _ = runCLI(t, "update", "--config", path, "--runtime-dir", filepath.Join(dir, "run"), "good", "down")
	if code != ExitTempFail {
		t.Errorf("update good down = exit %d, want %d", code, ExitTempFail)
	}
	code, _, stderr = runCLI(t, "update", "--config", path, "nosuch")
	if code != ExitUsage || !strings.Contains(stderr, "nosuch") {
		t.Errorf("update nosuch = exit %d (%s), want %d naming it", code, stderr, ExitUsage)
	}
}

func TestWorst(t *testing.T) {
	order := []int{ExitOK, ExitUpdateAvail, ExitTempFail, ExitFailed, ExitUsage}
	for i, a := range order {
		for j, b := range order {
			want := a
			if j > i {
				want = b
			}
			if got := worst(a, b); got != want {
				t.Errorf("worst(%d, %d) = %d, want %d", a, b, got, want)
			}
		}
	}
}

func TestDemo(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	code, out, stderr := runCLI(t, "demo")
	if code != 0 {
		t.Fatalf("demo = exit %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"installed v1.0.1", "up to date at v1.0.1", "installed v1.0.0", "update failed (exit 1)", "unchanged"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("demo left %v behind", left)
	}
}

// The example configuration shipped in packaging/ stays valid.
func TestPackagedConfigParses(t *testing.T) {
	cfg, err := loadConfig("../../packaging/config.toml")
	if err != nil {
		t.Fatalf("loadConfig(packaging/config.toml) = %v", err)
	}
	if len(cfg.Apps) != 1 || cfg.Apps[0].Reset != "soft" || cfg.Apps[0].Unit != "sample.service" {
		t.Errorf("packaged config = %+v, want one app soft-reset through sample.service", cfg.Apps)
	}
}

// A state dir on another filesystem than the app dir could not switch with
// one rename: refused (exit 2) with what to set, before any download.
// The state dir may be on another filesystem than the app dir (systemd's
// bind mounts make it another mount even on one filesystem): the switch
// copies what it cannot link, in both install modes, and a rollback works.
func TestStateDirOnAnotherFilesystem(t *testing.T) {
	var shm, tmp unix.Statfs_t
	dir := t.TempDir()
	if unix.Statfs("/dev/shm", &shm) != nil || unix.Statfs(dir, &tmp) != nil || shm.Fsid == tmp.Fsid {
		testenv.Require(t, "/dev/shm on another filesystem than the temp dir", false)
	}
	for _, mode := range []store.Mode{store.InPlace, store.Symlink} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			parent, err := os.MkdirTemp("/dev/shm", "ota-agent-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(parent) })
			appDir := filepath.Join(parent, "app")
			for _, v := range []string{"v2", "v1"} {
				srv := cliServer(t, v, nil)
				args := append([]string{"update"}, appArgs(srv.URL, dir)...)
				args = append(args, "--app-dir", appDir, "--install", string(mode))
				code, _, stderr := runCLI(t, args...)
				if code != ExitOK {
					t.Fatalf("update to %s across filesystems = exit %d, stderr %q; want 0", v, code, stderr)
				}
				want := "a.py=a2;lib/b.py=b2;"
				if v == "v1" {
					want = "a.py=a1;lib/b.py=b1;"
				}
				if got := readTree(appDir + "/"); got != want {
					t.Errorf("after the update to %s, app dir = %q, want %q", v, got, want)
				}
			}
		})
	}
}

// A manual check works while an update (or the daemon) holds the app's
// lock, and never waits for it; a second update fails at once naming the
// holder, or waits with --wait.
func TestCheckNeverWaitsForTheLock(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	args := appArgs(srv.URL, dir)
	s, err := store.Open(filepath.Join(dir, "state", "p"), filepath.Join(dir, "app"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := runCLI(t, append([]string{"check"}, args...)...); code != ExitUpdateAvail {
		t.Fatalf("check with the lock held = exit %d (%s%s), want %d", code, out, stderr, ExitUpdateAvail)
	}
	code, _, stderr := runCLI(t, append([]string{"update"}, args...)...)
	if code != ExitFailed || !strings.Contains(stderr, fmt.Sprintf("held by process %d", os.Getpid())) {
		t.Fatalf("update with the lock held = exit %d, stderr %q; want 1 naming PID %d", code, stderr, os.Getpid())
	}
	go func() { time.Sleep(300 * time.Millisecond); l.Unlock() }()
	if code, _, stderr := runCLI(t, append([]string{"update", "--wait=10s"}, args...)...); code != 0 {
		t.Fatalf("update --wait=10s = exit %d: %s", code, stderr)
	}
}
