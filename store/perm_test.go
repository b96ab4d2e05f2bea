package store

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// In symlink mode the app reads its files through the state dir
// (app_dir -> <state>/releases/<v>/), so an app that runs as its own user
// (a systemd unit with User=) must be able to get there.
func TestSymlinkReleaseReadableByAppUser(t *testing.T) {
	testenv.Require(t, "root (to run as another user)", os.Geteuid() == 0)
	root := t.TempDir()
	// t.TempDir's own directories are private; a board's /var/lib and /opt are not.
	for d := root; d != os.TempDir(); d = filepath.Dir(d) {
		mustDo(t, "chmod", os.Chmod(d, 0o755))
	}
	s, err := Open(filepath.Join(root, "state", "app"), filepath.Join(root, "app"), Options{Mode: Symlink})
	mustDo(t, "Open", err)
	install(t, s, "v1", map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util"})
	for _, p := range []string{"main.py", "lib/util.py"} {
		cat := exec.Command("cat", filepath.Join(s.AppDir(), p))
		cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1234, Gid: 1234}}
		if out, err := cat.CombinedOutput(); err != nil {
			t.Errorf("as uid 1234, cat %s = %v (%s), want the file", p, err, out)
		}
	}
}

func TestOpenStateDirMode(t *testing.T) {
	tests := []struct {
		mode     string
		existing os.FileMode // 0: the state dir does not exist yet
		want     os.FileMode
	}{
		{InPlace, 0, 0o700},
		{Symlink, 0, 0o711},
		{InPlace, 0o750, 0o750},
		{Symlink, 0o700, 0o711}, // was private: the app could not reach its files
		{Symlink, 0o755, 0o755},
	}
	for _, tt := range tests {
		root := t.TempDir()
		dir := filepath.Join(root, "state", "app")
		if tt.existing != 0 {
			mustDo(t, "mkdir", os.MkdirAll(dir, 0o755))
			mustDo(t, "chmod", os.Chmod(dir, tt.existing))
		}
		s, err := Open(dir, filepath.Join(root, "app"), Options{Mode: tt.mode})
		if err != nil {
			t.Fatalf("Open(%s) = %v, want nil", tt.mode, err)
		}
		fi, _ := os.Stat(s.Dir())
		parent, _ := os.Stat(filepath.Dir(s.Dir()))
		if fi.Mode().Perm() != tt.want || parent.Mode().Perm() != 0o755 {
			t.Errorf("Open(%s) over %v: state dir %v, its parent %v; want %v, 0755", tt.mode, tt.existing, fi.Mode().Perm(), parent.Mode().Perm(), tt.want)
		}
	}
}
