package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newStore opens a store whose state dir and app dir are fresh temp dirs
// on one filesystem. In symlink mode the app dir does not exist yet.
func newStore(t *testing.T, mode Mode, keep int) *Store {
	t.Helper()
	root := t.TempDir()
	s, err := Open(filepath.Join(root, "state", "app"), filepath.Join(root, "app"), Options{Mode: mode, KeepReleases: keep})
	if err != nil {
		t.Fatalf("Open = %v, want nil", err)
	}
	return s
}

// stageFiles stages files (path -> content) as release version.
func stageFiles(t *testing.T, s *Store, version string, files map[string]string) *Stage {
	t.Helper()
	st, err := s.Stage(version)
	if err != nil {
		t.Fatalf("Stage(%q) = %v, want nil", version, err)
	}
	for _, p := range sortedKeys(files) {
		body := files[p]
		if _, err := st.Write(p, strings.NewReader(body), int64(len(body)), 1<<20); err != nil {
			t.Fatalf("Stage(%q).Write(%q) = %v, want nil", version, p, err)
		}
	}
	return st
}

// install stages and installs files as release version.
func install(t *testing.T, s *Store, version string, files map[string]string) State {
	t.Helper()
	st, err := s.Install(stageFiles(t, s, version, files))
	if err != nil {
		t.Fatalf("Install(%q) = %v, want nil", version, err)
	}
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// tree describes everything under dir (following dir itself if it is a
// symlink): "dir" for a directory, "-> target" for a symlink, else the
// file's content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatalf("tree(%s): %v", dir, err)
	}
	out := map[string]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.IsDir():
			out[rel] = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "-> " + target
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("tree(%s): %v", dir, err)
	}
	return out
}

// files is tree without the directories.
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := tree(t, dir)
	for k, v := range out {
		if v == "dir" {
			delete(out, k)
		}
	}
	return out
}

func diffTrees(got, want map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(want) {
		if g, ok := got[k]; !ok {
			fmt.Fprintf(&b, "\n  missing %s (want %q)", k, want[k])
		} else if g != want[k] {
			fmt.Fprintf(&b, "\n  %s = %q, want %q", k, g, want[k])
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "\n  unexpected %s = %q", k, got[k])
		}
	}
	return b.String()
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadStateMissing(t *testing.T) {
	st, err := ReadState(t.TempDir())
	if err != nil {
		t.Fatalf("ReadState(empty dir) = %v, want nil", err)
	}
	if st.Version != "" || st.Schema != 0 || len(st.Files) != 0 {
		t.Errorf("ReadState(empty dir) = %+v, want the zero State (not installed)", st)
	}
}

func TestReadStateErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"torn", `{"schema":1,"vers`, "state.json"},
		{"newer schema", `{"schema":99,"version":"v1"}`, "schema 99 is newer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"state.json": tt.body})
			_, err := ReadState(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ReadState(%s) = %v, want an error containing %q", tt.body, err, tt.want)
			}
		})
	}
}

func TestWriteFileLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for i, body := range []string{"first", "second, longer", "3"} {
		if err := WriteFile(path, []byte(body), 0o640); err != nil {
			t.Fatalf("WriteFile #%d = %v, want nil", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != body {
			t.Fatalf("after WriteFile #%d: ReadFile = %q, %v, want %q", i, got, err, body)
		}
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("after WriteFile #%d: mode %v, want 0640", i, fi.Mode().Perm())
		}
		if got := tree(t, dir); len(got) != 1 {
			t.Errorf("after WriteFile #%d: dir holds %v, want state.json only", i, sortedKeys(got))
		}
	}
	// A failed write leaves nothing behind either.
	if err := WriteFile(filepath.Join(dir, "sub", "missing", "x"), []byte("x"), 0o644); err == nil {
		t.Errorf("WriteFile into a missing dir = nil, want an error")
	}
	if got := tree(t, dir); len(got) != 1 {
		t.Errorf("after a failed WriteFile: dir holds %v, want state.json only", sortedKeys(got))
	}
}

func TestLock(t *testing.T) {
	s := newStore(t, InPlace, 2)
	ctx := context.Background()
	l, err := s.Lock(ctx, 0)
	if err != nil {
		t.Fatalf("Lock = %v, want nil", err)
	}
	// flock belongs to the open file, so a second Lock conflicts even in
	// this process, exactly as a second ota-agent would.
	_, err = s.Lock(ctx, 0)
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("second Lock = %v, want a *LockedError", err)
	}
	if le.PID != os.Getpid() || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("second Lock = %v (PID %d), want it to name PID %d", err, le.PID, os.Getpid())
	}
	_, err = s.Lock(ctx, 150*time.Millisecond)
	if !errors.As(err, &le) {
		t.Errorf("Lock with a short wait = %v, want a *LockedError", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Lock(cctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with a cancelled context = %v, want context.Canceled", err)
	}

	time.AfterFunc(200*time.Millisecond, func() { l.Unlock() })
	start := time.Now()
	l2, err := s.Lock(ctx, 10*time.Second)
	if err != nil {
		t.Fatalf("Lock waiting for a release = %v, want nil", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("Lock waiting for a release returned after %v, before the release", d)
	}
	l2.Unlock()
}

func TestOpen(t *testing.T) {
	root := t.TempDir()
	s, err := Open(filepath.Join(root, "state", "a"), filepath.Join(root, "app")+"/", Options{})
	if err != nil {
		t.Fatalf("Open = %v, want nil", err)
	}
	if fi, err := os.Stat(s.Dir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, %v; want a 0700 directory", fi, err)
	}
	if fi, err := os.Stat(s.AppDir()); err != nil || !fi.IsDir() {
		t.Errorf("in-place Open did not create the app dir: %v", err)
	}
	if s.AppDir() != filepath.Join(root, "app") {
		t.Errorf("AppDir() = %q, want it cleaned", s.AppDir())
	}
	if _, err := Open(filepath.Join(root, "state", "b"), filepath.Join(root, "missing", "app"), Options{Mode: Symlink}); err == nil {
		t.Errorf("Open(symlink, parent of app dir missing) = nil, want an error")
	}
}

func TestMkdirAll(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "a", "b", "c")
	for i := range 2 { // the second call finds it all there
		if err := mkdirAll(deep, 0o755); err != nil {
			t.Fatalf("mkdirAll(%s) #%d = %v, want nil", deep, i, err)
		}
		if fi, err := os.Stat(deep); err != nil || !fi.IsDir() {
			t.Fatalf("after mkdirAll #%d: Stat = %v, %v; want a directory", i, fi, err)
		}
	}
	writeFiles(t, dir, map[string]string{"file": "x"})
	if err := mkdirAll(filepath.Join(dir, "file", "sub"), 0o755); err == nil {
		t.Errorf("mkdirAll under a file = nil, want an error")
	}
}
