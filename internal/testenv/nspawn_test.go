//go:build linux

package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestContainerBootRebootStop boots a container, runs a command inside,
// reboots it (status 133), boots the same tree again (what the first boot
// wrote is still there) and stops it.
func TestContainerBootRebootStop(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a container in -short mode")
	}
	root := filepath.Join(t.TempDir(), "root")
	CopyTree(t, Rootfs(t, "systemd-sysv", "dbus"), root)
	shared := t.TempDir()

	start := time.Now()
	c := BootContainer(t, ContainerOptions{Root: root, Bind: []string{shared + ":/mnt/shared"}})
	if state := c.WaitBooted(t, time.Minute); state != "running" {
		t.Errorf("WaitBooted = %q, want running", state)
	}
	t.Logf("booted in %v", time.Since(start).Round(time.Millisecond))
	// The private network has a loopback interface only.
	if got := c.Run(t, "ls", "/sys/class/net"); got != "lo" {
		t.Errorf("network interfaces = %q, want lo", got)
	}
	c.Run(t, "sh", "-c", "echo one > /mnt/shared/out; echo kept > /var/tmp/mark")
	if b, err := os.ReadFile(filepath.Join(shared, "out")); err != nil || string(b) != "one\n" {
		t.Errorf("bound file = %q, %v, want one", b, err)
	}
	if _, err := os.Stat(filepath.Join(c.BusDir, "system_bus_socket")); err != nil {
		t.Errorf("system bus socket: %v", err)
	}

	c.Run(t, "systemctl", "--no-block", "reboot")
	if status := c.Wait(t, time.Minute); status != NspawnReboot {
		t.Errorf("after systemctl reboot, nspawn exit status = %d, want %d", status, NspawnReboot)
	}

	c = BootContainer(t, ContainerOptions{Root: root})
	c.WaitBooted(t, time.Minute)
	if got := c.Run(t, "cat", "/var/tmp/mark"); got != "kept" {
		t.Errorf("after a reboot /var/tmp/mark = %q, want kept", got)
	}
	cgs := c.cgroups
	c.Stop(t)
	select {
	case <-c.Exited():
	default:
		t.Fatal("Stop returned before nspawn exited")
	}
	if c.status != NspawnPoweroff {
		t.Errorf("after Stop, nspawn exit status = %d, want %d (an orderly poweroff)", c.status, NspawnPoweroff)
	}
	for _, cg := range cgs {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s left after Stop", cg)
		}
	}
}
