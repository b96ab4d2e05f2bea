//go:build !linux

package store

// Volatile is only known on Linux; elsewhere nothing is said to be volatile.
func Volatile(dir string) (bool, string, error) { return false, "", nil }
