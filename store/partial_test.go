package store

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cutAfter delivers n bytes of s, then fails as a dropped connection does.
func cutAfter(s string, n int) io.Reader {
	return errReader{strings.NewReader(s[:n])}
}

// A cut download with a validator keeps its bytes; the next Stage offers
// them (Partial) and Download continues the file at that offset.
func TestPartialResumes(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 4096) // 64 KiB
	half := len(body) / 2
	for _, manifest := range []bool{false, true} {
		name := map[bool]string{false: "files", true: "manifest"}[manifest]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, InPlace, 2)
			dl := func(r io.Reader, rs Resume) Download {
				d := Download{Body: r, Size: int64(len(body)), Max: 1 << 20, Resume: rs}
				if manifest {
					w := want(body, 0o755)
					d.Want = &w
				}
				return d
			}
			st, err := s.Stage("v2")
			if err != nil {
				t.Fatal(err)
			}
			_, err = st.Download("lib/big.bin", dl(cutAfter(body, half), Resume{Validator: `"etag-1"`}))
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Download(cut at %d) = %v, want io.ErrUnexpectedEOF", half, err)
			}
			st.Close()
			staged := filepath.Join(s.stagingDir(), "v2", "lib", "big.bin")
			// Bytes past the record (written, never fsynced) are cut off.
			f, err := os.OpenFile(staged, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatalf("the cut download was not kept: %v", err)
			}
			f.WriteString("garbage")
			f.Close()

			st, err = s.Stage("v2")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rs, ok := st.Partial("lib/big.bin")
			if !ok || rs.Offset != int64(half) || rs.Validator != `"etag-1"` {
				t.Fatalf("Partial() = %+v, %v; want offset %d and the validator", rs, ok, half)
			}
			file, err := st.Download("lib/big.bin", dl(strings.NewReader(body[half:]), Resume{Offset: rs.Offset, Validator: rs.Validator}))
			if err != nil || file.SHA256 != sha(body) || file.Size != int64(len(body)) {
				t.Fatalf("Download(rest) = %+v, %v; want the whole file", file, err)
			}
			if b, _ := os.ReadFile(staged); string(b) != body {
				t.Fatalf("staged file: %d bytes, want the %d of the body", len(b), len(body))
			}
			if _, ok := st.Partial("lib/big.bin"); ok {
				t.Errorf("Partial() after the file completed = true")
			}
			// The index's last line for the file is the complete one.
			st.Close()
			st, err = s.Stage("v2")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := st.Have("lib/big.bin"); !ok {
				t.Errorf("Have() in a new Stage = false, want the completed file")
			}
		})
	}
}

// What cannot be continued starts again: no validator, a prefix whose
// bytes changed, a file shorter than its record, a resume the manifest's
// hash refuses, an offset Partial did not offer.
func TestPartialRefused(t *testing.T) {
	body := strings.Repeat("x", 10000) + strings.Repeat("y", 10000)
	const path = "a.bin"
	cut := func(t *testing.T, s *Store, validator string) string {
		t.Helper()
		st, err := s.Stage("v2")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Download(path, Download{Body: cutAfter(body, 12000), Size: int64(len(body)), Max: 1 << 20, Resume: Resume{Validator: validator}}); err == nil {
			t.Fatal("Download(cut) = nil")
		}
		return filepath.Join(s.stagingDir(), "v2", path)
	}
	partial := func(t *testing.T, s *Store) (*Stage, Resume, bool) {
		t.Helper()
		st, err := s.Stage("v2")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		rs, ok := st.Partial(path)
		return st, rs, ok
	}

	t.Run("no validator", func(t *testing.T) {
		s := newStore(t, InPlace, 2)
		staged := cut(t, s, "")
		if _, err := os.Stat(staged); err == nil {
			t.Errorf("a cut download without a validator was kept")
		}
	})
	t.Run("prefix changed", func(t *testing.T) {
		s := newStore(t, InPlace, 2)
		staged := cut(t, s, `"v"`)
		f, _ := os.OpenFile(staged, os.O_WRONLY, 0)
		f.WriteAt([]byte("z"), 100)
		f.Close()
		if rs, ok := partialOf(t, s, path); ok {
			t.Errorf("Partial() over a changed prefix = %+v, true; want false", rs)
		}
	})
	t.Run("shorter than recorded", func(t *testing.T) {
		s := newStore(t, InPlace, 2)
		staged := cut(t, s, `"v"`)
		os.Truncate(staged, 100)
		if _, _, ok := partial(t, s); ok {
			t.Errorf("Partial() of a file shorter than its record = true")
		}
		if _, err := os.Stat(staged); err == nil {
			t.Errorf("Stage kept a partial file shorter than its record")
		}
	})
	t.Run("hash decides", func(t *testing.T) {
		s := newStore(t, InPlace, 2)
		cut(t, s, `"v"`)
		st, rs, ok := partial(t, s)
		if !ok {
			t.Fatal("Partial() = false")
		}
		// The server's file changed but kept its validator: the whole
		// file does not hash to the manifest's.
		w := want(body, 0o644)
		other := strings.Repeat("z", len(body)-12000)
		if _, err := st.Download(path, Download{Body: strings.NewReader(other), Size: int64(len(body)), Max: 1 << 20, Want: &w, Resume: rs}); !errors.Is(err, ErrMismatch) {
			t.Fatalf("Download(spliced) = %v, want ErrMismatch", err)
		}
		if _, err := os.Stat(filepath.Join(s.stagingDir(), "v2", path)); err == nil {
			t.Errorf("a spliced file that failed its hash was kept")
		}
	})
	t.Run("offset not offered", func(t *testing.T) {
		s := newStore(t, InPlace, 2)
		st, err := s.Stage("v2")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Download(path, Download{Body: strings.NewReader("rest"), Size: -1, Max: 100, Resume: Resume{Offset: 5}}); !errors.Is(err, errNoPartial) {
			t.Fatalf("Download(offset 5, no partial) = %v, want errNoPartial", err)
		}
	})
}

func partialOf(t *testing.T, s *Store, path string) (Resume, bool) {
	t.Helper()
	st, err := s.Stage("v2")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return st.Partial(path)
}

// A partial download that the release no longer names goes before the
// switch: in symlink mode the staging dir becomes the release.
func TestDropPartials(t *testing.T) {
	s := newStore(t, Symlink, 2)
	st, err := s.Stage("v2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Download("old.bin", Download{Body: cutAfter("half of it", 4), Size: 10, Max: 100, Resume: Resume{Validator: `"x"`}}); err == nil {
		t.Fatal("Download(cut) = nil")
	}
	if _, err := st.Write("main.py", strings.NewReader("v2 main"), 7, 100); err != nil {
		t.Fatal(err)
	}
	if err := st.DropPartials(); err != nil {
		t.Fatalf("DropPartials() = %v", err)
	}
	if _, ok := st.Partial("old.bin"); ok {
		t.Errorf("Partial(old.bin) after DropPartials() = true")
	}
	if _, err := s.Install(st); err != nil {
		t.Fatalf("Install(v2) = %v", err)
	}
	if got := files(t, s.AppDir()); len(got) != 1 || got["main.py"] != "v2 main" {
		t.Errorf("app dir = %v, want main.py alone", got)
	}
}
