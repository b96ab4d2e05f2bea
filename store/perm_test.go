package store

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

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
		mode     Mode
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

// Symlink mode keeps the app dir's owner: the release directories and the
// new files of an app dir owned by the app's user are that user's, and the
// user reads its release through the symlink under a state root of 0711
// (StateDirectoryMode= of the shipped units). Under 0700 it cannot, and
// Open says so.
func TestSymlinkOwnerKept(t *testing.T) {
	testenv.Require(t, "root (to give files to another user)", os.Geteuid() == 0)
	const uid, gid = 1234, 1234
	for _, rootMode := range []os.FileMode{0o711, 0o700} {
		t.Run(rootMode.String(), func(t *testing.T) {
			root := t.TempDir()
			for d := root; d != os.TempDir(); d = filepath.Dir(d) {
				mustDo(t, "chmod", os.Chmod(d, 0o755))
			}
			stateRoot := filepath.Join(root, "state")
			mustDo(t, "mkdir", os.Mkdir(stateRoot, rootMode))
			mustDo(t, "chmod", os.Chmod(stateRoot, rootMode))
			app := filepath.Join(root, "app")
			writeFiles(t, app, map[string]string{"data.txt": "the app's"})
			for _, p := range []string{app, filepath.Join(app, "data.txt")} {
				mustDo(t, "chown", os.Chown(p, uid, gid))
			}
			var logged strings.Builder
			s, err := Open(filepath.Join(stateRoot, "app"), app, Options{Mode: Symlink, Log: zerolog.New(&logged)})
			mustDo(t, "Open", err)
			install(t, s, "v1", map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util"})
			install(t, s, "v2", map[string]string{"main.py": "v2 main", "lib/util.py": "v2 util"})
			rel := filepath.Join(s.releasesDir(), "v2")
			for _, p := range []string{rel, filepath.Join(rel, "lib"), filepath.Join(rel, "main.py"), filepath.Join(rel, "lib", "util.py")} {
				if u, g, _ := stat(t, p); u != uid || g != gid {
					t.Errorf("%s is owned by %d:%d, want the app dir's owner %d:%d", p, u, g, uid, gid)
				}
			}
			cat := exec.Command("cat", filepath.Join(app, "lib", "util.py"))
			cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
			out, err := cat.CombinedOutput()
			if rootMode == 0o711 && (err != nil || string(out) != "v2 util") {
				t.Errorf("as uid %d under a 0711 state root, cat lib/util.py = %q, %v; want v2's", uid, out, err)
			}
			if rootMode == 0o700 {
				if err == nil {
					t.Errorf("as uid %d under a 0700 state root, cat lib/util.py = %q, want EACCES", uid, out)
				}
				// Open warns (once per process and directory).
				s2, err := Open(filepath.Join(stateRoot, "app"), app, Options{Mode: Symlink, Log: zerolog.New(&logged)})
				mustDo(t, "Open", err)
				_ = s2
				if !strings.Contains(logged.String(), "cannot search "+stateRoot) {
					t.Errorf("Open under a 0700 state root logged %q, want a warning naming %s", logged.String(), stateRoot)
				}
			}
		})
	}
}
