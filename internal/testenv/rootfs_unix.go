//go:build unix

package testenv

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive flock on name (created if missing), waiting
// for it as long as another process holds it, and returns its release. The
// kernel releases it too when the process dies, so a killed build never
// leaves the cache locked.
func lockFile(name string) (unlock func(), err error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "flock", Path: name, Err: err}
	}
	return func() { f.Close() }, nil // closing the last descriptor unlocks
}
