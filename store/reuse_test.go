package store

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func want(body string, mode fs.FileMode) Want {
	return Want{Size: int64(len(body)), SHA256: sha(body), Mode: mode}
}

// A file a manifest describes is staged only with its size and hash, and
// gets the manifest's mode.
func TestWriteWant(t *testing.T) {
	s := newStore(t, InPlace, 2)
	st, err := s.Stage("v1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f, err := st.WriteWant("bin/run", strings.NewReader("#!/bin/sh\n"), -1, want("#!/bin/sh\n", 0o755), 1<<20)
	if err != nil || f.Mode != 0o755 {
		t.Fatalf("WriteWant(good) = %+v, %v", f, err)
	}
	fi, _ := os.Stat(filepath.Join(s.stagingDir(), "v1", "bin", "run"))
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("staged mode = %v, want 0755", fi.Mode().Perm())
	}
	if _, ok := st.HaveWant("bin/run", want("#!/bin/sh\n", 0o755)); !ok {
		t.Error("HaveWant(same) = false")
	}
	if _, ok := st.HaveWant("bin/run", want("#!/bin/sh\n", 0o700)); ok {
		t.Error("HaveWant(other mode) = true")
	}
	for name, tc := range map[string]struct {
		body      string
		announced int64
	}{
		"tampered":         {"#!/bin/XX\n", -1},
		"short":            {"#!/bin", -1},
		"long":             {"#!/bin/sh\nrm -rf /\n", -1},
		"announced longer": {"#!/bin/sh\n", 99},
	} {
		if _, err := st.WriteWant("main.py", strings.NewReader(tc.body), tc.announced, want("#!/bin/sh\n", 0o644), 1<<20); !errors.Is(err, ErrMismatch) {
			t.Errorf("WriteWant(%s) = %v, want ErrMismatch", name, err)
		}
		if _, err := os.Stat(filepath.Join(s.stagingDir(), "v1", "main.py")); err == nil {
			t.Errorf("WriteWant(%s) left the file in staging", name)
		}
	}
}

// Reuse stages a file the app already holds, from the installed release
// (any path with the hash) or a kept release (the same path), linked where
// it can be and verified; a file the app changed since is not used.
func TestReuse(t *testing.T) {
	s := newStore(t, InPlace, 3)
	install(t, s, "v1", map[string]string{"main.py": "v1 main", "lib/util.py": "util", "old.py": "old"})
	install(t, s, "v2", map[string]string{"main.py": "v2 main", "lib/util.py": "util", "moved.py": "v1 main"})
	// The app changed one of its own files since.
	os.WriteFile(filepath.Join(s.AppDir(), "moved.py"), []byte("v1 mXXX"), 0o644)

	st, err := s.Stage("v3")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		path, body string
		ok         bool
	}{
		{"lib/util.py", "util", true},   // unchanged, same path
		{"renamed.py", "util", true},    // same content at another path
		{"main.py", "v1 main", true},    // moved.py changed since, but v2 displaced v1's main.py into releases/v1/
		{"old.py", "old", true},         // removed by v2: releases/v1/old.py
		{"other.py", "v1 main", false},  // moved.py changed, and no kept release has other.py
		{"new.py", "never seen", false}, // must be downloaded
	} {
		ok, err := st.Reuse(tc.path, want(tc.body, 0o644))
		if err != nil {
			t.Fatalf("Reuse(%s) = %v", tc.path, err)
		}
		if ok != tc.ok {
			t.Errorf("Reuse(%s) = %v, want %v", tc.path, ok, tc.ok)
			continue
		}
		if f, have := st.Have(tc.path); have != ok || ok && f.SHA256 != sha(tc.body) {
			t.Errorf("Have(%s) after Reuse = %+v, %v", tc.path, f, have)
		}
	}
	// Same filesystem, same mode: a link, no bytes written.
	a, _ := os.Stat(filepath.Join(s.AppDir(), "lib/util.py"))
	b, _ := os.Stat(filepath.Join(s.stagingDir(), "v3", "lib/util.py"))
	if !os.SameFile(a, b) {
		t.Error("Reuse(lib/util.py) copied; want a link on one filesystem")
	}
	// Another mode: copied, so the app's file keeps its own.
	ok, err := st.Reuse("lib/util.py", want("util", 0o600))
	if !ok || err != nil {
		t.Fatalf("Reuse(mode 0600) = %v, %v", ok, err)
	}
	b, _ = os.Stat(filepath.Join(s.stagingDir(), "v3", "lib/util.py"))
	a, _ = os.Stat(filepath.Join(s.AppDir(), "lib/util.py"))
	if os.SameFile(a, b) || b.Mode().Perm() != 0o600 || a.Mode().Perm() != 0o644 {
		t.Errorf("Reuse with another mode: linked=%v staged %v app %v", os.SameFile(a, b), b.Mode(), a.Mode())
	}
	if n := a.Sys().(*syscall.Stat_t).Nlink; n > 2 {
		t.Errorf("app file has %d links", n)
	}
	// The switch works from reused files.
	if _, err := st.Reuse("main.py", want("v1 main", 0o644)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteWant("new.py", strings.NewReader("never seen"), -1, want("never seen", 0o644), 1<<20); err != nil {
		t.Fatal(err)
	}
	st.SetSequence(7)
	got, err := s.Install(st)
	if err != nil {
		t.Fatalf("Install = %v", err)
	}
	if got.Sequence != 7 {
		t.Errorf("Install: Sequence = %d, want 7", got.Sequence)
	}
	app := tree(t, s.AppDir())
	for p, body := range map[string]string{"main.py": "v1 main", "lib/util.py": "util", "renamed.py": "util", "old.py": "old", "new.py": "never seen"} {
		if app[p] != body {
			t.Errorf("app %s = %q, want %q", p, app[p], body)
		}
	}
	// A later install without a sequence keeps the highest one.
	if st := install(t, s, "v4", map[string]string{"main.py": "v4"}); st.Sequence != 7 {
		t.Errorf("install without a sequence: Sequence = %d, want 7 kept", st.Sequence)
	}
}
