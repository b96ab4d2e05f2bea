//go:build !faultinject

package store

// crashPoint marks a durable step (write, fsync, rename, journal append).
// Builds with -tags faultinject crash there on demand; see fault_inject.go.
func crashPoint(string) {}
