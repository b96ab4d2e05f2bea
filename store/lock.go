package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockedError is returned when another process holds the app's lock.
type LockedError struct {
	Path string
	PID  int // 0 if the holder's PID could not be read
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s is held by process %d (another update is running; use --wait to wait for it)", e.Path, e.PID)
	}
	return fmt.Sprintf("%s is held by another process (use --wait to wait for it)", e.Path)
}

// Lock is a held per-app lock; Unlock releases it.
type Lock struct{ f *os.File }

// Lock takes the app's exclusive lock (flock on <dir>/lock, released by the
// kernel if the process dies). With wait 0 it fails at once with a
// *LockedError naming the holder's PID; otherwise it retries until wait has
// passed or ctx ends.
func (s *Store) Lock(ctx context.Context, wait time.Duration) (*Lock, error) {
	path := filepath.Join(s.dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, &os.PathError{Op: "flock", Path: path, Err: err}
		}
		if !time.Now().Before(deadline) {
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
			f.Close()
			return nil, &LockedError{Path: path, PID: pid}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The PID is for the message of a second process only: no fsync needed.
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Lock{f: f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	l.f.Truncate(0)
	return l.f.Close()
}
