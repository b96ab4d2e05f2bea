package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// localFiles is what the app already holds, by content: the installed
// release's inventory (state.json) and the kept releases' directories.
type localFiles struct {
	byHash   map[string][]string // SHA-256 -> paths in the app dir
	releases []string            // releases/<v>/ directories, newest first
}

func (st *Stage) localIndex() *localFiles {
	if st.local != nil {
		return st.local
	}
	l := &localFiles{byHash: map[string][]string{}}
	// An unreadable state only means nothing is reused.
	if cur, err := ReadState(st.s.dir); err == nil {
		for _, f := range cur.Files {
			l.byHash[f.SHA256] = append(l.byHash[f.SHA256], f.Path)
		}
		for _, r := range cur.Releases {
			l.releases = append(l.releases, filepath.Join(st.s.releasesDir(), r))
		}
	}
	st.local = l
	return l
}

// Reuse stages the file at path from what the app already holds, so it
// need not be downloaded: a file of the installed release with w's SHA-256
// (at any path; its inventory says which), else the file at path in a kept
// release. A candidate is linked into staging when it already has w's mode
// and the owner the file will get in the app, and copied otherwise (or
// when a link cannot be made: another mount); either way the staged file
// is then hashed, and kept only with w's size and SHA-256 (an app may have
// changed its own file since). Every path is opened through os.Root. It
// reports whether the file was staged; false with a nil error means it
// must be downloaded.
func (st *Stage) Reuse(path string, w Want) (bool, error) {
	l := st.localIndex()
	type candidate struct{ dir, rel string }
	var cands []candidate
	for _, p := range l.byHash[w.SHA256] {
		cands = append(cands, candidate{st.s.appDir, p})
	}
	for _, r := range l.releases {
		cands = append(cands, candidate{r, path})
	}
	if len(cands) == 0 {
		return false, nil
	}
	meta, err := st.s.targetMeta(path)
	if err != nil {
		return false, err
	}
	meta.mode = w.Mode
	dst := filepath.Join(st.dir, filepath.FromSlash(path))
	if err := mkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, err
	}
	delete(st.files, path)
	for _, c := range cands {
		ok, err := st.stageLocal(c.dir, c.rel, dst, w, meta)
		if err != nil {
			return false, err
		}
		if ok {
			file := File{Path: path, Size: w.Size, SHA256: w.SHA256, Mode: w.Mode}
			return true, st.record(file, dst)
		}
	}
	return false, nil
}

// stageLocal makes dst hold dir/rel (linked or copied, see Reuse) and
// reports whether it has w's size and hash; if not, dst is removed. Only
// a failure to write to staging is an error: a candidate that is gone,
// unreadable or different is just not used.
func (st *Stage) stageLocal(dir, rel, dst string, w Want, meta fileMeta) (bool, error) {
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, nil
	}
	defer root.Close()
	src, err := root.Open(rel)
	if err != nil {
		return false, nil
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != w.Size {
		return false, nil
	}
	uid, gid := owner(fi)
	sameMeta := fi.Mode().Perm() == meta.mode && (os.Geteuid() != 0 || uid == meta.uid && gid == meta.gid)
	crashPoint("reuse " + rel)
	linked := false
	if sameMeta {
		// The inode we hold open, not whatever the path names by now.
		proc := "/proc/self/fd/" + strconv.Itoa(int(src.Fd()))
		linked = unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW) == nil
	}
	var sum string
	if linked {
		f, err := os.Open(dst)
		if err != nil {
			return false, err
		}
		sum, err = hashReader(f)
		f.Close()
		if err != nil {
			return false, err
		}
	} else {
		if sum, err = copyLocal(src, dst, w.Size, meta, st.s); err != nil {
			return false, err
		}
	}
	if sum != w.SHA256 {
		return false, os.Remove(dst)
	}
	return true, nil
}

// copyLocal copies src to a new dst with meta's mode and owner, fsynced,
// and returns the SHA-256 of what it copied.
func copyLocal(src io.Reader, dst string, size int64, meta fileMeta, s *Store) (string, error) {
	if err := s.CheckFree(size); err != nil {
		return "", err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(dst)
		return "", err
	}
	h := sha256.New()
	if _, err := copyHashing(&spaceGuard{s: s, w: f}, h, io.LimitReader(src, size+1)); err != nil {
		return fail(fmt.Errorf("copy to %s: %w", dst, err))
	}
	if err := f.Chmod(meta.mode); err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		if err := f.Chown(meta.uid, meta.gid); err != nil {
			return fail(err)
		}
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("fsync %s: %w", dst, err))
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
