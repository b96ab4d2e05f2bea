package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// A Drift is a file of the installed release that is not as state.json's
// inventory says: Problem is "missing", "not a regular file", "size N,
// want M", "mode 0755, want 0644" or "content differs (SHA-256 ...)".
type Drift struct {
	Path    string `json:"path"`
	Problem string `json:"problem"`
}

// Verify compares the files of appDir with the inventory of st, read
// through an os.Root of appDir (a symlink inside it is never followed). It
// only reads. The error is for appDir itself; a file that cannot be read
// is a Drift.
func Verify(appDir string, st State) ([]Drift, error) {
	root, err := os.OpenRoot(appDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var drift []Drift
	for _, f := range st.Files {
		if p := verifyFile(root, f); p != "" {
			drift = append(drift, Drift{Path: f.Path, Problem: p})
		}
	}
	return drift, nil
}

func verifyFile(root *os.Root, f File) string {
	fi, err := root.Lstat(f.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "missing"
	case err != nil:
		return err.Error()
	case !fi.Mode().IsRegular():
		return "not a regular file (" + fi.Mode().Type().String() + ")"
	case fi.Size() != f.Size:
		return fmt.Sprintf("size %d, want %d", fi.Size(), f.Size)
	case f.Mode != 0 && fi.Mode().Perm() != f.Mode.Perm():
		return fmt.Sprintf("mode %04o, want %04o", fi.Mode().Perm(), f.Mode.Perm())
	}
	r, err := root.Open(f.Path)
	if err != nil {
		return err.Error()
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return err.Error()
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 {
		return fmt.Sprintf("content differs (SHA-256 %.12s..., want %.12s...)", sum, f.SHA256)
	}
	return ""
}
