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

// Health-gated commits and rollbacks of a reset = "hard" app in a booted
// Debian with the shipped units (issue 12): the trial stays open across the
// reboot the agent asks for; the daemon judges it once the board is up; a
// boot that starts with the trial still open counts, and after
// max_boot_attempts of them ota-agent-recover.service rolls the release
// back before the app starts.

// trialConfig is the app of TestHardResetRebootsContainer with a short
// trial, two boots allowed, and a daemon that never checks by itself
// within the test (updates are by hand): its first check comes after a
// random part of 10% of its interval.
const trialConfig = `interval = "24h"

[[app]]
name = "sample"
host = "http://127.0.0.1:8080"
project = "sample"
files = ["main.sh", "VERSION"]
app_dir = "/opt/sample"
unit = "sample.service"
reset = "hard"
trial = "2s"
start_timeout = "5s"
max_boot_attempts = 2
`

// Releases of the test's app. Each records its start, with the version it
// sees, on persistent storage, as nspawnSampleMain does; then:
const (
	// trialMainExits exits at start: the unit (Restart=on-failure)
	// restarts it until the start limit, and never stays active.
	trialMainExits = `#!/bin/sh
mkdir -p /var/lib/sample
read v < /opt/sample/VERSION
echo "$v" >> /var/lib/sample/seen
exit 3
`
	// trialMainResets resets the board at start, as a kernel panic or a
	// hardware watchdog would: no orderly shutdown, so the daemon never
	// sees the trial through.
	trialMainResets = `#!/bin/sh
mkdir -p /var/lib/sample
read v < /opt/sample/VERSION
echo "$v" >> /var/lib/sample/seen
sync
exec systemctl reboot --force --force
`
)

// trialCommitTimeout bounds the daemon's verdict once the board is up:
// the trial (2 s) after the unit is active, a rollback, with margin.
const trialCommitTimeout = 30 * time.Second

// trialNoReboot is how long a container must keep running to count as not
// rebooting again.
const trialNoReboot = 3 * time.Second

// TestHardResetTrialContainer boots the packaged units (recover, boot,
// daemon) with one app whose reset is "hard", and follows a fleet's life:
//
//  1. v1 is installed at the first boot, which reboots; the daemon
//     commits its trial in the next boot.
//  2. v2, healthy, updated by hand: the board reboots once, the daemon
//     commits v2 after its trial, and nothing reboots again.
//  3. v3, whose app exits at start: updated by hand, the board reboots
//     once; the daemon finds the trial failing, switches back to v2 and
//     starts it, marks v3 bad, with no further reboot.
//  4. v4, whose app resets the board at start: updated by hand, the board
//     reboots (not counted) and v4 resets it; the next boot (attempt 1)
//     too; the one after it (attempt 2 of max_boot_attempts = 2) starts
//     with ota-agent-recover.service rolling v4 back before the app
//     starts; the board then runs v2, the boot-time update does not
//     install v4 again, and nothing reboots again.
//
// It needs root, debootstrap and systemd-nspawn (see internal/testenv); it skips
// without them, and fails when CI is "true". About 40 s with the rootfs
// cached.
func TestHardResetTrialContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("boots containers in -short mode")
	}
	base := testenv.Rootfs(t, "systemd-sysv", "dbus")
	bin := nspawnBuildAgent(t)
	root := filepath.Join(t.TempDir(), "root")
	testenv.CopyTree(t, base, root)
	releases := t.TempDir()
	trialPublish(t, releases, "v1", nspawnSampleMain)
	trialInstall(t, root)
	t.Cleanup(func() {
		if t.Failed() {
			unitsJournalOf(t, root, "ota-agent-recover.service", "ota-agent-boot.service", "ota-agent.service", "sample.service")
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
	began := time.Now()

	// 1. First boot: installs v1 on trial, reboots before the app starts.
	c := boot()
	if status := c.Wait(t, nspawnBootTimeout); status != testenv.NspawnReboot {
		t.Fatalf("first boot (installs v1): nspawn exit status %d, want %d (reboot)", status, testenv.NspawnReboot)
	}
	if st := trialReadState(t, statePath); st.Version != "v1" || st.Trial == nil || !st.Trial.RebootPending {
		t.Fatalf("after the first boot: state %s, want v1 on trial with the reboot pending", st)
	}
	c = boot()
	trialBooted(t, c, "second boot")
	st := trialWaitSettled(t, c, statePath)
	if st.Version != "v1" || len(st.Bad) > 0 || st.LastRollback != nil {
		t.Fatalf("second boot: state %s, want v1 committed", st)
	}
	t.Logf("v1 installed, rebooted and committed in %v", time.Since(began).Round(time.Millisecond))

	// 2. v2, healthy: one reboot, then committed by the daemon.
	trialPublish(t, releases, "v2", nspawnSampleMain)
	start := time.Now()
	trialUpdateReboots(t, c, "v2")
	if st := trialReadState(t, statePath); st.Version != "v2" || st.Trial == nil || st.Trial.From != "v1" || !st.Trial.RebootPending {
		t.Fatalf("after the update to v2: state %s, want v2 on trial from v1 with the reboot pending", st)
	}
	c = boot()
	trialBooted(t, c, "boot after the update to v2")
	if st := trialReadState(t, statePath); st.Trial != nil && (st.Trial.RebootPending || st.Trial.BootAttempts != 0) {
		t.Errorf("boot after the update to v2: trial %+v, want the asked-for reboot not counted", *st.Trial)
	}
	st = trialWaitSettled(t, c, statePath)
	if st.Version != "v2" || len(st.Bad) > 0 || st.LastRollback != nil {
		t.Fatalf("boot after the update to v2: state %s, want v2 committed", st)
	}
	if !trialLogSays(unitsLogOf(t, c, "ota-agent.service"), "release healthy: committed") {
		t.Errorf("ota-agent.service does not log the commit:\n%s", unitsLogOf(t, c, "ota-agent.service"))
	}
	trialStillRunning(t, c, "after v2 was committed")
	if got := c.Run(t, "systemctl", "is-active", "sample.service"); got != "active" {
		t.Errorf("sample.service is %s after v2 was committed, want active", got)
	}
	if got := nspawnSeen(t, seenPath, "v1\nv2"); got != "v1\nv2" {
		t.Errorf("sample.service started with %q, want v1 then v2", got)
	}
	t.Logf("v2: rebooted once and committed in %v", time.Since(start).Round(time.Millisecond))

	// 3. v3 exits at start: the daemon rolls it back in the boot after
	// the update's reboot, without another.
	trialPublish(t, releases, "v3", trialMainExits)
	start = time.Now()
	trialUpdateReboots(t, c, "v3")
	c = boot()
	// The app fails while the system boots: degraded, or running once
	// the rollback started it again.
	c.WaitBooted(t, nspawnBootTimeout)
	st = trialWaitSettled(t, c, statePath)
	if st.Version != "v2" {
		t.Fatalf("boot after the update to v3: state %s, want v2 back", st)
	}
	trialRolledBack(t, st, "v3", "v2")
	trialStillRunning(t, c, "after v3 was rolled back")
	trialAppRuns(t, c, seenPath, "v2")
	nspawnFile(t, filepath.Join(root, "opt/sample/VERSION"), "v2\n")
	t.Logf("v3: rebooted once, rolled back by the daemon in %v: %s", time.Since(start).Round(time.Millisecond), st.Bad[0].Reason)

	// 4. v4 resets the board at start: the boots with its trial open are
	// counted, and the second is rolled back at boot.
	trialPublish(t, releases, "v4", trialMainResets)
	start = time.Now()
	trialUpdateReboots(t, c, "v4")
	// The boot the update asked for is not counted; the next one is the
	// first attempt.
	for attempt := 0; attempt < 2; attempt++ {
		c = boot()
		if status := c.Wait(t, nspawnBootTimeout); status != testenv.NspawnReboot {
			t.Fatalf("boot with v4 on trial (%d attempts): nspawn exit status %d, want %d (v4 resets the board)", attempt, status, testenv.NspawnReboot)
		}
		if st := trialReadState(t, statePath); st.Version != "v4" || st.Trial == nil || st.Trial.RebootPending || st.Trial.BootAttempts != attempt {
			t.Fatalf("after a boot with v4 on trial: state %s, want v4 on trial with %d boot attempt(s)", st, attempt)
		}
	}
	c = boot()
	trialBooted(t, c, "boot after two attempts of v4")
	st = trialReadState(t, statePath)
	if st.Version != "v2" || st.Trial != nil {
		t.Fatalf("boot after two attempts of v4: state %s, want v2 back, rolled back at boot", st)
	}
	trialRolledBack(t, st, "v4", "v2")
	if log := unitsLogOf(t, c, "ota-agent-recover.service"); !trialLogSays(log, "rolling back") {
		t.Errorf("ota-agent-recover.service did not roll back:\n%s", log)
	}
	if log := unitsLogOf(t, c, "ota-agent-boot.service"); trialLogSays(log, "installed") {
		t.Errorf("ota-agent-boot.service installed v4 again:\n%s", log)
	}
	trialStillRunning(t, c, "after v4 was rolled back")
	trialAppRuns(t, c, seenPath, "v2")
	if got := strings.Count(trialSeen(t, seenPath), "v4"); got != 2 {
		t.Errorf("v4 started %d times, want 2 (one per boot allowed)", got)
	}
	t.Logf("v4: rolled back at the boot after %d counted boots, in %v: %s", 2, time.Since(start).Round(time.Millisecond), st.Bad[len(st.Bad)-1].Reason)
}

// trialStateJSON is the part of state.json the test reads.
type trialStateJSON struct {
	Version string `json:"version"`
	Trial   *struct {
		Version       string `json:"version"`
		From          string `json:"from"`
		BootAttempts  int    `json:"boot_attempts"`
		RebootPending bool   `json:"reboot_pending"`
	} `json:"trial"`
	Bad []struct {
		Version string `json:"version"`
		Reason  string `json:"reason"`
	} `json:"bad_versions"`
	LastRollback *struct {
		From   string `json:"from"`
		To     string `json:"to"`
		Reason string `json:"reason"`
	} `json:"last_rollback"`
}

func (st trialStateJSON) String() string {
	b, _ := json.Marshal(st)
	return string(b)
}

func trialReadState(t *testing.T, path string) trialStateJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st trialStateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return st
}

// trialWaitSettled waits until no trial is open, and returns the state.
func trialWaitSettled(t *testing.T, c *testenv.Container, path string) trialStateJSON {
	t.Helper()
	deadline := time.Now().Add(trialCommitTimeout)
	for {
		st := trialReadState(t, path)
		if st.Trial == nil {
			return st
		}
		select {
		case <-c.Exited():
			t.Fatalf("the container stopped (status %d) with the trial open: %s", c.Wait(t, 0), st)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trial is still open after %v: %s\nota-agent.service:\n%s", trialCommitTimeout, st, unitsLogOf(t, c, "ota-agent.service"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// trialBooted waits for the boot to finish with every unit fine.
func trialBooted(t *testing.T, c *testenv.Container, when string) {
	t.Helper()
	if state := c.WaitBooted(t, nspawnBootTimeout); state != "running" {
		t.Errorf("%s: system %s, want running; failed units:\n%s", when, state, c.Run(t, "systemctl", "--failed", "--no-legend"))
	}
}

// trialStillRunning checks that the container does not stop within
// trialNoReboot.
func trialStillRunning(t *testing.T, c *testenv.Container, when string) {
	t.Helper()
	select {
	case <-c.Exited():
		t.Fatalf("%s: the container stopped (nspawn exit status %d), want no further reboot", when, c.Wait(t, 0))
	case <-time.After(trialNoReboot):
	}
}

// trialRolledBack checks that state records the rollback from bad to
// good, with bad marked bad.
func trialRolledBack(t *testing.T, st trialStateJSON, bad, good string) {
	t.Helper()
	if st.Trial != nil {
		t.Errorf("a trial is still open: %s", st)
	}
	if lr := st.LastRollback; lr == nil || lr.From != bad || lr.To != good {
		t.Errorf("last rollback %s, want from %s to %s", st, bad, good)
	}
	marked := false
	for _, b := range st.Bad {
		marked = marked || b.Version == bad && b.Reason != ""
	}
	if !marked {
		t.Errorf("%s is not marked bad with a reason: %s", bad, st)
	}
}

// trialAppRuns checks that sample.service is active, running release v
// (its last start saw v).
func trialAppRuns(t *testing.T, c *testenv.Container, seenPath, v string) {
	t.Helper()
	if got := c.Run(t, "systemctl", "show", "-p", "ActiveState", "--value", "sample.service"); got != "active" {
		t.Errorf("sample.service is %s, want active", got)
	}
	seen := trialSeen(t, seenPath)
	if lines := strings.Split(seen, "\n"); lines[len(lines)-1] != v {
		t.Errorf("sample.service started with %q, want %s last", seen, v)
	}
}

// trialUpdateReboots runs `ota-agent update` in the container, as an
// operator would, and waits for the reboot it asks for.
func trialUpdateReboots(t *testing.T, c *testenv.Container, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nspawnBootTimeout)
	defer cancel()
	update := c.ScopeCommand(ctx, "ota-agent", "update", "--wait")
	outPath := filepath.Join(t.TempDir(), "update.log")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	update.Stdout, update.Stderr = out, out
	if err := update.Start(); err != nil {
		t.Fatal(err)
	}
	var status int
	select {
	case <-c.Exited():
		status = c.Wait(t, 0)
	case <-time.After(nspawnBootTimeout):
		b, _ := os.ReadFile(outPath)
		t.Fatalf("ota-agent update to %s: the container still runs after %v; output:\n%s", v, nspawnBootTimeout, b)
	}
	updateErr := update.Wait()
	if status != testenv.NspawnReboot || updateErr != nil {
		b, _ := os.ReadFile(outPath)
		t.Fatalf("ota-agent update to %s = %v, nspawn exit status %d, want exit 0 and %d (reboot); output:\n%s", v, updateErr, status, testenv.NspawnReboot, b)
	}
}

// trialPublish publishes version v of the sample project with main.sh
// main, files first and the version last, by rename.
func trialPublish(t *testing.T, releases, v, main string) {
	t.Helper()
	unitsPublish(t, releases, unitsApp{name: "sample", main: main}, v)
}

// trialInstall wires the agent into the root filesystem as the README
// says, as nspawnInstall does, with the daemon too and trialConfig.
func trialInstall(t *testing.T, root string) {
	t.Helper()
	nspawnInstall(t, root)
	b, err := os.ReadFile(filepath.Join("..", "..", "packaging", "ota-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(root, "etc/systemd/system")
	nspawnWrite(t, filepath.Join(units, "ota-agent.service"), string(b))
	// The container's doing, not the agent's: systemd-nspawn gives each
	// boot of the container a boot id of its own by mounting a file over
	// /proc/sys/kernel/random/boot_id, and a unit with
	// ProtectKernelTunables=yes or ProtectControlGroups=yes (systemd 252)
	// sees /proc/sys without it: the host's boot id, the same in every
	// boot of the container. The daemon would then count each boot a
	// second time. On a board every process sees the kernel's boot id.
	nspawnWrite(t, filepath.Join(units, "ota-agent.service.d/nspawn-boot-id.conf"),
		"[Service]\nProtectKernelTunables=no\nProtectControlGroups=no\n")
	nspawnWrite(t, filepath.Join(root, "etc/ota-agent/config.toml"), trialConfig)
	if out, err := exec.Command("systemctl", "--root="+root, "enable", "ota-agent.service").CombinedOutput(); err != nil {
		t.Fatalf("systemctl --root enable ota-agent.service: %v\n%s", err, out)
	}
}

// unitsLogOf is the current boot's log of unit in the container.
func unitsLogOf(t *testing.T, c *testenv.Container, unit string) string {
	t.Helper()
	return c.Run(t, "journalctl", "-b", "-u", unit, "-o", "cat", "--no-pager")
}

// unitsJournalOf logs what units logged in every boot of root, read from
// the host after the container stopped.
func unitsJournalOf(t *testing.T, root string, units ...string) {
	t.Helper()
	args := []string{"-D", filepath.Join(root, "var/log/journal"), "--no-pager", "-o", "short-monotonic"}
	for _, u := range units {
		args = append(args, "-u", u)
	}
	out, err := exec.Command("journalctl", args...).CombinedOutput()
	t.Logf("journal of the container's boots (%v):\n%s", err, out)
}

// trialSeen is what sample.service recorded so far, one start a line.
func trialSeen(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// trialLogSays reports whether a unit's log (journalctl -o cat) has a
// record with message msg: a line that starts with it (the journal's
// MESSAGE=, the message then its fields) or a JSON line's "message".
func trialLogSays(log, msg string) bool {
	for _, line := range strings.Split(log, "\n") {
		if line == msg || strings.HasPrefix(line, msg+" ") || strings.Contains(line, `"message":"`+msg+`"`) {
			return true
		}
	}
	return false
}
