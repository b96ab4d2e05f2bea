package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"syscall"
)

// fileMeta is the owner and mode a new file gets in the app.
type fileMeta struct {
	uid, gid int
	mode     fs.FileMode
}

// targetMeta returns what the file at rel (relative to the app dir) will
// get: the owner and permission bits of the file it replaces, else the app
// dir's owner and 0644. setuid, setgid and sticky bits are never carried.
// The lookup goes through os.Root, so a symlink that leaves the app dir is
// an error here, long before anything is switched. Where the release
// changes shape (a directory where the file goes, a file where its
// directory goes) the defaults apply: the switch's plan decides whether
// the shape may change.
func (s *Store) targetMeta(rel string) (fileMeta, error) {
	m := fileMeta{uid: os.Geteuid(), gid: os.Getegid(), mode: 0o644}
	dirInfo, err := os.Stat(s.appDir)
	if errors.Is(err, fs.ErrNotExist) {
		dirInfo, err = os.Stat(path.Dir(s.appDir))
	}
	if err != nil {
		return m, err
	}
	m.uid, m.gid = owner(dirInfo)
	root, err := os.OpenRoot(s.appDir)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	defer root.Close()
	fi, err := root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return m, nil
	case err != nil:
		return m, fmt.Errorf("%s in app dir %s: %w", rel, s.appDir, err)
	case fi.Mode().IsRegular():
		m.uid, m.gid = owner(fi)
		m.mode = fi.Mode().Perm()
	}
	return m, nil
}

func owner(fi fs.FileInfo) (int, int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return os.Geteuid(), os.Getegid()
}

// hashReader is the hex SHA-256 of what r holds.
func hashReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
