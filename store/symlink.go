package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// In symlink mode app_dir is a symlink to releases/<version>/ in the state
// dir; a switch renames a new symlink over it in app_dir's parent, so that
// parent must be writable (under ProtectSystem=strict: ReadWritePaths= of
// the parent, not of app_dir). The release tree moves from staging to
// releases/ inside the state dir. A real directory at app_dir is swapped for
// the symlink atomically and kept as a release: moved into releases/ when
// on one mount, else copied there and removed.

func (s *Store) tmpLink() string { return s.appDir + ".ota-new" }

// checkSymlinkParent fails with ErrLayout unless app_dir's parent is
// writable, where the symlink is switched.
func (s *Store) checkSymlinkParent() error {
	parent := filepath.Dir(s.appDir)
	d, err := os.Open(parent)
	if err != nil {
		return fmt.Errorf("app dir's parent: %w", err)
	}
	defer d.Close()
	if err := writable(d); err != nil {
		err = s.layoutError(parent, err)
		return fmt.Errorf("%w (symlink mode replaces the symlink %s in %s)", err, s.appDir, parent)
	}
	if imm, app, _, err := entryFlags(d, "."); err == nil && (imm || app) {
		return fmt.Errorf("%w: %s is immutable or append-only (chattr); symlink mode replaces the symlink %s in it", ErrLayout, parent, s.appDir)
	}
	return nil
}

// installSymlink moves the staged tree to releases/<version>/ and points
// app_dir at it with one rename. A real directory at app_dir is swapped
// with the new symlink atomically (RENAME_EXCHANGE) and kept as a release.
func (s *Store) installSymlink(j *journal) error {
	if err := s.checkSymlinkParent(); err != nil {
		return err
	}
	rel := filepath.Join(s.releasesDir(), j.To)
	if target, _ := os.Readlink(s.appDir); target == rel {
		return s.writeJournal(j) // already live (state was lost): just record it
	}
	if err := mkdirAll(s.releasesDir(), 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(rel); err != nil {
		return err
	}
	// releases/<backup> receives a real app dir that the switch displaces.
	// When app_dir is already a symlink nothing is displaced, and
	// releases/<backup> is the live release: it must stay.
	if fi, err := os.Lstat(s.appDir); err == nil && fi.IsDir() {
		if err := os.RemoveAll(filepath.Join(s.releasesDir(), j.Backup)); err != nil {
			return err
		}
	}
	if err := syncDir(s.releasesDir()); err != nil {
		return err
	}
	staged := filepath.Join(s.stagingDir(), j.To)
	if err := s.ownTree(staged); err != nil {
		return err
	}
	// The index must not become part of the release the app sees. Losing
	// it now only costs a re-download if the switch is undone. The removal
	// is made durable before the move: the move's fsyncs (releases/,
	// staging/) do not cover the moved directory's own entries.
	crashPoint("remove index")
	if err := os.Remove(filepath.Join(staged, indexName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := syncDir(staged); err != nil {
		return err
	}
	// The whole tree moves with one rename; its files were fsynced in staging.
	crashPoint("move staged release")
	if err := os.Rename(staged, rel); err != nil {
		return err
	}
	if err := syncDir(s.releasesDir()); err != nil {
		return err
	}
	if err := syncDir(s.stagingDir()); err != nil {
		return err
	}
	if err := s.writeJournal(j); err != nil {
		return err
	}
	return s.pointAt(j, rel)
}

// ownTree gives the staged release's directories the app dir's owner, as
// its files already have: the app may run as another user than the agent.
func (s *Store) ownTree(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid := os.Geteuid(), os.Getegid()
	if fi, err := os.Stat(s.appDir); err == nil {
		uid, gid = owner(fi)
	} else if fi, err := os.Stat(filepath.Dir(s.appDir)); err == nil {
		uid, gid = owner(fi)
	}
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
		return os.Chmod(p, 0o755)
	})
}

// pointAt makes app_dir a symlink to rel.
func (s *Store) pointAt(j *journal, rel string) error {
	tmp := s.tmpLink()
	parent := filepath.Dir(s.appDir)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	crashPoint("create symlink")
	if err := os.Symlink(rel, tmp); err != nil {
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	fi, err := os.Lstat(s.appDir)
	if err == nil && fi.IsDir() {
		crashPoint("exchange app dir")
		if err := exchange(tmp, s.appDir); err != nil {
			return fmt.Errorf("swap %s with a symlink: %w", s.appDir, err)
		}
		if err := syncDir(parent); err != nil {
			return err
		}
		return s.keepOldDir(j)
	}
	crashPoint("rename symlink")
	if err := os.Rename(tmp, s.appDir); err != nil {
		return err
	}
	return syncDir(parent)
}

// keepOldDir moves a real app dir that a switch displaced (now at the
// temp name) into releases/<backup>/: one rename on one mount, else a copy
// under a temp name, renamed into place once complete, then the removal
// of the original.
func (s *Store) keepOldDir(j *journal) error {
	dst := filepath.Join(s.releasesDir(), j.Backup)
	if _, err := os.Lstat(dst); err == nil {
		// A complete copy (only a finished one is renamed there).
		return s.removeOldDir()
	}
	crashPoint("keep old app dir")
	err := os.Rename(s.tmpLink(), dst)
	if errors.Is(err, syscall.EXDEV) {
		tmp := filepath.Join(s.releasesDir(), tmpName(j.Backup))
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		if err := copyTree(s.tmpLink(), tmp); err != nil {
			return fmt.Errorf("keep the old app dir: %w", err)
		}
		crashPoint("keep old app dir copy")
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
		if err := syncDir(s.releasesDir()); err != nil {
			return err
		}
		return s.removeOldDir()
	}
	if err != nil {
		return err
	}
	if err := syncDir(s.releasesDir()); err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.appDir))
}

func (s *Store) removeOldDir() error {
	crashPoint("remove old app dir")
	if err := os.RemoveAll(s.tmpLink()); err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.appDir))
}

// copyTree copies the tree at src to the new directory dst, durably: every
// file and directory is fsynced.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if e.IsDir() {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			if err := os.Mkdir(to, fi.Mode().Perm()); err != nil {
				return err
			}
			if os.Geteuid() == 0 {
				uid, gid := owner(fi)
				if err := os.Lchown(to, uid, gid); err != nil {
					return err
				}
			}
			return syncDir(filepath.Dir(to))
		}
		from, err := os.Open(filepath.Dir(p))
		if err != nil {
			return err
		}
		defer from.Close()
		into, err := os.Open(filepath.Dir(to))
		if err != nil {
			return err
		}
		defer into.Close()
		if err := copyEntry(from, e.Name(), into, e.Name()); err != nil {
			return err
		}
		return into.Sync()
	})
}

func (s *Store) recoverSymlink(j *journal) error {
	if fi, err := os.Lstat(s.tmpLink()); err == nil {
		if fi.IsDir() {
			if err := s.keepOldDir(j); err != nil {
				return err
			}
		} else if err := os.Remove(s.tmpLink()); err != nil {
			return err
		}
	}
	rel := filepath.Join(s.releasesDir(), j.To)
	if target, _ := os.Readlink(s.appDir); target == rel {
		s.log.Warn().Str("to", j.To).Msg("an interrupted switch is rolled forward")
		return s.finish(j)
	}
	s.log.Warn().Str("from", j.From).Str("to", j.To).Msg("an interrupted switch is rolled back")
	return s.dropJournal()
}

var warnedUnsearchable sync.Map

// warnUnsearchable warns once per process when the app dir's owner cannot
// reach its release through the state dir: an ancestor of releases/ that
// it may not search (x) makes the app fail with EACCES on its own files.
func (s *Store) warnUnsearchable() {
	fi, err := os.Stat(s.appDir)
	if err != nil {
		fi, err = os.Stat(filepath.Dir(s.appDir))
	}
	if err != nil {
		return
	}
	uid, gid := owner(fi)
	if uid == 0 {
		return
	}
	for d := s.releasesDir(); ; d = filepath.Dir(d) {
		if di, err := os.Stat(d); err == nil && !searchable(di, uid, gid) {
			if _, loaded := warnedUnsearchable.LoadOrStore(d, true); !loaded {
				s.log.Warn().Str("dir", d).Int("uid", uid).Msgf(
					"symlink mode: user %d (the app dir's owner) cannot search %s (mode %v), so the app cannot read its release; chmod o+x %s, or StateDirectoryMode=0711 in the units",
					uid, d, di.Mode().Perm(), d)
			}
			return
		}
		if d == filepath.Dir(d) {
			return
		}
	}
}

func searchable(fi fs.FileInfo, uid, gid int) bool {
	u, g := owner(fi)
	perm := fi.Mode().Perm()
	switch {
	case u == uid:
		return perm&0o100 != 0
	case g == gid:
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}
