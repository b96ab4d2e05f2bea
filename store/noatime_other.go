//go:build !linux

package store

import "os"

// readQuietly is os.ReadFile where O_NOATIME does not exist.
func readQuietly(path string) ([]byte, error) { return os.ReadFile(path) }
