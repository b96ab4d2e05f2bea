package store

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An interrupted download resumes: files an earlier Stage completed (and
// indexed) are reused, everything else in staging goes.
func TestStageReuse(t *testing.T) {
	s := newStore(t, InPlace, 2)
	st := stageFiles(t, s, "v2", map[string]string{"main.py": "v2 main", "lib/util.py": "v2 util", "boot.py": "v2 boot"})
	st.Close()
	dir := filepath.Join(s.stagingDir(), "v2")
	// A download cut off before it was indexed, and a completed one that
	// was damaged since (a torn write after a power cut, a bad card).
	writeFiles(t, dir, map[string]string{"lib/partial.py": "half of it", "boot.py": "v2 bXXX"})
	// A left-over of another version.
	writeFiles(t, s.stagingDir(), map[string]string{"v1/main.py": "v1 main"})

	st, err := s.Stage("v2")
	if err != nil {
		t.Fatalf("Stage(v2) again = %v, want nil", err)
	}
	defer st.Close()
	tests := []struct {
		path string
		have bool
	}{
		{"main.py", true},
		{"lib/util.py", true},
		{"boot.py", false},        // hash no longer matches: dropped
		{"lib/partial.py", false}, // never indexed: removed
	}
	for _, tt := range tests {
		f, ok := st.Have(tt.path)
		if ok != tt.have {
			t.Errorf("Have(%q) = %v, want %v", tt.path, ok, tt.have)
		}
		_, err := os.Stat(filepath.Join(dir, tt.path))
		if exists := err == nil; exists != tt.have {
			t.Errorf("after Stage(v2): %s exists = %v, want %v", tt.path, exists, tt.have)
		}
		if ok && (f.SHA256 != sha("v2 "+strings.TrimSuffix(filepath.Base(tt.path), ".py")) || f.Mode != 0o644) {
			t.Errorf("Have(%q) = %+v, want the indexed file", tt.path, f)
		}
	}
	if _, err := os.Stat(filepath.Join(s.stagingDir(), "v1")); err == nil {
		t.Errorf("Stage(v2) kept staging/v1")
	}
	// The rewritten index names exactly the reused files, so a third run agrees.
	st.Close()
	st, err = s.Stage("v2")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(st.Files()); got != 2 {
		t.Errorf("third Stage(v2): %d files, want 2", got)
	}
	// Completing the stage installs all of it.
	if _, err := st.Write("boot.py", strings.NewReader("v2 boot"), 7, 100); err != nil {
		t.Fatalf("Write(boot.py) = %v, want nil", err)
	}
	if _, err := s.Install(st); err != nil {
		t.Fatalf("Install(v2) = %v, want nil", err)
	}
	want := map[string]string{"main.py": "v2 main", "lib/util.py": "v2 util", "boot.py": "v2 boot"}
	if d := diffTrees(files(t, s.AppDir()), want); d != "" {
		t.Errorf("after Install(v2), app dir:%s", d)
	}
}

// A torn last index line (a power cut while appending) costs that one file.
func TestStageTornIndex(t *testing.T) {
	s := newStore(t, InPlace, 2)
	st := stageFiles(t, s, "v2", map[string]string{"a.py": "a", "b.py": "b"})
	st.Close()
	index := filepath.Join(s.stagingDir(), "v2", indexName)
	b, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(index, b[:len(b)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	st, err = s.Stage("v2")
	if err != nil {
		t.Fatalf("Stage(v2) over a torn index = %v, want nil", err)
	}
	defer st.Close()
	if _, ok := st.Have("a.py"); !ok {
		t.Errorf("Have(a.py) = false, want true (its index line is whole)")
	}
	if _, ok := st.Have("b.py"); ok {
		t.Errorf("Have(b.py) = true, want false (its index line is torn)")
	}
}

// errReader fails after its content, as a dropped connection does.
type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestStageWriteErrors(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		body      io.Reader
		want, max int64
		err       error
	}{
		{"truncated", "a.py", strings.NewReader("short"), 10, 100, ErrTruncated},
		{"announced too large", "a.py", strings.NewReader("x"), 101, 100, ErrTooLarge},
		{"too large, size unknown", "a.py", strings.NewReader(strings.Repeat("x", 101)), -1, 100, ErrTooLarge},
		{"connection dropped", "lib/a.py", errReader{strings.NewReader("part")}, -1, 100, io.ErrUnexpectedEOF},
		{"path climbs out", "../a.py", strings.NewReader("x"), 1, 100, nil},
		{"absolute path", "/etc/passwd", strings.NewReader("x"), 1, 100, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, InPlace, 2)
			st, err := s.Stage("v1")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			_, err = st.Write(tt.path, tt.body, tt.want, tt.max)
			if err == nil || tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("Write(%q) = %v, want %v", tt.path, err, tt.err)
			}
			if _, ok := st.Have(tt.path); ok {
				t.Errorf("Have(%q) = true after a failed Write", tt.path)
			}
			if got := files(t, filepath.Join(s.stagingDir(), "v1")); len(got) != 1 || got[indexName] != "" {
				t.Errorf("after a failed Write, staging holds %v, want an empty index only", got)
			}
		})
	}
}
