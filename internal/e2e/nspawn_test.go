//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// Bounds for one container boot or reboot in TestHardResetRebootsContainer.
// A boot takes about a second here; a reboot that takes longer than
// nspawnRebootBound waited for something (reboot_grace is 90 s).
const (
	nspawnBootTimeout = 2 * time.Minute
	nspawnRebootBound = 45 * time.Second
)

// The units the test adds to the packaged ones.
const (
	// ota-serve.service serves the bound release directory on the
	// container's loopback (--private-network: there is no other network)
	// and is ready, before the boot-time update starts, once it accepts
	// connections.
	nspawnServeUnit = `[Unit]
Description=Release server for the test: ota-agent serve
Before=ota-agent-boot.service

[Service]
ExecStart=/usr/bin/ota-agent serve /srv/releases --addr 127.0.0.1:8080
ExecStartPost=/bin/bash -c 'for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && exit 0; sleep 0.05; done; exit 1'

[Install]
WantedBy=multi-user.target
`
	// sample.service is packaging/example/sample.service with a shell app
	// instead of python3 (not in a minbase rootfs). The drop-in ordering it
	// after the boot-time update is the packaged one, unchanged.
	nspawnSampleUnit = `[Unit]
Description=Sample app kept up to date by ota-agent

[Service]
ExecStart=/bin/sh /opt/sample/main.sh
WorkingDirectory=/opt/sample
Restart=on-failure

[Install]
WantedBy=multi-user.target
`
	// The release's main.sh records each start, with the version it sees,
	// on persistent storage, then runs until stopped.
	nspawnSampleMain = `#!/bin/sh
mkdir -p /var/lib/sample
read v < /opt/sample/VERSION
echo "$v" >> /var/lib/sample/seen
exec sleep infinity
`
	// The boot unit at debug level, so that "up to date" is in its log
	// (at the default info level an up-to-date run logs nothing).
	nspawnBootDebug = `[Service]
ExecStart=
ExecStart=/usr/bin/ota-agent update --boot --log-level debug
`
	nspawnConfig = `[[app]]
name = "sample"
host = "http://127.0.0.1:8080"
project = "sample"
files = ["main.sh", "VERSION"]
app_dir = "/opt/sample"
unit = "sample.service"
reset = "hard"
`
)

// TestHardResetRebootsContainer runs the packaged units in a booted Debian
// (systemd-nspawn) with one app whose reset is "hard", and checks that an
// update reboots the machine cleanly through reboot.target (nspawn exits
// 133), and that the boot after it changes nothing and runs the new release.
//
// It needs root, debootstrap and systemd-nspawn (see internal/testenv); it skips
// without them, and fails when CI is "true". About 15 s with the rootfs
// cached, plus about 70 s to build the rootfs the first time.
func TestHardResetRebootsContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("boots containers in -short mode")
	}
	base := testenv.Rootfs(t, "systemd-sysv", "dbus")
	bin := nspawnBuildAgent(t)
	root := filepath.Join(t.TempDir(), "root")
	testenv.CopyTree(t, base, root)
	releases := t.TempDir()
	nspawnPublish(t, releases, "v1")
	nspawnInstall(t, root)
	t.Cleanup(func() {
		// After the containers stopped (cleanups run last first): the
		// journal of every boot, which is persistent in this rootfs.
		if t.Failed() {
			nspawnJournal(t, root)
		}
	})

	boot := func() *testenv.Container {
		t.Helper()
		return testenv.BootContainer(t, testenv.ContainerOptions{
			Root:   root,
			BindRO: []string{bin + ":/usr/bin/ota-agent", releases + ":/srv/releases"},
		})
	}
	statePath := filepath.Join(root, "var/lib/ota-agent/sample/state.json")
	seenPath := filepath.Join(root, "var/lib/sample/seen")

	// Boot 1, nothing installed: ota-agent-boot.service installs v1. An
	// install with reset = "hard" reboots, the first one included (agent:
	// NeedsReboot is set by every switch, cmd: update --boot hard-resets
	// like update), so this boot ends in a reboot before the app started
	// from v1.
	start := time.Now()
	c := boot()
	if status := c.Wait(t, nspawnBootTimeout); status != testenv.NspawnReboot {
		t.Fatalf("first boot (installs v1): nspawn exit status %d, want %d (reboot)", status, testenv.NspawnReboot)
	}
	t.Logf("first boot: installed v1 and rebooted in %v", time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d > nspawnRebootBound {
		t.Errorf("first boot took %v to reboot, want < %v: the reboot waited for something", d, nspawnRebootBound)
	}
	st1 := nspawnState(t, statePath)
	if st1.Version != "v1" {
		t.Fatalf("after the first boot state.json has version %q, want v1", st1.Version)
	}
	nspawnFile(t, filepath.Join(root, "opt/sample/VERSION"), "v1\n")

	// Boot 2: up to date; the app runs v1.
	start = time.Now()
	c = boot()
	if state := c.WaitBooted(t, nspawnBootTimeout); state != "running" {
		t.Errorf("second boot: system %s, want running; failed units:\n%s", state, c.Run(t, "systemctl", "--failed", "--no-legend"))
	}
	t.Logf("second boot: running in %v", time.Since(start).Round(time.Millisecond))
	nspawnRebootedCleanly(t, c, false)
	nspawnUpToDate(t, c, statePath, st1)
	// The app never started in the first boot: its start, ordered after
	// the boot-time update, was cancelled by the reboot.
	if got := nspawnSeen(t, seenPath, "v1"); got != "v1" {
		t.Errorf("second boot: sample.service started with %q, want v1 (once)", got)
	}

	// Publish v2 and update by hand: the container reboots through
	// reboot.target, an orderly shutdown.
	nspawnPublish(t, releases, "v2")
	ctx, cancel := context.WithTimeout(context.Background(), nspawnBootTimeout)
	defer cancel()
	// In a scope, as from a login session: the shutdown stops it with the
	// units (see ScopeCommand).
	update := c.ScopeCommand(ctx, "ota-agent", "update")
	outPath := filepath.Join(t.TempDir(), "update.log")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	update.Stdout, update.Stderr = out, out
	start = time.Now()
	if err := update.Start(); err != nil {
		t.Fatal(err)
	}
	var status int
	select {
	case <-c.Exited():
		status = c.Wait(t, 0)
	case <-time.After(nspawnBootTimeout):
		b, _ := os.ReadFile(outPath)
		t.Fatalf("ota-agent update: the container still runs after %v; update's output:\n%s", nspawnBootTimeout, b)
	}
	rebootTook := time.Since(start)
	updateErr := update.Wait() // ended by the reboot, at the latest when PID 1 exits
	b, _ := os.ReadFile(outPath)
	t.Logf("ota-agent update: container stopped after %v; update: %v\n%s", rebootTook.Round(time.Millisecond), updateErr, b)
	if status != testenv.NspawnReboot {
		t.Fatalf("ota-agent update: nspawn exit status %d, want %d (reboot)", status, testenv.NspawnReboot)
	}
	// Stopped by the shutdown once the reboot was queued, it leaves at once
	// and successfully: the reboot is under way.
	if updateErr != nil {
		t.Errorf("ota-agent update = %v, want exit 0", updateErr)
	}
	if rebootTook > nspawnRebootBound {
		t.Errorf("ota-agent update: the reboot took %v, want < %v: the shutdown waited for something", rebootTook, nspawnRebootBound)
	}
	st2 := nspawnState(t, statePath)
	if st2.Version != "v2" || !st2.InstalledAt.After(st1.InstalledAt) {
		t.Fatalf("after the update state.json has version %q installed at %v, want v2 after %v", st2.Version, st2.InstalledAt, st1.InstalledAt)
	}

	// Boot 3: ota-agent-recover and ota-agent-boot change nothing; the app
	// runs v2.
	start = time.Now()
	c = boot()
	if state := c.WaitBooted(t, nspawnBootTimeout); state != "running" {
		t.Errorf("third boot: system %s, want running; failed units:\n%s", state, c.Run(t, "systemctl", "--failed", "--no-legend"))
	}
	t.Logf("third boot: running in %v", time.Since(start).Round(time.Millisecond))
	nspawnRebootedCleanly(t, c, true)
	nspawnUpToDate(t, c, statePath, st2)
	if got := nspawnSeen(t, seenPath, "v1\nv2"); got != "v1\nv2" {
		t.Errorf("sample.service started with %q, want v1 (second boot) then v2 (third boot)", got)
	}
	if got := c.Run(t, "systemctl", "is-active", "sample.service"); got != "active" {
		t.Errorf("sample.service is %s, want active", got)
	}
}

// nspawnRebootedCleanly checks, in the boot after a hard reset, that the
// previous boot ended through reboot.target, with no unit failing or killed
// on the way, and, if the app ran, that its unit stopped it.
func nspawnRebootedCleanly(t *testing.T, c *testenv.Container, appRan bool) {
	t.Helper()
	matches := [][]string{{"UNIT=reboot.target", "JOB_TYPE=start", "JOB_RESULT=done"}}
	if appRan {
		matches = append(matches, []string{"UNIT=sample.service", "JOB_TYPE=stop", "JOB_RESULT=done"})
	}
	for _, match := range matches {
		args := append([]string{"-b", "-1", "-o", "cat", "--no-pager"}, match...)
		if c.Run(t, "journalctl", args...) == "" {
			t.Errorf("previous boot: no %s in the journal", strings.Join(match, " "))
		}
	}
	log := c.Run(t, "journalctl", "-b", "-1", "-o", "cat", "--no-pager", "_PID=1")
	for _, bad := range []string{"Failed with result", "Killing process", "timed out"} {
		if strings.Contains(log, bad) {
			t.Errorf("previous boot: systemd says %q:\n%s", bad, log)
		}
	}
}

// nspawnUpToDate checks, in a booted container, that the recover and boot
// units succeeded, the boot unit found the app up to date, and state.json
// is still want (the same installation).
func nspawnUpToDate(t *testing.T, c *testenv.Container, statePath string, want nspawnStateJSON) {
	t.Helper()
	for _, unit := range []string{"ota-agent-recover.service", "ota-agent-boot.service"} {
		// Oneshot units with RemainAfterExit: active once they succeeded.
		for prop, want := range map[string]string{"ActiveState": "active", "Result": "success", "ExecMainStatus": "0"} {
			if got := c.Run(t, "systemctl", "show", "-p", prop, "--value", unit); got != want {
				t.Errorf("%s: %s = %q, want %q", unit, prop, got, want)
			}
		}
	}
	log := c.Run(t, "journalctl", "-b", "-u", "ota-agent-boot.service", "-o", "json", "--no-pager")
	if !nspawnLogged(log, "up to date", want.Version) {
		t.Errorf("ota-agent-boot.service log does not say up to date at %s:\n%s", want.Version, log)
	}
	if nspawnLogged(log, "installed", "") {
		t.Errorf("ota-agent-boot.service installed again:\n%s", log)
	}
	if got := nspawnState(t, statePath); got.Version != want.Version || !got.InstalledAt.Equal(want.InstalledAt) {
		t.Errorf("state.json = version %q installed at %v, want unchanged %q at %v", got.Version, got.InstalledAt, want.Version, want.InstalledAt)
	}
}

// nspawnLogged reports whether a unit's journal (journalctl -o json) has a
// record with message msg (and, unless "", version), whether the agent
// wrote to the journal (its record in JSON=) or JSON lines to its stderr.
func nspawnLogged(journal, msg, version string) bool {
	for _, line := range strings.Split(journal, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		// The agent's own record: the journal's JSON= field, or the
		// message itself when it logs JSON lines to its stderr.
		raw, ok := rec["JSON"].(string)
		if !ok {
			raw, _ = rec["MESSAGE"].(string)
		}
		var inner map[string]any
		if json.Unmarshal([]byte(raw), &inner) != nil {
			continue
		}
		m, _ := inner["message"].(string)
		v, _ := inner["version"].(string)
		if m == msg && (version == "" || v == version) {
			return true
		}
	}
	return false
}

// nspawnJournal logs what the agent's units, the app and the release
// server logged in every boot of root, read from the host.
func nspawnJournal(t *testing.T, root string) {
	t.Helper()
	out, err := exec.Command("journalctl", "-D", filepath.Join(root, "var/log/journal"), "--no-pager",
		"-o", "short-monotonic", "-u", "ota-agent-recover.service", "-u", "ota-agent-boot.service",
		"-u", "sample.service", "-u", "ota-serve.service").CombinedOutput()
	t.Logf("journal of the container's boots (%v):\n%s", err, out)
}

type nspawnStateJSON struct {
	Version     string    `json:"version"`
	InstalledAt time.Time `json:"installed_at"`
}

func nspawnState(t *testing.T, path string) nspawnStateJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st nspawnStateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return st
}

// nspawnSeen returns the versions sample.service started with, one a line,
// once they are want or after 10 s: systemd reports a Type=simple unit
// started before its script ran.
func nspawnSeen(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		got := strings.TrimSpace(string(b))
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nspawnFile(t *testing.T, path, want string) {
	t.Helper()
	if b, err := os.ReadFile(path); err != nil || string(b) != want {
		t.Errorf("%s = %q, %v, want %q", path, b, err, want)
	}
}

// nspawnBuildAgent builds ota-agent static (CGO_ENABLED=0), as it is
// shipped: the container's libc must not matter.
func nspawnBuildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ota-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ota-agent/ota-agent/cmd/ota-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// nspawnPublish publishes version v of the sample project into the release
// directory, files first and the version last, as a publisher does.
func nspawnPublish(t *testing.T, releases, v string) {
	t.Helper()
	dir := filepath.Join(releases, "sample")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		v + "_main.sh": nspawnSampleMain,
		v + "_VERSION": v + "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "version"), []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nspawnInstall wires the agent into the root filesystem as the README
// says: the packaged recover and boot units, the config, the app's unit
// with the packaged drop-in, all enabled; plus the test's release server.
func nspawnInstall(t *testing.T, root string) {
	t.Helper()
	pkg := filepath.Join("..", "..", "packaging")
	units := filepath.Join(root, "etc/systemd/system")
	copyFile := func(src, dst string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		nspawnWrite(t, dst, string(b))
	}
	for _, u := range []string{"ota-agent-recover.service", "ota-agent-boot.service"} {
		copyFile(filepath.Join(pkg, u), filepath.Join(units, u))
	}
	copyFile(filepath.Join(pkg, "example/sample.service.d/ota-agent.conf"), filepath.Join(units, "sample.service.d/ota-agent.conf"))
	nspawnWrite(t, filepath.Join(units, "sample.service"), nspawnSampleUnit)
	nspawnWrite(t, filepath.Join(units, "ota-serve.service"), nspawnServeUnit)
	nspawnWrite(t, filepath.Join(units, "ota-agent-boot.service.d/debug.conf"), nspawnBootDebug)
	nspawnWrite(t, filepath.Join(root, "etc/ota-agent/config.toml"), nspawnConfig)

	systemctl, err := exec.LookPath("systemctl")
	testenv.Require(t, "systemctl (to enable units in the rootfs)", err == nil)
	cmd := exec.Command(systemctl, "--root="+root, "enable",
		"ota-agent-recover.service", "ota-agent-boot.service", "ota-serve.service", "sample.service")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemctl --root enable: %v\n%s", err, out)
	}
}

func nspawnWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
