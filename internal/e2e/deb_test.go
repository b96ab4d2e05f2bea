//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// debConfig is the admin's edit of the packaged /etc/ota-agent/config.toml:
// one app from the release server in the container, no unit.
const debConfig = `interval = "10s"
metrics_textfile = "/var/lib/prometheus/node-exporter/ota_agent.prom"

[[app]]
name = "sample"
host = "http://127.0.0.1:8080"
project = "sample"
files = ["main.sh", "VERSION"]
app_dir = "/opt/sample"
reset = "none"
`

// debServeUnit is the test's release server, run by the packaged binary
// once it is installed (so it is not enabled at boot).
const debServeUnit = `[Unit]
Description=Release server for the test: ota-agent serve

[Service]
ExecStart=/usr/bin/ota-agent serve /srv/releases --addr 127.0.0.1:8080
ExecStartPost=/bin/bash -c 'for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && exit 0; sleep 0.05; done; exit 1'
`

var debUnits = []string{"ota-agent-recover.service", "ota-agent-boot.service", "ota-agent.service"}

// TestDebInstallUpgradeRemovePurge installs the amd64 package that `make
// deb` builds with dpkg -i in a booted Debian (systemd-nspawn) and follows
// it through its life, as Debian policy says: the install enables the
// units and starts none; with a config, `ota-agent run` reaches READY and
// installs releases from the server; an upgrade restarts the running
// daemon and keeps the edited conffile; dpkg -r stops and masks the units
// and keeps config and state; dpkg -P removes them both and leaves the app
// dir alone. The daemon's records are in the journal with their fields.
// About 40 s with the rootfs and build caches warm.
func TestDebInstallUpgradeRemovePurge(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a container in -short mode")
	}
	base := testenv.Rootfs(t, "systemd-sysv", "dbus")
	src := testenv.SourceTree(t)
	v1 := testenv.BuildDebs(t, src, "v1.0.0", "1764000000", "amd64")
	v2 := testenv.BuildDebs(t, src, "v1.0.1", "1764000000", "amd64")
	root := filepath.Join(t.TempDir(), "root")
	testenv.CopyTree(t, base, root)
	for name, deb := range map[string]string{"ota-agent-1.deb": v1.Packages["amd64"], "ota-agent-2.deb": v2.Packages["amd64"]} {
		b, err := os.ReadFile(deb)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "root", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nspawnWrite(t, filepath.Join(root, "etc/systemd/system/ota-serve.service"), debServeUnit)
	if err := os.MkdirAll(filepath.Join(root, "var/lib/prometheus/node-exporter"), 0o755); err != nil {
		t.Fatal(err)
	}
	releases := t.TempDir()
	nspawnPublish(t, releases, "v1")
	t.Cleanup(func() {
		if t.Failed() {
			out, err := exec.Command("journalctl", "-D", filepath.Join(root, "var/log/journal"), "--no-pager",
				"-o", "short-monotonic").CombinedOutput()
			t.Logf("journal of the container (%v):\n%s", err, tail(out, 32<<10))
		}
	})

	c := testenv.BootContainer(t, testenv.ContainerOptions{Root: root, BindRO: []string{releases + ":/srv/releases"}})
	c.WaitBooted(t, nspawnBootTimeout)
	show := func(unit, prop string) string {
		return c.Run(t, "systemctl", "show", "-p", prop, "--value", unit)
	}

	// Install: enabled, not started (the config is an example).
	t.Log(c.Run(t, "dpkg", "-i", "/root/ota-agent-1.deb"))
	for _, u := range debUnits {
		if got := c.Run(t, "systemctl", "is-enabled", u); got != "enabled" {
			t.Errorf("after dpkg -i: %s is %s, want enabled", u, got)
		}
		if got := show(u, "ActiveState"); got != "inactive" {
			t.Errorf("after dpkg -i: %s is %s, want inactive (the config is an example to edit first)", u, got)
		}
	}
	if got := c.Run(t, "stat", "-c", "%a %U:%G", "/etc/ota-agent/config.toml"); got != "640 root:root" {
		t.Errorf("/etc/ota-agent/config.toml: %s, want 640 root:root", got)
	}
	if got := c.Run(t, "ota-agent", "version"); got != "ota-agent v1.0.0" {
		t.Errorf("ota-agent version = %q, want ota-agent v1.0.0", got)
	}

	// Configured and started: READY (systemctl start of a Type=notify
	// unit returns once it is), then the daemon installs v1 and v2.
	nspawnWrite(t, filepath.Join(root, "etc/ota-agent/config.toml"), debConfig)
	c.Run(t, "systemctl", "start", "ota-serve.service")
	c.Run(t, "systemctl", "start", "ota-agent.service")
	if got := show("ota-agent.service", "ActiveState"); got != "active" {
		t.Fatalf("ota-agent.service is %s after start, want active (READY)", got)
	}
	debWaitVersion(t, c, "v1")
	nspawnPublish(t, releases, "v2")
	debWaitVersion(t, c, "v2")
	nspawnFile(t, filepath.Join(root, "opt/sample/VERSION"), "v2\n")
	debJournalFields(t, c)
	// The daemon's metrics: two releases installed, the last v2.
	prom, err := os.ReadFile(filepath.Join(root, "var/lib/prometheus/node-exporter/ota_agent.prom"))
	if err != nil || !strings.Contains(string(prom), `ota_agent_updates_total{app="sample"} 2`) ||
		!strings.Contains(string(prom), `ota_agent_info{app="sample",version="v2"} 1`) {
		t.Errorf("metrics_textfile after v1 and v2 (%v):\n%s", err, prom)
	}
	// doctor on the installed board: every line ok, the packaged units
	// enabled included.
	if out, err := c.Exec(t.Context(), "ota-agent", "doctor"); err != nil || strings.Contains(string(out), "FAIL") ||
		!strings.Contains(string(out), "ok    units: ota-agent-recover.service, ota-agent-boot.service, ota-agent.service enabled") {
		t.Errorf("ota-agent doctor on the installed board: %v\n%s", err, out)
	}

	// Upgrade while it runs: restarted on the new binary; the edited
	// conffile is the admin's still.
	pid := show("ota-agent.service", "MainPID")
	t.Log(c.Run(t, "dpkg", "-i", "/root/ota-agent-2.deb"))
	if got := show("ota-agent.service", "ActiveState"); got != "active" {
		t.Errorf("after the upgrade ota-agent.service is %s, want active", got)
	}
	if got := show("ota-agent.service", "MainPID"); got == pid {
		t.Errorf("after the upgrade ota-agent.service still has MainPID %s: not restarted", got)
	}
	if got := c.Run(t, "ota-agent", "version"); got != "ota-agent v1.0.1" {
		t.Errorf("after the upgrade: ota-agent version = %q, want ota-agent v1.0.1", got)
	}
	nspawnFile(t, filepath.Join(root, "etc/ota-agent/config.toml"), debConfig)
	// An upgrade of a stopped daemon leaves it stopped.
	c.Run(t, "systemctl", "stop", "ota-agent.service")
	c.Run(t, "dpkg", "-i", "/root/ota-agent-2.deb")
	if got := show("ota-agent.service", "ActiveState"); got != "inactive" {
		t.Errorf("after reinstalling over a stopped daemon: ota-agent.service is %s, want inactive", got)
	}
	c.Run(t, "systemctl", "start", "ota-agent.service")

	// Remove: stopped and masked, binary gone, config and state kept.
	c.Run(t, "dpkg", "-r", "ota-agent")
	for _, u := range debUnits {
		if got := show(u, "ActiveState"); got != "inactive" {
			t.Errorf("after dpkg -r: %s is %s, want inactive", u, got)
		}
	}
	for _, p := range []string{"usr/bin/ota-agent", "usr/lib/systemd/system/ota-agent.service"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("after dpkg -r: /%s is still there (%v)", p, err)
		}
	}
	nspawnFile(t, filepath.Join(root, "etc/ota-agent/config.toml"), debConfig)
	for _, p := range []string{"var/lib/ota-agent/sample/state.json", "opt/sample/main.sh"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("after dpkg -r: %v, want it kept", err)
		}
	}

	// Purge: config and state gone, the app dir as it was.
	c.Run(t, "dpkg", "-P", "ota-agent")
	for _, p := range []string{"etc/ota-agent", "var/lib/ota-agent", "etc/systemd/system/multi-user.target.wants/ota-agent.service",
		"etc/systemd/system/ota-agent.service"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("after dpkg -P: /%s is still there (%v)", p, err)
		}
	}
	nspawnFile(t, filepath.Join(root, "opt/sample/VERSION"), "v2\n")
	if _, err := os.Stat(filepath.Join(root, "opt/sample/main.sh")); err != nil {
		t.Errorf("after dpkg -P: %v, want the app dir untouched", err)
	}
	// dpkg forgets a purged package: dpkg-query finds nothing.
	if out, err := c.Exec(t.Context(), "dpkg-query", "-W", "ota-agent"); err == nil {
		t.Errorf("after dpkg -P: dpkg-query -W ota-agent = %q, want no package", out)
	}
}

// debJournalFields reads the daemon's records back from the container's
// journal, as `journalctl -u ota-agent APP=sample -o json` shows them: the
// install of v2 must be there with its fields (APP=, FROM=, TO=), its
// level as PRIORITY=, and the whole record in JSON=.
func debJournalFields(t *testing.T, c *testenv.Container) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second) // journald may lag a little
	for {
		out := c.Run(t, "journalctl", "-u", "ota-agent.service", "-o", "json", "--no-pager", "APP=sample")
		var seen []string
		for _, line := range strings.Split(out, "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) != nil {
				continue
			}
			seen = append(seen, fmt.Sprintf("%v %v->%v", e["MESSAGE"], e["FROM"], e["TO"]))
			if strings.HasPrefix(fmt.Sprint(e["MESSAGE"]), "installed app=sample") && e["APP"] == "sample" && e["FROM"] == "v1" && e["TO"] == "v2" &&
				e["PRIORITY"] == "6" && strings.Contains(fmt.Sprint(e["JSON"]), `"to":"v2"`) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("journalctl -u ota-agent.service APP=sample -o json: no record MESSAGE=\"installed app=sample ...\" APP=sample FROM=v1 TO=v2 PRIORITY=6; records with APP=sample: %q", seen)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// debWaitVersion waits, at most unitsUpdateTimeout, for the sample app's
// status to show version v installed.
func debWaitVersion(t *testing.T, c *testenv.Container, v string) {
	t.Helper()
	deadline := time.Now().Add(unitsUpdateTimeout)
	for {
		st := unitsStatus(t, c)["sample"]
		if st.Version == v && st.Pending == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not install %s within %v; status %+v\nota-agent.service:\n%s", v, unitsUpdateTimeout, st, unitsDaemonLog(t, c))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// tail returns at most the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
