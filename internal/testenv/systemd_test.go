package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUserManager(t *testing.T) {
	var m *UserManager
	var cgroups []string
	t.Run("start", func(t *testing.T) {
		start := time.Now()
		m = StartUserManager(t)
		t.Logf("user manager ready after %v", time.Since(start))
		cgroups = m.cgroups
		for _, cg := range cgroups {
			if !fileExists(cg) {
				t.Errorf("cgroup %s missing while the manager runs", cg)
			}
		}
		if !fileExists(filepath.Join(m.RuntimeDir, "bus")) {
			t.Errorf("no session bus socket in %s", m.RuntimeDir)
		}

		m.WriteUnit(t, "hello.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/echo hello-from-unit\n")
		m.Systemctl(t, "start", "hello.service")
		if got := m.Systemctl(t, "show", "hello.service", "-p", "ActiveState", "--value"); got != "active" {
			t.Errorf("ActiveState = %q, want active", got)
		}
		// Units' output lands in the manager's log.
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(m.LogPath)
			if strings.Contains(string(b), "hello-from-unit") {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("unit output not in %s:\n%s", m.LogPath, b)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := m.TrySystemctl("start", "missing.service"); err == nil {
			t.Error("TrySystemctl(start missing.service) = nil error, want one")
		}
	})
	if m == nil {
		return // skipped
	}
	// The subtest's cleanup stopped the manager and removed its traces.
	for _, p := range append(cgroups, m.dir) {
		if fileExists(p) {
			t.Errorf("%s still exists after the test", p)
		}
	}
}
