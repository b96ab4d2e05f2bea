package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/ota-agent/ota-agent/wire"
)

func TestCopyHashing(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB, several buffers
	want := sha256.Sum256(data)
	readers := map[string]io.Reader{
		"whole":    bytes.NewReader(data),
		"one byte": iotest.OneByteReader(bytes.NewReader(data[:5000])),
		"half":     iotest.HalfReader(bytes.NewReader(data)),
		"data+EOF": iotest.DataErrReader(bytes.NewReader(data)),
	}
	for name, r := range readers {
		var out bytes.Buffer
		h := sha256.New()
		n, err := copyHashing(&out, h, r)
		src := data
		if name == "one byte" {
			src = data[:5000]
		}
		sum := sha256.Sum256(src)
		if name != "one byte" {
			sum = want
		}
		if err != nil || n != int64(len(src)) || !bytes.Equal(out.Bytes(), src) || !bytes.Equal(h.Sum(nil), sum[:]) {
			t.Errorf("copyHashing(%s) = %d, %v; want %d bytes copied and hashed", name, n, err, len(src))
		}
	}
	// Reads of 0 bytes with no error must not use up the buffers.
	var out bytes.Buffer
	if n, err := copyHashing(&out, sha256.New(), &zeroReads{left: 20, data: []byte("tail")}); err != nil || n != 4 {
		t.Errorf("copyHashing(zero reads) = %d, %v; want 4, nil", n, err)
	}
	boom := errors.New("boom")
	if _, err := copyHashing(&out, sha256.New(), iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Errorf("copyHashing(failing reader) = %v, want %v", err, boom)
	}
	if _, err := copyHashing(failWriter{boom}, sha256.New(), bytes.NewReader(data)); !errors.Is(err, boom) {
		t.Errorf("copyHashing(failing writer) = %v, want %v", err, boom)
	}
}

type zeroReads struct {
	left int
	data []byte
}

func (z *zeroReads) Read(p []byte) (int, error) {
	if z.left > 0 {
		z.left--
		return 0, nil
	}
	if len(z.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, z.data)
	z.data = z.data[n:]
	return n, nil
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

// A release file may not take the staging index's name.
func TestStageRefusesIndexName(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir+"/state", dir+"/app", Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stage("v1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write(indexName, bytes.NewReader([]byte("x")), 1, 10); !errors.Is(err, wire.ErrBadPath) {
		t.Errorf("Write(%q) = %v, want ErrBadPath", indexName, err)
	}
}
