package store

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"golang.org/x/sys/unix"
)

// smallFS mounts an 8 MiB tmpfs, unmounted when the test ends.
func smallFS(t *testing.T) string {
	t.Helper()
	testenv.Require(t, "root (to mount a tmpfs)", os.Geteuid() == 0)
	dir := t.TempDir()
	err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8m")
	testenv.Require(t, "mount -t tmpfs", err == nil)
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	mustDo(t, "statfs", unix.Statfs(dir, &st))
	return int64(st.Bavail) * int64(st.Bsize)
}

func TestNoSpace(t *testing.T) {
	fsDir := smallFS(t)
	s, err := Open(filepath.Join(fsDir, "state", "app"), filepath.Join(fsDir, "app"), Options{})
	if err != nil {
		t.Fatalf("Open on a tmpfs = %v, want nil", err)
	}

	err = s.CheckFree(40 << 20)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("CheckFree(40 MiB) on 8 MiB = %v, want %v", err, ErrNoSpace)
	}
	if re := regexp.MustCompile(`needs 40\.0 MiB .*\b[78]\.\d MiB free`); !re.MatchString(err.Error()) {
		t.Errorf("CheckFree(40 MiB) = %q, want it to match %q", err, re)
	}
	if !strings.Contains(err.Error(), s.Dir()) {
		t.Errorf("CheckFree(40 MiB) = %q, want it to name %s", err, s.Dir())
	}
	if err := s.CheckFree(1 << 20); err != nil {
		t.Errorf("CheckFree(1 MiB) on 8 MiB = %v, want nil", err)
	}

	free := freeBytes(t, fsDir)
	big := int64(16 << 20)
	tests := []struct {
		name string
		want int64 // announced size
		stop string
	}{
		{"announced", big, "needs 16.0 MiB"},
		// Stopped with the margin left, not by ENOSPC.
		{"size unknown", -1, "stopped after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := s.Stage("v1")
			mustDo(t, "Stage", err)
			defer st.Close()
			body := &freeWatcher{t: t, dir: fsDir, r: io.LimitReader(zeros{}, big), min: free}
			_, err = st.Write("lib/big.bin", body, tt.want, 1<<30)
			if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), tt.stop) {
				t.Fatalf("Write(16 MiB, announced %d) on 8 MiB = %v, want %v (%s)", tt.want, err, ErrNoSpace, tt.stop)
			}
			t.Logf("Write refused: %v; least free space seen: %d KiB", err, body.min>>10)
			if body.min < minFree {
				t.Errorf("free space fell to %d bytes during the Write, want at least the margin %d", body.min, minFree)
			}
			if got := files(t, filepath.Join(s.stagingDir(), "v1")); len(got) != 1 {
				t.Errorf("after a Write that ran out of space, staging holds %v, want the index only", sortedKeys(got))
			}
			if _, ok := st.Have("lib/big.bin"); ok {
				t.Errorf("Have(lib/big.bin) = true after a failed Write")
			}
			// The partial download gave its space back.
			if now := freeBytes(t, fsDir); now < free-64<<10 {
				t.Errorf("free space after the failed Write: %d bytes, want about %d as before", now, free)
			}
		})
	}
}

// A body of unknown length that fits is written whole: the growing-file
// check leaves room for everything but the margin.
func TestWriteUnknownLengthFits(t *testing.T) {
	fsDir := smallFS(t)
	s, err := Open(filepath.Join(fsDir, "state", "app"), filepath.Join(fsDir, "app"), Options{})
	mustDo(t, "Open", err)
	st, err := s.Stage("v1")
	mustDo(t, "Stage", err)
	defer st.Close()
	size := freeBytes(t, fsDir) - minFree - 256<<10
	f, err := st.Write("big.bin", io.LimitReader(zeros{}, size), -1, 1<<30)
	if err != nil || f.Size != size {
		t.Fatalf("Write(%d bytes, size unknown) with %d free = %+v, %v; want it written", size, freeBytes(t, fsDir), f, err)
	}
}

// freeWatcher passes r on and notes the least free space on dir seen
// between the writes of the body.
type freeWatcher struct {
	t   *testing.T
	dir string
	r   io.Reader
	min int64
}

func (w *freeWatcher) Read(p []byte) (int, error) {
	w.min = min(w.min, freeBytes(w.t, w.dir))
	return w.r.Read(p)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
