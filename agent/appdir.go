package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ota-agent/ota-agent/store"
)

// systemDirs are directories no app_dir may be, through any alias: an
// update would write release files among the system's own (in-place) or
// replace the directory with a symlink (symlink mode).
var systemDirs = []string{"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc",
	"/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/local", "/var", "/var/lib"}

// resolvePath returns p with the symlinks in it resolved, for a path that
// may not exist yet: its deepest existing ancestor is resolved and the rest
// appended. With keepLast the last component itself is not followed (a
// symlink-mode app_dir is a link the agent owns).
func resolvePath(p string, keepLast bool) string {
	p = filepath.Clean(p)
	if keepLast {
		return filepath.Join(resolvePath(filepath.Dir(p), false), filepath.Base(p))
	}
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// fileID is a directory's device and inode, the same through every alias
// (symlink or bind mount); ok is false if it does not exist.
type fileID struct{ dev, ino uint64 }

func idOf(p string) (fileID, bool) {
	fi, err := os.Stat(p)
	if err != nil {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}, true
}

// appDirPath is where the app's files really are, for comparisons.
func (a *App) appDirPath() string {
	return resolvePath(a.AppDir, a.Install == store.Symlink)
}

// checkSystemDir refuses an app_dir that is a system directory, by path or
// (in-place, where the directory is written into) by device and inode.
func (a *App) checkSystemDir() error {
	real := a.appDirPath()
	id, exists := idOf(real)
	if a.Install == store.Symlink {
		exists = false // the link is replaced, not written through
	}
	for _, d := range systemDirs {
		same := real == d
		if !same && exists {
			sid, ok := idOf(d)
			same = ok && sid == id
		}
		if same {
			how := ""
			if filepath.Clean(a.AppDir) != d {
				how = " (through " + filepath.Clean(a.AppDir) + ")"
			}
			return &ConfigError{App: a.Name, Key: "app_dir", Msg: fmt.Sprintf(
				"is %s%s, a system directory: give the app a directory of its own, such as /opt/%s", d, how, a.Name)}
		}
	}
	return nil
}
