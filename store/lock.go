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
// passed or ctx ends. Taking it writes nothing to the disk, so a routine
// check costs the SD card nothing: the holder's PID is read from
// /proc/locks when needed.
func (s *Store) Lock(ctx context.Context, wait time.Duration) (*Lock, error) {
	path := filepath.Join(s.dir, "lock")
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, &os.PathError{Op: "flock", Path: path, Err: err}
		}
		if !time.Now().Before(deadline) {
			pid := lockHolder(f)
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
}

// lockHolder returns the PID that holds a flock on f's file, from
// /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"), or 0.
func lockHolder(f *os.File) int {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return 0
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 6 && fields[1] == "FLOCK" && fields[5] == id {
			pid, _ := strconv.Atoi(fields[4])
			return pid
		}
	}
	return 0
}

// Unlock releases the lock.
func (l *Lock) Unlock() error { return l.f.Close() }
