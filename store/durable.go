package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data so that a power cut at any instant
// leaves either the old or the new content, never a mix or an empty file:
// temp file in the same directory, write, fsync, close, rename, fsync the
// directory (the rename is only durable once its directory is).
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, true)
}

// writeFile is WriteFile, with the fsyncs only when durable: a reader sees
// the old or the new content either way, under a temp name of its own so
// that two writers never share one.
func writeFile(path string, data []byte, perm os.FileMode, durable bool) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once the rename succeeded
	if durable {
		crashPoint("write " + base)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if durable {
		crashPoint("fsync " + base)
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if durable {
		crashPoint("rename " + base)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	return syncDir(dir)
}

// syncDir makes the renames and creations in dir durable.
func syncDir(dir string) error {
	crashPoint("fsync dir " + filepath.Base(dir))
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// mkdirAll is os.MkdirAll whose creations are durable: each directory it
// creates is fsynced in its parent, as a renamed file is. Otherwise a power
// cut could drop the entry of a new directory, and with it files that were
// fsynced in it since (a staged release's lib/, a release's backup).
func mkdirAll(dir string, perm os.FileMode) error {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return err // nil if it exists; a file there fails later, as with os.MkdirAll
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(parent, perm); err != nil {
			return err
		}
	}
	crashPoint("mkdir " + filepath.Base(dir))
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return syncDir(parent)
}
