//go:build linux

package main

// Tests of the real binary against a real systemd user manager
// (testenv.StartUserManager): the soft reset of an app
// unit, the daemon as a Type=notify unit with watchdog pings, and the
// daemon's signals. Names here start with "sd" so the package's other test
// files stay free to name their own helpers.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// sdBuild is the agent binary, built once per test binary with the
// faultinject tag (it only adds test hooks such as OTA_AGENT_WEDGE).
var sdBuild struct {
	once sync.Once
	path string
	err  error
}

// sdBuildPrefix names the directories the binary is built into; one per
// test process, so concurrent runs never exec each other's binary.
const sdBuildPrefix = "ota-agent-sdtest-"

// sdBinary returns the path of the agent binary, building it on first use.
// Without a TestMain nothing can remove its directory when the test binary
// exits, so each build removes the ones left by test processes that are
// gone.
func sdBinary(t *testing.T) string {
	t.Helper()
	sdBuild.once.Do(func() {
		sdSweepBuilds()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", sdBuildPrefix, os.Getpid()))
		if err != nil {
			sdBuild.err = err
			return
		}
		path := filepath.Join(dir, "ota-agent")
		start := time.Now()
		cmd := exec.Command("go", "build", "-tags", "faultinject", "-o", path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			sdBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		sdBuild.path = path
		t.Logf("built %s in %v", path, time.Since(start).Round(time.Millisecond))
	})
	if sdBuild.err != nil {
		t.Fatal(sdBuild.err)
	}
	return sdBuild.path
}

// sdSweepBuilds removes build directories of test processes that are gone.
func sdSweepBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), sdBuildPrefix+"*"))
	for _, d := range dirs {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), sdBuildPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// sdEnv is this process's environment without what would make a child
// agent think it runs under systemd, plus extra (later entries win).
func sdEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "NOTIFY_SOCKET", strings.HasPrefix(k, "WATCHDOG_"), strings.HasPrefix(k, "LISTEN_"),
			k == "OTA_AGENT_WEDGE", k == "CREDENTIALS_DIRECTORY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// sdRun runs the agent binary to completion and returns its exit code and
// standard error.
func sdRun(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	bin := sdBinary(t) // built first: the build is no part of the run's time
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("ota-agent %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	return -1, ""
}

// sdServer serves project "p" as micropython-ota expects (/p/version and
// /p/<v>_<file>) from memory; a path can be given a handler of its own
// (slow, stalled). It records the paths asked for.
type sdServer struct {
	*httptest.Server
	quit chan struct{} // closed when the test ends: handlers still waiting return

	mu       sync.Mutex
	version  string
	files    map[string]string           // "/p/v1_a.txt" -> body
	special  map[string]http.HandlerFunc // path -> handler answering instead
	requests []string
}

func newSDServer(t *testing.T) *sdServer {
	t.Helper()
	s := &sdServer{quit: make(chan struct{}), files: map[string]string{}, special: map[string]http.HandlerFunc{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.quit) }) // runs first: no handler keeps Close waiting
	return s
}

func (s *sdServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.URL.Path)
	h, special := s.special[r.URL.Path]
	body, ok := s.files[r.URL.Path]
	if r.URL.Path == "/p/version" {
		body, ok = s.version+"\n", s.version != ""
	}
	s.mu.Unlock()
	switch {
	case special:
		h(w, r)
	case ok:
		fmt.Fprint(w, body)
	default:
		http.NotFound(w, r)
	}
}

// add makes release v's files available (file name -> content).
func (s *sdServer) add(v string, files map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, body := range files {
		s.files["/p/"+v+"_"+f] = body
	}
}

// publish writes v into /p/version.
func (s *sdServer) publish(v string) {
	s.mu.Lock()
	s.version = v
	s.mu.Unlock()
}

// handle answers path with h instead of its content (nil: the content).
func (s *sdServer) handle(path string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.special, path)
		return
	}
	s.special[path] = h
}

// takeRequests returns the paths asked for since the last call.
func (s *sdServer) takeRequests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requests
	s.requests = nil
	return r
}

// slow sends body one byte every `every` (with its Content-Length), counting
// the bytes sent in sent.
func (s *sdServer) slow(body string, every time.Duration, sent *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		rc := http.NewResponseController(w)
		for i := range len(body) {
			if _, err := w.Write([]byte{body[i]}); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			if sent != nil {
				sent.Add(1)
			}
			if i == len(body)-1 {
				return
			}
			select {
			case <-time.After(every):
			case <-r.Context().Done():
				return
			case <-s.quit:
				return
			}
		}
	}
}

// sdStall is a transfer that sends a few bytes, then nothing.
type sdStall struct {
	sent    chan time.Time // when the last byte went out
	aborted chan time.Time // when the client gave up
}

// stall announces 100 bytes, sends 3 and waits for the client to hang up.
func (s *sdServer) stall() (http.HandlerFunc, *sdStall) {
	st := &sdStall{sent: make(chan time.Time, 1), aborted: make(chan time.Time, 1)}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("xyz"))
		http.NewResponseController(w).Flush()
		select {
		case st.sent <- time.Now():
		default:
		}
		select {
		case <-r.Context().Done():
			select {
			case st.aborted <- time.Now():
			default:
			}
		case <-s.quit:
		}
	}, st
}

// sdProps reads properties of a unit (`systemctl --user show -p ...`).
func sdProps(t *testing.T, m *testenv.UserManager, unit string, names ...string) map[string]string {
	t.Helper()
	out := m.Systemctl(t, "show", unit, "-p", strings.Join(names, ","))
	props := map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			props[k] = v
		}
	}
	return props
}

// sdProp reads one property of a unit.
func sdProp(t *testing.T, m *testenv.UserManager, unit, name string) string {
	t.Helper()
	return sdProps(t, m, unit, name)[name]
}

// sdWait polls cond every 50 ms until it holds, or fails the test after
// timeout with what cond last saw.
func sdWait(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s; saw %s", timeout, what, saw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sdLines reads a log file's lines ("" lines dropped; none if missing).
func sdLines(path string) []string {
	b, _ := os.ReadFile(path)
	return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
}

// sdTree is a directory's regular files, relative path -> content
// (followed through a symlink at dir itself).
func sdTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			tree[rel] = string(b)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return tree
}

// sdAppScript is release v of a small app: at start and on SIGTERM it
// checks that every file of its release in the app dir ($1) carries its
// own version, and logs "start|exit <version> <pid> ok|MIXED" into $2.
func sdAppScript(v string) string {
	return "VERSION=" + v + `
dir=$1 log=$2
check() {
	s=ok
	[ "$(cat "$dir/a.txt")" = "$VERSION" ] || s=MIXED
	[ "$(cat "$dir/lib/b.txt")" = "$VERSION" ] || s=MIXED
	grep -qx "VERSION=$VERSION" "$dir/app.sh" || s=MIXED
	echo $s
}
trap 'echo "exit $VERSION $$ $(check)" >> "$log"; exit 0' TERM
echo "start $VERSION $$ $(check)" >> "$log"
while :; do sleep 0.1; done
`
}

// sdAppRelease is release v of the app: app.sh, a.txt and lib/b.txt.
func sdAppRelease(v string) map[string]string {
	return map[string]string{"app.sh": sdAppScript(v), "a.txt": v + "\n", "lib/b.txt": v + "\n"}
}

func TestSoftResetRealUnit(t *testing.T) {
	t.Run("app sees a mix", testAppScriptSeesMix)
	for _, install := range []string{"in-place", "symlink"} {
		t.Run(install, func(t *testing.T) { testSoftResetRealUnit(t, install) })
	}
}

// testAppScriptSeesMix shows that the app's check can fail: "ok" in the
// soft reset's log means something only if a switch under the running app
// would have said MIXED.
func testAppScriptSeesMix(t *testing.T) {
	dir := t.TempDir()
	appDir, logPath := filepath.Join(dir, "app"), filepath.Join(dir, "app.log")
	for f, body := range sdAppRelease("v1") {
		p := filepath.Join(appDir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("/bin/sh", filepath.Join(appDir, "app.sh"), appDir, logPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	sdWait(t, 5*time.Second, "the app logs its start", func() (bool, string) {
		lines := sdLines(logPath)
		return len(lines) == 1, fmt.Sprintf("log %q", lines)
	})
	// One file of the next release arrives while it runs.
	if err := os.WriteFile(filepath.Join(appDir, "lib", "b.txt"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("app after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("app still running 5 s after SIGTERM")
	}
	want := []string{"start v1 " + pid + " ok", "exit v1 " + pid + " MIXED"}
	if got := sdLines(logPath); !slices.Equal(got, want) {
		t.Errorf("app log = %q, want %q", got, want)
	}
}

func testSoftResetRealUnit(t *testing.T, install string) {
	m := testenv.StartUserManager(t)
	srv := newSDServer(t)
	for _, v := range []string{"v1", "v2", "v3"} {
		srv.add(v, sdAppRelease(v))
	}
	dir := t.TempDir()
	appDir, logPath, stateDir := filepath.Join(dir, "app"), filepath.Join(dir, "app.log"), filepath.Join(dir, "state")
	m.WriteUnit(t, "app.service", fmt.Sprintf("[Service]\nType=simple\nExecStart=/bin/sh %q %q %q\n",
		filepath.Join(appDir, "app.sh"), appDir, logPath))
	env := sdEnv(m.Env...)
	update := func(unit string) (int, string) {
		t.Helper()
		return sdRun(t, env, "update", "--host", srv.URL, "--project", "p", "--files", "app.sh,a.txt,lib/b.txt",
			"--app-dir", appDir, "--state-dir", stateDir, "--runtime-dir", filepath.Join(dir, "run"),
			"--install", install, "--unit", unit, "--systemd-bus", "user", "--log-level", "debug", "--trial", "0s")
	}
	wantApp := func(when, v string) {
		t.Helper()
		if got, want := sdTree(t, appDir), sdAppRelease(v); !maps.Equal(got, want) {
			t.Fatalf("%s: app dir = %q, want release %s", when, got, v)
		}
	}
	// waitStart waits for the app's start line with the unit's MainPID.
	waitStart := func(v string) (pid string) {
		t.Helper()
		sdWait(t, 5*time.Second, "app logs its start on "+v, func() (bool, string) {
			pid = sdProp(t, m, "app.service", "MainPID")
			lines := sdLines(logPath)
			return slices.Contains(lines, fmt.Sprintf("start %s %s ok", v, pid)), fmt.Sprintf("MainPID %s, log %q", pid, lines)
		})
		return pid
	}

	// First install, before the unit ever ran (as at boot): nothing starts it.
	srv.publish("v1")
	if code, stderr := update("app.service"); code != ExitOK {
		t.Fatalf("update to v1: exit %d, want %d\n%s", code, ExitOK, stderr)
	}
	wantApp("after v1", "v1")
	if got := sdProp(t, m, "app.service", "ActiveState"); got != "inactive" {
		t.Fatalf("ActiveState after installing v1 = %q, want inactive (never started)", got)
	}
	if install == "symlink" {
		if fi, err := os.Lstat(appDir); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Fatalf("app dir in symlink mode: Lstat = %v, %v; want a symlink", fi, err)
		}
	}

	m.Systemctl(t, "start", "app.service")
	pid1 := waitStart("v1")
	inv1 := sdProp(t, m, "app.service", "InvocationID")

	// The soft reset: stop v1, switch, start v2.
	srv.publish("v2")
	start := time.Now()
	if code, stderr := update("app.service"); code != ExitOK {
		t.Fatalf("update to v2: exit %d, want %d\n%s", code, ExitOK, stderr)
	}
	t.Logf("update with a soft reset took %v", time.Since(start).Round(time.Millisecond))
	wantApp("after v2", "v2")
	p := sdProps(t, m, "app.service", "ActiveState", "MainPID", "InvocationID")
	if p["ActiveState"] != "active" {
		t.Errorf("ActiveState after the soft reset = %q, want active", p["ActiveState"])
	}
	if p["MainPID"] == pid1 || p["MainPID"] == "0" {
		t.Errorf("MainPID after the soft reset = %s, want a new one (was %s)", p["MainPID"], pid1)
	}
	if p["InvocationID"] == inv1 || p["InvocationID"] == "" {
		t.Errorf("InvocationID after the soft reset = %q, want a new one (was %q)", p["InvocationID"], inv1)
	}
	pid2 := waitStart("v2")
	want := []string{"start v1 " + pid1 + " ok", "exit v1 " + pid1 + " ok", "start v2 " + pid2 + " ok"}
	if got := sdLines(logPath); !slices.Equal(got, want) {
		t.Fatalf("app log = %q, want %q", got, want)
	}

	// A unit that does not exist fails the update before any download.
	srv.publish("v3")
	srv.takeRequests()
	code, stderr := update("nosuch.service")
	if code != ExitUsage {
		t.Errorf("update with --unit nosuch.service: exit %d, want %d\n%s", code, ExitUsage, stderr)
	}
	if !strings.Contains(stderr, "nosuch.service") || !strings.Contains(stderr, "not found") {
		t.Errorf("update with --unit nosuch.service: stderr = %q, want it to name the unit and say not found", stderr)
	}
	if got, want := srv.takeRequests(), []string{"/p/version"}; !slices.Equal(got, want) {
		t.Errorf("requests with a missing unit = %q, want %q (nothing downloaded)", got, want)
	}
	if staged := sdTree(t, filepath.Join(stateDir, "p", "staging")); len(staged) != 0 {
		t.Errorf("staged with a missing unit: %q, want nothing", staged)
	}
	wantApp("after the missing unit", "v2")
	if got := sdProp(t, m, "app.service", "MainPID"); got != pid2 {
		t.Errorf("app MainPID after the missing unit = %s, want %s (untouched)", got, pid2)
	}

	// A stopped unit (as at boot, before it starts) is switched, not started.
	m.Systemctl(t, "stop", "app.service")
	want = append(want, "exit v2 "+pid2+" ok")
	if code, stderr := update("app.service"); code != ExitOK {
		t.Fatalf("update to v3 with the unit stopped: exit %d, want %d\n%s", code, ExitOK, stderr)
	}
	wantApp("after v3", "v3")
	if got := sdProp(t, m, "app.service", "ActiveState"); got != "inactive" {
		t.Errorf("ActiveState after updating a stopped unit = %q, want inactive", got)
	}
	m.Systemctl(t, "start", "app.service")
	pid3 := waitStart("v3")
	want = append(want, "start v3 "+pid3+" ok")
	if got := sdLines(logPath); !slices.Equal(got, want) {
		t.Errorf("app log = %q, want %q", got, want)
	}
}

// sdWriteConfig writes the daemon's config.toml: one app "p" of project p
// (a.txt and big.bin) checked every second, each wait bounded by 1 s, no
// reset.
func sdWriteConfig(t *testing.T, path, host, dir string) {
	t.Helper()
	cfg := fmt.Sprintf(`state_dir = %q
runtime_dir = %q
interval = "1s"

[[app]]
name = "p"
host = %q
project = "p"
files = ["a.txt", "big.bin"]
app_dir = %q
timeout = "1s"
reset = "none"
`, filepath.Join(dir, "state"), filepath.Join(dir, "run"), host, filepath.Join(dir, "app"))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sdDaemonUnit is ota-agent.service as packaged, for the user manager: the
// daemon with a 2 s watchdog, its output appended to logPath, and extra
// [Service] lines.
func sdDaemonUnit(bin, config, logPath, extra string) string {
	return fmt.Sprintf(`[Service]
Type=notify
NotifyAccess=main
WatchdogSec=2s
ExecStart=%q run --config %q --log-level debug
ExecReload=/bin/kill -HUP $MAINPID
StandardOutput=append:%s
StandardError=append:%s
%s`, bin, config, logPath, logPath, extra)
}

// sdDaemonSetup starts a user manager and a release server with v1 published,
// and writes the daemon's config and unit (not started). It returns the
// test's directory (config.toml, daemon.log, app/, state/, run/).
func sdDaemonSetup(t *testing.T, extra string) (*testenv.UserManager, *sdServer, string) {
	t.Helper()
	m := testenv.StartUserManager(t)
	bin := sdBinary(t)
	srv := newSDServer(t)
	srv.add("v1", map[string]string{"a.txt": "a1", "big.bin": "big1"})
	srv.publish("v1")
	dir := t.TempDir()
	config := filepath.Join(dir, "config.toml")
	sdWriteConfig(t, config, srv.URL, dir)
	m.WriteUnit(t, "ota-agent.service", sdDaemonUnit(bin, config, filepath.Join(dir, "daemon.log"), extra))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
			t.Logf("daemon log:\n%s", b)
		}
	})
	return m, srv, dir
}

// sdStatus matches the daemon's STATUS= line for app p at version v.
func sdStatus(v string) *regexp.Regexp {
	return regexp.MustCompile(`^p ` + regexp.QuoteMeta(v) + `, next check \d\d:\d\d$`)
}

// sdWatchDaemon polls the daemon unit every 100 ms until done says so (or
// fails after timeout): all along it must stay active with the same MainPID
// and no restart. It returns how many distinct watchdog pings systemd
// recorded (WatchdogTimestampMonotonic changed) meanwhile.
func sdWatchDaemon(t *testing.T, m *testenv.UserManager, pid string, timeout time.Duration, what string, done func() (bool, string)) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last, pings := "", -1
	for {
		p := sdProps(t, m, "ota-agent.service", "ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
		if p["ActiveState"] != "active" || p["MainPID"] != pid || p["NRestarts"] != "0" {
			t.Fatalf("%s: ActiveState %s, MainPID %s, NRestarts %s; want active, %s, 0",
				what, p["ActiveState"], p["MainPID"], p["NRestarts"], pid)
		}
		if ts := p["WatchdogTimestampMonotonic"]; ts != last {
			last, pings = ts, pings+1
		}
		ok, saw := done()
		if ok {
			return pings
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s; saw %s", timeout, what, saw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sdEnviron reads a process's environment.
func sdEnviron(t *testing.T, pid string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func TestDaemonNotifyWatchdog(t *testing.T) {
	m, srv, dir := sdDaemonSetup(t, "Restart=on-failure\nRestartSec=100ms\n")
	const unit = "ota-agent.service"
	appDir, logPath := filepath.Join(dir, "app"), filepath.Join(dir, "daemon.log")
	status := func() string { return sdProp(t, m, unit, "StatusText") }

	// Type=notify: the start job ends when READY=1 arrives.
	start := time.Now()
	m.Systemctl(t, "start", unit)
	t.Logf("active (READY=1) after %v", time.Since(start).Round(time.Millisecond))
	p := sdProps(t, m, unit, "ActiveState", "SubState", "MainPID", "WatchdogUSec", "NRestarts")
	if p["ActiveState"] != "active" || p["SubState"] != "running" {
		t.Fatalf("after start: ActiveState %s/%s, want active/running", p["ActiveState"], p["SubState"])
	}
	if p["WatchdogUSec"] != "2s" {
		t.Errorf("WatchdogUSec = %q, want 2s", p["WatchdogUSec"])
	}
	pid := p["MainPID"]
	// What go-systemd's SdWatchdogEnabled reads.
	env := sdEnviron(t, pid)
	for _, want := range []string{"WATCHDOG_USEC=2000000", "WATCHDOG_PID=" + pid} {
		if !slices.Contains(env, want) {
			t.Errorf("daemon environment = %q, want %s", env, want)
		}
	}

	// The first check installs v1 and says so in STATUS=.
	sdWatchDaemon(t, m, pid, 5*time.Second, "StatusText reports v1", func() (bool, string) {
		s := status()
		return sdStatus("v1").MatchString(s), fmt.Sprintf("StatusText %q", s)
	})
	if got := sdTree(t, appDir); !maps.Equal(got, map[string]string{"a.txt": "a1", "big.bin": "big1"}) {
		t.Fatalf("app dir = %q, want v1", got)
	}
	// Idle, it pings at half of WatchdogSec.
	begin := time.Now()
	pings := sdWatchDaemon(t, m, pid, 5*time.Second, "idle daemon pings", func() (bool, string) {
		return time.Since(begin) > 3*time.Second, ""
	})
	if pings < 2 {
		t.Errorf("watchdog pings in 3 s idle = %d, want at least 2", pings)
	}

	// A download slower than the watchdog period keeps the daemon alive.
	big2 := "0123456789abcdefg" // 17 bytes, one every 300 ms: about 5 s
	srv.add("v2", map[string]string{"a.txt": "a2", "big.bin": big2})
	var sent atomic.Int64
	srv.handle("/p/v2_big.bin", srv.slow(big2, 300*time.Millisecond, &sent))
	srv.publish("v2")
	begin = time.Now()
	pings = sdWatchDaemon(t, m, pid, 15*time.Second, "slow download completes", func() (bool, string) {
		s := status()
		return sdStatus("v2").MatchString(s), fmt.Sprintf("StatusText %q, %d bytes sent", s, sent.Load())
	})
	took := time.Since(begin)
	t.Logf("slow update took %v, %d watchdog pings meanwhile", took.Round(time.Millisecond), pings)
	if took < 4*time.Second || pings < 3 {
		t.Errorf("slow update took %v with %d pings, want at least 4s (a 5 s transfer) and 3 pings", took, pings)
	}
	if got := sdTree(t, appDir); !maps.Equal(got, map[string]string{"a.txt": "a2", "big.bin": big2}) {
		t.Fatalf("app dir = %q, want v2", got)
	}

	// A stalled transfer is aborted after the app's 1 s timeout; the daemon
	// keeps pinging and keeps the old release.
	srv.add("v3", map[string]string{"a.txt": "a3"})
	h, stalled := srv.stall()
	srv.handle("/p/v3_big.bin", h)
	srv.publish("v3")
	begin = time.Now()
	pings = sdWatchDaemon(t, m, pid, 10*time.Second, "daemon survives a stalled transfer", func() (bool, string) {
		return time.Since(begin) > 5*time.Second, ""
	})
	if pings < 3 {
		t.Errorf("watchdog pings in 5 s around a stall = %d, want at least 3", pings)
	}
	var sentAt, abortedAt time.Time
	select {
	case sentAt = <-stalled.sent:
	default:
		t.Fatal("the stalled transfer never started")
	}
	select {
	case abortedAt = <-stalled.aborted:
	default:
		t.Fatal("the daemon did not abort the stalled transfer within 5 s")
	}
	if d := abortedAt.Sub(sentAt); d < 900*time.Millisecond || d > 2500*time.Millisecond {
		t.Errorf("stalled transfer aborted %v after its last byte, want about the 1s timeout", d)
	}
	if s := status(); !strings.Contains(s, "p v2, check failed 1 time(s)") {
		t.Errorf("StatusText after the stall = %q, want it to say v2 and one failed check", s)
	}
	if got := sdTree(t, appDir); !maps.Equal(got, map[string]string{"a.txt": "a2", "big.bin": big2}) {
		t.Errorf("app dir after the stall = %q, want v2 untouched", got)
	}

	// A reload with a broken config keeps the daemon and its config.
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte("state_dir = [broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Systemctl(t, "reload", unit)
	begin = time.Now()
	sdWatchDaemon(t, m, pid, 5*time.Second, "reload with a broken config", func() (bool, string) {
		log, _ := os.ReadFile(logPath)
		return bytes.Contains(log, []byte("reload failed")) && time.Since(begin) > 1500*time.Millisecond, "no \"reload failed\" in the log"
	})
	// A good one restarts the loops (RELOADING=1, then READY=1): the unit
	// ends active again, not stuck in "reloading".
	sdWriteConfig(t, filepath.Join(dir, "config.toml"), srv.URL, dir)
	m.Systemctl(t, "reload", unit)
	begin = time.Now()
	sdWatchDaemon(t, m, pid, 5*time.Second, "reload with a good config", func() (bool, string) {
		log, _ := os.ReadFile(logPath)
		return bytes.Contains(log, []byte("configuration reloaded")) && time.Since(begin) > time.Second, "no \"configuration reloaded\" in the log"
	})

	// Stop: SIGTERM, STOPPING=1, exit 0.
	start = time.Now()
	m.Systemctl(t, "stop", unit)
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	p = sdProps(t, m, unit, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" || p["NRestarts"] != "0" {
		t.Errorf("after stop: ActiveState %s, Result %s, ExecMainStatus %s, NRestarts %s; want inactive, success, 0, 0",
			p["ActiveState"], p["Result"], p["ExecMainStatus"], p["NRestarts"])
	}
}

func TestDaemonWedgedIsKilled(t *testing.T) {
	m, _, dir := sdDaemonSetup(t, "Environment=OTA_AGENT_WEDGE=1\nRestart=no\n")
	const unit = "ota-agent.service"
	m.Systemctl(t, "start", unit)
	if got := sdProp(t, m, unit, "ActiveState"); got != "active" {
		t.Fatalf("ActiveState after start = %q, want active", got)
	}
	start := time.Now()
	sdWait(t, 12*time.Second, "systemd kills the wedged daemon", func() (bool, string) {
		// Result is set when the watchdog fires; the unit is failed once
		// the SIGABRT it sends has ended the process.
		p := sdProps(t, m, unit, "ActiveState", "Result")
		return p["Result"] == "watchdog" && p["ActiveState"] == "failed",
			fmt.Sprintf("ActiveState %s, Result %s; want failed, watchdog", p["ActiveState"], p["Result"])
	})
	t.Logf("killed by the watchdog %v after start", time.Since(start).Round(time.Millisecond))
	log, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
	if !bytes.Contains(log, []byte("withholding watchdog pings")) {
		t.Errorf("daemon log does not say it withheld pings:\n%s", log)
	}
}

func TestSignalsMidDownload(t *testing.T) {
	bin := sdBinary(t)
	srv := newSDServer(t)
	big2 := strings.Repeat("x", 40) // one byte every 300 ms: 12 s
	srv.add("v1", map[string]string{"a.txt": "a1", "big.bin": "big1"})
	srv.add("v2", map[string]string{"a.txt": "a2", "big.bin": big2})
	srv.publish("v1")
	dir := t.TempDir()
	config, appDir := filepath.Join(dir, "config.toml"), filepath.Join(dir, "app")
	sdWriteConfig(t, config, srv.URL, dir)
	env := sdEnv()
	if code, stderr := sdRun(t, env, "update", "--config", config); code != ExitOK {
		t.Fatalf("update to v1: exit %d, want %d\n%s", code, ExitOK, stderr)
	}
	v1 := sdTree(t, appDir)

	var sent atomic.Int64
	srv.handle("/p/v2_big.bin", srv.slow(big2, 300*time.Millisecond, &sent))
	srv.publish("v2")
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "run", "--config", config, "--log-level", "debug")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("daemon log:\n%s", b)
		}
	})

	sdWait(t, 5*time.Second, "the daemon's download begins", func() (bool, string) {
		return sent.Load() >= 2, fmt.Sprintf("%d bytes sent", sent.Load())
	})
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		took := time.Since(start)
		t.Logf("exited %v after SIGTERM: %v", took.Round(time.Millisecond), waitErr)
		if waitErr != nil {
			t.Errorf("daemon after SIGTERM mid-download: %v, want exit 0", waitErr)
		}
		if took > 2*time.Second {
			t.Errorf("daemon exited %v after SIGTERM, want within 2s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("daemon still running 5 s after SIGTERM")
	}
	if got := sdTree(t, appDir); !maps.Equal(got, v1) {
		t.Errorf("app dir after SIGTERM mid-download = %q, want v1 unchanged (%q)", got, v1)
	}

	// The next update completes.
	srv.handle("/p/v2_big.bin", nil)
	if code, stderr := sdRun(t, env, "update", "--config", config); code != ExitOK {
		t.Fatalf("update after the interrupted download: exit %d, want %d\n%s", code, ExitOK, stderr)
	}
	if got, want := sdTree(t, appDir), map[string]string{"a.txt": "a2", "big.bin": big2}; !maps.Equal(got, want) {
		t.Errorf("app dir after the next update = %q, want %q", got, want)
	}
}
