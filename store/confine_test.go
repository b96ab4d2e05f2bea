package store

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// Nothing a release holds is ever written outside the app dir, whatever
// symlinks the app dir holds: a symlinked directory is refused, a symlinked
// file is replaced (the link moves to the backup), never written through.
func TestInstallConfined(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares the app dir; swap runs between staging and Install.
		setup, swap func(t *testing.T, app, elsewhere string)
		files       map[string]string
		wantErr     string // "" if the install must succeed
	}{
		{
			name: "symlinked dir before staging",
			setup: func(t *testing.T, app, elsewhere string) {
				mustDo(t, "symlink", os.Symlink(elsewhere, filepath.Join(app, "lib")))
			},
			files:   map[string]string{"main.py": "v1", "lib/x.py": "evil"},
			wantErr: "lib/x.py",
		},
		{
			name: "dir swapped for a symlink after staging",
			setup: func(t *testing.T, app, elsewhere string) {
				mustDo(t, "mkdir", os.Mkdir(filepath.Join(app, "lib"), 0o755))
			},
			swap: func(t *testing.T, app, elsewhere string) {
				mustDo(t, "rmdir", os.Remove(filepath.Join(app, "lib")))
				mustDo(t, "symlink", os.Symlink(elsewhere, filepath.Join(app, "lib")))
			},
			files:   map[string]string{"main.py": "v1", "lib/x.py": "evil"},
			wantErr: "lib/x.py",
		},
		{
			name: "deeper symlinked dir swapped in after staging",
			setup: func(t *testing.T, app, elsewhere string) {
				mustDo(t, "mkdir", os.MkdirAll(filepath.Join(app, "lib", "sub"), 0o755))
			},
			swap: func(t *testing.T, app, elsewhere string) {
				mustDo(t, "rename", os.Rename(filepath.Join(app, "lib"), filepath.Join(app, "lib.old")))
				mustDo(t, "symlink", os.Symlink("../"+filepath.Base(elsewhere), filepath.Join(app, "lib")))
			},
			files:   map[string]string{"lib/sub/x.py": "evil"},
			wantErr: "lib/sub/x.py",
		},
		{
			name: "symlinked file",
			setup: func(t *testing.T, app, elsewhere string) {
				mustDo(t, "symlink", os.Symlink(filepath.Join(elsewhere, "target"), filepath.Join(app, "main.py")))
			},
			files: map[string]string{"main.py": "v1 main"},
		},
		{
			name: "file swapped for a symlink after staging",
			setup: func(t *testing.T, app, elsewhere string) {
				writeFiles(t, app, map[string]string{"main.py": "pre"})
			},
			swap: func(t *testing.T, app, elsewhere string) {
				mustDo(t, "remove", os.Remove(filepath.Join(app, "main.py")))
				mustDo(t, "symlink", os.Symlink(filepath.Join(elsewhere, "target"), filepath.Join(app, "main.py")))
			},
			files: map[string]string{"main.py": "v1 main"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, InPlace, 2)
			// elsewhere is beside the app dir, so a relative link reaches it too.
			elsewhere := filepath.Join(filepath.Dir(s.AppDir()), "elsewhere")
			mustDo(t, "mkdir", os.Mkdir(elsewhere, 0o755))
			writeFiles(t, elsewhere, map[string]string{"target": "not the app's"})
			tt.setup(t, s.AppDir(), elsewhere)
			appBefore := tree(t, s.AppDir())

			st, err := s.Stage("v1")
			mustDo(t, "Stage", err)
			for _, p := range sortedKeys(tt.files) {
				_, err = st.Write(p, strings.NewReader(tt.files[p]), int64(len(tt.files[p])), 100)
				if err != nil {
					break
				}
			}
			if tt.swap != nil {
				tt.swap(t, s.AppDir(), elsewhere)
				appBefore = tree(t, s.AppDir())
			}
			if err == nil {
				_, err = s.Install(st)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Install(%v) = %v, want nil", sortedKeys(tt.files), err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), s.AppDir())):
				t.Fatalf("Install(%v) = %v, want an error naming %s in %s", sortedKeys(tt.files), err, tt.wantErr, s.AppDir())
			}
			if tt.wantErr != "" {
				t.Logf("Install refused: %v", err)
			}

			if d := diffTrees(tree(t, elsewhere), map[string]string{"target": "not the app's"}); d != "" {
				t.Errorf("outside the app dir:%s", d)
			}
			if tt.wantErr != "" {
				if d := diffTrees(tree(t, s.AppDir()), appBefore); d != "" {
					t.Errorf("a refused install changed the app dir:%s", d)
				}
				if _, err := os.Stat(s.journalPath()); err == nil {
					t.Errorf("a refused install left a journal")
				}
				return
			}
			fi, err := os.Lstat(filepath.Join(s.AppDir(), "main.py"))
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("after Install, main.py: %v, %v; want a regular file", fi, err)
			}
			if d := diffTrees(files(t, s.AppDir()), tt.files); d != "" {
				t.Errorf("after Install, app dir:%s", d)
			}
			// The link itself was kept for rollback.
			link, err := os.Readlink(filepath.Join(s.releasesDir(), "_before-v1", "main.py"))
			if err != nil || link != filepath.Join(elsewhere, "target") {
				t.Errorf("releases/_before-v1/main.py: Readlink = %q, %v; want the replaced link", link, err)
			}
		})
	}
}

// The switch itself goes through os.Root: even a symlink swapped in after
// Install's own check (a race) cannot lead it out of the app dir.
func TestSwitchConfined(t *testing.T) {
	s := newStore(t, InPlace, 2)
	elsewhere := filepath.Join(filepath.Dir(s.AppDir()), "elsewhere")
	mustDo(t, "mkdir", os.Mkdir(elsewhere, 0o755))
	sw := prepare(t, s, stageFiles(t, s, "v1", map[string]string{"lib/x.py": "evil"}))
	defer sw.close()
	mustDo(t, "symlink", os.Symlink(elsewhere, filepath.Join(s.AppDir(), "lib")))
	if err := sw.forward(); err == nil {
		t.Errorf("forward(lib/x.py) through a symlink out of the app dir = nil, want an error")
	}
	if got := tree(t, elsewhere); len(got) != 0 {
		t.Errorf("outside the app dir: %v, want nothing", got)
	}
}

func stat(t *testing.T, p string) (uid, gid uint32, mode fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode()
}

// A new file takes the owner, group and permission bits of the file it
// replaces, else the app dir's owner and 0644; never setuid or setgid.
func TestInstallOwnerAndMode(t *testing.T) {
	testenv.Require(t, "root (to chown)", os.Geteuid() == 0)
	tests := []struct {
		name     string
		uid, gid int         // of the file replaced; -1: no file there
		mode     fs.FileMode // of the file replaced
		wantUID  uint32
		wantGID  uint32
		wantMode fs.FileMode
	}{
		{"replaces 1234:5678 0750", 1234, 5678, 0o750, 1234, 5678, 0o750},
		{"replaces setuid root", 0, 0, 0o755 | fs.ModeSetuid, 0, 0, 0o755},
		{"replaces setgid", 1234, 5678, 0o755 | fs.ModeSetgid, 1234, 5678, 0o755},
		{"replaces sticky 0600", 1234, 5678, 0o600 | fs.ModeSticky, 1234, 5678, 0o600},
		{"new file", -1, -1, 0, 4321, 8765, 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, InPlace, 2)
			app := s.AppDir()
			mustDo(t, "chown app dir", os.Chown(app, 4321, 8765))
			target := filepath.Join(app, "lib", "run.sh")
			mustDo(t, "mkdir", os.Mkdir(filepath.Join(app, "lib"), 0o755))
			if tt.uid >= 0 {
				writeFiles(t, app, map[string]string{"lib/run.sh": "old"})
				mustDo(t, "chown", os.Chown(target, tt.uid, tt.gid))
				mustDo(t, "chmod", os.Chmod(target, tt.mode))
				if _, _, m := stat(t, target); m != tt.mode {
					t.Fatalf("setup: mode %v, want %v", m, tt.mode)
				}
			} else {
				mustDo(t, "rmdir", os.Remove(filepath.Join(app, "lib")))
			}
			state := install(t, s, "v1", map[string]string{"lib/run.sh": "#!/bin/sh\n"})
			uid, gid, mode := stat(t, target)
			if uid != tt.wantUID || gid != tt.wantGID || mode != tt.wantMode {
				t.Errorf("Install(lib/run.sh) over %d:%d %v = %d:%d %v, want %d:%d %v",
					tt.uid, tt.gid, tt.mode, uid, gid, mode, tt.wantUID, tt.wantGID, tt.wantMode)
			}
			if state.Files[0].Mode != tt.wantMode {
				t.Errorf("State().Files[0].Mode = %v, want %v", state.Files[0].Mode, tt.wantMode)
			}
			// A directory the install creates belongs to the app dir's owner.
			if uid, gid, _ := stat(t, filepath.Join(app, "lib")); tt.uid < 0 && (uid != 4321 || gid != 8765) {
				t.Errorf("new directory lib: owner %d:%d, want the app dir's 4321:8765", uid, gid)
			}
		})
	}
}
