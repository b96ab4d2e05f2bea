//go:build !linux

package store

import "errors"

// exchange needs Linux's renameat2; elsewhere a real app dir cannot be
// swapped for a symlink atomically.
func exchange(a, b string) error { return errors.ErrUnsupported }
