//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// The everyday job of the shipped units (issue 9): the daemon,
// ota-agent.service as packaging/ ships it, updates running apps in a
// booted Debian. systemd bind-mounts the StateDirectory= in the unit's
// mount namespace, and ReadWritePaths= the app dirs under hardening, so
// the state dir and the app dirs are different mounts of one file system
// there: no test that ran the agent outside those units could see it.

// unitsUpdateTimeout bounds the wait for the daemon to install a new
// release: its interval (10 s, ±10 %) plus download, stop, switch, start.
const unitsUpdateTimeout = 45 * time.Second

// unitsApp is one app of the container: an in-place app run as root, and a
// symlink app run as a user of its own, which reads its release through
// app_dir -> /var/lib/ota-agent/<app>/releases/<v>/.
type unitsApp struct {
	name    string // app name, project, and its unit's name
	install string // in-place or symlink
	appDir  string
	parent  string // the directory ReadWritePaths= names under hardening
	seen    string // where the app records each start (in the container)
	main    string // the release's main.sh
	unit    string // its unit (the packaged drop-in is added)
	user    string // the user the unit runs as ("" for root)
}

var unitsApps = []unitsApp{
	{
		name: "sample", install: "in-place", appDir: "/opt/sample", parent: "/opt/sample",
		seen: "/var/lib/sample/seen",
		// The same app as TestHardResetRebootsContainer's.
		main: nspawnSampleMain, unit: nspawnSampleUnit,
	},
	{
		name: "symapp", install: "symlink", appDir: "/opt/symapp/current", parent: "/opt/symapp",
		seen: "/var/lib/symapp/seen", user: "symapp",
		// Run from its working directory, resolved through the symlink
		// when the unit starts; records the version and who it runs as.
		main: `#!/bin/sh
read v < VERSION
echo "$v $(id -un)" >> "$STATE_DIRECTORY/seen"
exec sleep infinity
`,
		unit: `[Unit]
Description=Symlink app kept up to date by ota-agent, run as its own user

[Service]
User=symapp
ExecStart=/bin/sh /opt/symapp/current/main.sh
WorkingDirectory=/opt/symapp/current
StateDirectory=symapp
Restart=on-failure

[Install]
WantedBy=multi-user.target
`,
	},
}

// seenLine is what the app records when it starts on version v.
func (a unitsApp) seenLine(v string) string {
	if a.user != "" {
		return v + " " + a.user
	}
	return v
}

// unitsConfig is /etc/ota-agent/config.toml: both apps, soft resets, and a
// 10 s interval (the shortest the daemon takes) so that the daemon finds
// a new release within the test's patience.
const unitsConfig = `interval = "10s"

[[app]]
name = "sample"
host = "http://127.0.0.1:8080"
project = "sample"
files = ["main.sh", "VERSION"]
app_dir = "/opt/sample"
unit = "sample.service"
reset = "soft"
trial = "3s"

[[app]]
name = "symapp"
host = "http://127.0.0.1:8080"
project = "symapp"
files = ["main.sh", "VERSION"]
app_dir = "/opt/symapp/current"
install = "symlink"
unit = "symapp.service"
reset = "soft"
trial = "3s"
`

// TestUnitsShippedUpdateRunningApps boots a Debian (systemd-nspawn) with
// the three units of packaging/ installed as shipped, and two running apps:
// an in-place one and a symlink one run by a user of its own. The boot unit
// installs v1 before the apps start; then v2 is published and the daemon,
// at its next interval, must restart each app on v2.
//
// It needs root, debootstrap and systemd-nspawn (see internal/testenv); it skips
// without them, and fails when CI is "true". About 20 s with the rootfs
// cached.
func TestUnitsShippedUpdateRunningApps(t *testing.T) {
	unitsUpdateRunningApps(t, false)
}

// TestUnitsHardenedUpdateRunningApps is TestUnitsShippedUpdateRunningApps
// with packaging/example/ota-agent.service.d/hardening.conf, as shipped, on
// ota-agent.service and ota-agent-boot.service (ProtectSystem=strict,
// ReadWritePaths=/opt/sample), plus the line its comment says to add for a
// symlink app (ReadWritePaths=/opt/symapp).
func TestUnitsHardenedUpdateRunningApps(t *testing.T) {
	unitsUpdateRunningApps(t, true)
}

func unitsUpdateRunningApps(t *testing.T, hardened bool) {
	if testing.Short() {
		t.Skip("boots containers in -short mode")
	}
	base := testenv.Rootfs(t, "systemd-sysv", "dbus")
	bin := nspawnBuildAgent(t)
	root := filepath.Join(t.TempDir(), "root")
	testenv.CopyTree(t, base, root)
	releases := t.TempDir()
	for _, a := range unitsApps {
		unitsPublish(t, releases, a, "v1")
	}
	unitsInstall(t, root, hardened)
	t.Cleanup(func() {
		// After the container stopped (cleanups run last first).
		if t.Failed() {
			unitsJournal(t, root)
		}
	})

	start := time.Now()
	c := testenv.BootContainer(t, testenv.ContainerOptions{
		Root:   root,
		BindRO: []string{bin + ":/usr/bin/ota-agent", releases + ":/srv/releases"},
	})
	if state := c.WaitBooted(t, nspawnBootTimeout); state != "running" {
		t.Fatalf("boot: system %s, want running; failed units:\n%s\nota-agent-boot.service:\n%s", state,
			c.Run(t, "systemctl", "--failed", "--no-legend"),
			c.Run(t, "journalctl", "-b", "-u", "ota-agent-boot.service", "-o", "cat", "--no-pager"))
	}
	t.Logf("booted in %v", time.Since(start).Round(time.Millisecond))

	if hardened {
		for _, u := range []string{"ota-agent.service", "ota-agent-boot.service"} {
			if got := c.Run(t, "systemctl", "show", "-p", "ProtectSystem", "--value", u); got != "strict" {
				t.Errorf("%s: ProtectSystem=%s, want strict (the drop-in is not in effect)", u, got)
			}
			rw := strings.Fields(c.Run(t, "systemctl", "show", "-p", "ReadWritePaths", "--value", u))
			for _, a := range unitsApps {
				if !slices.Contains(rw, a.parent) {
					t.Errorf("%s: ReadWritePaths=%v, want %s in it", u, rw, a.parent)
				}
			}
		}
	}
	// The case of issue 9: in the daemon's mount namespace the state dir
	// is a mount of its own, apart from the app dirs. (stat's %m cannot
	// tell: bind mounts of one file system share st_dev.)
	daemonPID := c.Run(t, "systemctl", "show", "-p", "MainPID", "--value", "ota-agent.service")
	mountinfo := c.Run(t, "cat", "/proc/"+daemonPID+"/mountinfo")
	stateMount := unitsMountOf(mountinfo, "/var/lib/ota-agent")
	for _, a := range unitsApps {
		m := unitsMountOf(mountinfo, a.parent)
		t.Logf("in ota-agent.service's mount namespace: /var/lib/ota-agent is on %s, %s on %s", stateMount, a.parent, m)
		if m == stateMount {
			t.Errorf("the daemon's state dir and %s are on one mount (%s): the test no longer covers the case of issue 9", a.parent, m)
		}
	}

	// The boot unit installed v1 before the apps started: their first
	// start saw v1.
	fi, err := os.Stat(filepath.Join(root, "var/lib/ota-agent"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o711 {
		t.Errorf("/var/lib/ota-agent is %#o, want 0711 (StateDirectoryMode=): a symlink app's user must pass through it", fi.Mode().Perm())
	}
	st := unitsStatus(t, c)
	pids := map[string]string{}
	for _, a := range unitsApps {
		if got := st[a.name]; got.Version != "v1" {
			t.Errorf("%s: status says version %q after boot, want v1", a.name, got.Version)
		}
		if got := nspawnSeen(t, filepath.Join(root, a.seen), a.seenLine("v1")); got != a.seenLine("v1") {
			t.Errorf("%s.service started with %q, want %q (once)", a.name, got, a.seenLine("v1"))
		}
		if got := c.Run(t, "systemctl", "show", "-p", "ActiveState", "--value", a.name+".service"); got != "active" {
			t.Errorf("%s.service is %s, want active", a.name, got)
		}
		pids[a.name] = c.Run(t, "systemctl", "show", "-p", "MainPID", "--value", a.name+".service")
	}
	if t.Failed() {
		t.FailNow()
	}

	// v2, while the apps run: the daemon finds it at its next check.
	published := time.Now()
	for _, a := range unitsApps {
		unitsPublish(t, releases, a, "v2")
	}
	st = unitsWaitVersion(t, c, "v2", published)
	t.Logf("the daemon updated both apps to v2 %v after publishing", time.Since(published).Round(time.Millisecond))

	for _, a := range unitsApps {
		want := a.seenLine("v1") + "\n" + a.seenLine("v2")
		if got := nspawnSeen(t, filepath.Join(root, a.seen), want); got != want {
			t.Errorf("%s.service started with %q, want %q: restarted on v2", a.name, got, want)
		}
		if got := c.Run(t, "systemctl", "show", "-p", "ActiveState", "--value", a.name+".service"); got != "active" {
			t.Errorf("%s.service is %s after the update, want active", a.name, got)
		}
		if pid := c.Run(t, "systemctl", "show", "-p", "MainPID", "--value", a.name+".service"); pid == pids[a.name] {
			t.Errorf("%s.service: MainPID %s before and after the update, want a new one", a.name, pid)
		}
		if _, err := os.Lstat(filepath.Join(root, "var/lib/ota-agent", a.name, "journal")); !os.IsNotExist(err) {
			t.Errorf("%s: a switch journal is left in /var/lib/ota-agent/%s (%v)", a.name, a.name, err)
		}
		switch a.install {
		case "in-place":
			nspawnFile(t, filepath.Join(root, a.appDir, "VERSION"), "v2\n")
		case "symlink":
			target, err := os.Readlink(filepath.Join(root, a.appDir))
			if want := "/var/lib/ota-agent/" + a.name + "/releases/v2"; err != nil || filepath.Clean(target) != want {
				t.Errorf("%s -> %q (%v), want %s", a.appDir, target, err, want)
			}
		}
	}
	for prop, want := range map[string]string{"ActiveState": "active", "NRestarts": "0", "MainPID": daemonPID} {
		if got := c.Run(t, "systemctl", "show", "-p", prop, "--value", "ota-agent.service"); got != want {
			t.Errorf("ota-agent.service: %s = %s, want %s", prop, got, want)
		}
	}
}

// unitsMountOf returns the mount (its ID and mount point, from
// /proc/PID/mountinfo) that path is on: the last mounted of those with the
// longest mount point that holds path.
func unitsMountOf(mountinfo, path string) string {
	best, bestPoint := "", ""
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		point := f[4]
		if point != "/" && path != point && !strings.HasPrefix(path, point+"/") {
			continue
		}
		if len(point) >= len(bestPoint) {
			best, bestPoint = f[0]+" "+point, point
		}
	}
	return best
}

// unitsAppStatus is the part of `ota-agent status --json` read here.
type unitsAppStatus struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Pending *struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"pending"`
	// Trial is the release on trial: the daemon commits v2 once it has
	// stayed healthy for the config's trial.
	Trial *struct {
		Version string `json:"version"`
	} `json:"trial"`
	LastCheck *struct {
		At      time.Time `json:"at"`
		Outcome string    `json:"outcome"`
		Remote  string    `json:"remote"`
		Error   string    `json:"error"`
	} `json:"last_check"`
}

// unitsStatus runs `ota-agent status --json` in the container, by app name.
func unitsStatus(t *testing.T, c *testenv.Container) map[string]unitsAppStatus {
	t.Helper()
	out := c.Run(t, "ota-agent", "status", "--json")
	var st struct {
		Apps []unitsAppStatus `json:"apps"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ota-agent status --json: %v\n%s", err, out)
	}
	m := map[string]unitsAppStatus{}
	for _, a := range st.Apps {
		m[a.Name] = a
	}
	return m
}

// unitsWaitVersion waits, at most unitsUpdateTimeout, until every app's
// status shows version v installed, no switch pending, and a last check
// that saw v on the server and installed it (or found it installed, if the
// next check came meanwhile). The version changes when the switch commits,
// before the app restarts and the check's outcome is recorded. A check of
// the daemon that failed after published fails the test at once, with its
// error and the daemon's log.
func unitsWaitVersion(t *testing.T, c *testenv.Container, v string, published time.Time) map[string]unitsAppStatus {
	t.Helper()
	deadline := time.Now().Add(unitsUpdateTimeout)
	for {
		st := unitsStatus(t, c)
		done := true
		for _, a := range unitsApps {
			s := st[a.name]
			if lc := s.LastCheck; s.Version == v && s.Pending == nil && s.Trial == nil && lc != nil && lc.Remote == v &&
				(lc.Outcome == "updated" || lc.Outcome == "up-to-date") {
				continue
			}
			done = false
			if lc := s.LastCheck; lc != nil && lc.At.After(published) && (lc.Outcome == "failed" || lc.Outcome == "unreachable") {
				t.Fatalf("%s: the daemon's check %s: %s\nota-agent.service:\n%s", a.name, lc.Outcome, lc.Error, unitsDaemonLog(t, c))
			}
		}
		if done {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not install %s within %v; status %+v\nota-agent.service:\n%s", v, unitsUpdateTimeout, st, unitsDaemonLog(t, c))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func unitsDaemonLog(t *testing.T, c *testenv.Container) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, "journalctl", "-b", "-u", "ota-agent.service", "-o", "cat", "--no-pager")
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// unitsPublish publishes version v of app a into the release directory,
// files first and the version last, replaced atomically.
func unitsPublish(t *testing.T, releases string, a unitsApp, v string) {
	t.Helper()
	dir := filepath.Join(releases, a.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{v + "_main.sh": a.main, v + "_VERSION": v + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// By rename: the daemon may be reading it (a truncated version is an
	// empty tag, a failed check).
	tmp := filepath.Join(dir, "version.tmp")
	if err := os.WriteFile(tmp, []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "version")); err != nil {
		t.Fatal(err)
	}
}

// unitsInstall wires the agent into the root filesystem as the README
// says: the three packaged units byte for byte, the config, each app's
// unit with the packaged drop-in, all enabled; with hardened, the packaged
// example hardening drop-in on the daemon and the boot unit. Plus the
// test's release server, the symlink app's user, and the app dirs (a
// hardened unit does not start while a ReadWritePaths= path is missing).
func unitsInstall(t *testing.T, root string, hardened bool) {
	t.Helper()
	pkg := filepath.Join("..", "..", "packaging")
	units := filepath.Join(root, "etc/systemd/system")
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(pkg, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, u := range []string{"ota-agent-recover.service", "ota-agent-boot.service", "ota-agent.service"} {
		nspawnWrite(t, filepath.Join(units, u), read(u))
	}
	enable := []string{"ota-agent-recover.service", "ota-agent-boot.service", "ota-agent.service", "ota-serve.service"}
	for _, a := range unitsApps {
		nspawnWrite(t, filepath.Join(units, a.name+".service"), a.unit)
		nspawnWrite(t, filepath.Join(units, a.name+".service.d/ota-agent.conf"), read("example/sample.service.d/ota-agent.conf"))
		enable = append(enable, a.name+".service")
		if err := os.MkdirAll(filepath.Join(root, a.parent), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nspawnWrite(t, filepath.Join(units, "ota-serve.service"), nspawnServeUnit)
	nspawnWrite(t, filepath.Join(root, "etc/ota-agent/config.toml"), unitsConfig)
	if hardened {
		hardening := read("example/ota-agent.service.d/hardening.conf")
		// The example names the in-place sample app and, commented, the
		// line a symlink app adds: keep them what this test installs.
		if !strings.Contains(hardening, "\nReadWritePaths="+unitsApps[0].parent+"\n") ||
			!strings.Contains(hardening, "\n#ReadWritePaths="+unitsApps[1].parent+"\n") {
			t.Fatalf("packaging/example/ota-agent.service.d/hardening.conf does not name %s and, commented, %s:\n%s",
				unitsApps[0].parent, unitsApps[1].parent, hardening)
		}
		for _, u := range []string{"ota-agent.service", "ota-agent-boot.service"} {
			nspawnWrite(t, filepath.Join(units, u+".d/hardening.conf"), hardening)
			nspawnWrite(t, filepath.Join(units, u+".d/symapp.conf"), "[Service]\nReadWritePaths="+unitsApps[1].parent+"\n")
		}
	}

	useradd, err := exec.LookPath("useradd")
	testenv.Require(t, "useradd (passwd) for the symlink app's user", err == nil)
	if out, err := exec.Command(useradd, "--root", root, "--system", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "symapp").CombinedOutput(); err != nil {
		t.Fatalf("useradd --root: %v\n%s", err, out)
	}
	systemctl, err := exec.LookPath("systemctl")
	testenv.Require(t, "systemctl (to enable units in the rootfs)", err == nil)
	if out, err := exec.Command(systemctl, append([]string{"--root=" + root, "enable"}, enable...)...).CombinedOutput(); err != nil {
		t.Fatalf("systemctl --root enable: %v\n%s", err, out)
	}
}

// unitsJournal logs what the agent's units, the apps and the release
// server logged, read from the host after the container stopped.
func unitsJournal(t *testing.T, root string) {
	t.Helper()
	args := []string{"-D", filepath.Join(root, "var/log/journal"), "--no-pager", "-o", "short-monotonic"}
	for _, u := range []string{"ota-agent-recover.service", "ota-agent-boot.service", "ota-agent.service", "ota-serve.service"} {
		args = append(args, "-u", u)
	}
	for _, a := range unitsApps {
		args = append(args, "-u", a.name+".service")
	}
	out, err := exec.Command("journalctl", args...).CombinedOutput()
	t.Logf("journal of the container (%v):\n%s", err, out)
}
