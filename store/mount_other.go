//go:build !linux

package store

import (
	"errors"
	"os"
)

// entryFlags needs Linux's statx; elsewhere nothing is known to be in the way.
func entryFlags(dir *os.File, name string) (immutable, appendOnly, mountPoint bool, err error) {
	return false, false, false, nil
}

// writable is not checked ahead outside Linux; the switch finds out.
func writable(d *os.File) error { return nil }

// sameMount is not known outside Linux: files are linked where they can be.
func sameMount(a, b *os.File) bool { return true }

func mountOf(path string) (string, bool, error) { return "", false, errors.ErrUnsupported }
