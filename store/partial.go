package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/ota-agent/ota-agent/wire"
)

// Partial downloads. A download cut before its end (the connection
// dropped, it stalled, the agent was stopped) keeps what it wrote, so the
// next run asks only for the rest:
//
//  1. Download, on a read error, fsyncs the file, then its directory, and
//     only then appends a line to the staging index:
//     {"partial": P, "offset": N, "prefix_sha256": H, "validator": V}:
//     the first N bytes of P are durable and hash to H, and V is what the
//     server said of the file (a strong ETag, else Last-Modified). Without
//     a validator nothing is kept: a continuation could not be tied to the
//     same file. The keys differ from a complete file's line, so an older
//     agent reading the index drops the partial file rather than take it
//     for a whole one.
//  2. The next Stage of the same version keeps P if it still has N bytes
//     or more; a later line for P (complete, or another partial) wins.
//  3. Partial hashes the first N bytes again and offers them only if they
//     still hash to H; the agent then asks for the rest with `Range:
//     bytes=N-` and `If-Range: V`, and Download continues the file at N
//     with the resumed hash (bytes past N, never fsynced, are cut off).
//  4. The whole file passes the same checks as one downloaded at once (its
//     announced size, its manifest's size and SHA-256): the hash decides.
//
// A power cut or a SIGKILL during a download records nothing: that file
// starts again, as before.

// Resume is where a response body starts in its file, and what lets a cut
// download be continued: see Download and Partial.
type Resume struct {
	// Offset is the byte of the file the body starts at: the partial
	// file's first Offset bytes are kept. 0: the file starts afresh.
	Offset int64
	// Validator is the server's validator of the file (a strong ETag or
	// a Last-Modified date), for If-Range; "" keeps nothing of a cut.
	Validator string
}

// errNoPartial is Download's answer to an offset that Partial did not
// just offer: a caller's mistake.
var errNoPartial = errors.New("no verified partial download to continue")

// errNotKept is why a cut download with no validator or no bytes is not kept.
var errNotKept = errors.New("nothing to resume")

// partial is one cut download, as its index line records it.
type partial struct {
	path      string
	offset    int64
	prefix    string // SHA-256 (hex) of the first offset bytes
	validator string
	h         hash.Hash // the prefix's hash state once Partial checked it
}

type partialLine struct {
	Path      string `json:"partial"`
	Offset    int64  `json:"offset"`
	Prefix    string `json:"prefix_sha256"`
	Validator string `json:"validator"`
}

func (p *partial) line() []byte {
	b, _ := json.Marshal(partialLine{Path: p.path, Offset: p.offset, Prefix: p.prefix, Validator: p.validator})
	return append(b, '\n')
}

// parsePartial reads an index line if it is a partial download's.
func parsePartial(b []byte) (*partial, bool) {
	var l partialLine
	if json.Unmarshal(b, &l) != nil || l.Path == "" || wire.CheckPath(l.Path) != nil ||
		l.Offset <= 0 || l.Validator == "" || len(l.Prefix) != sha256.Size*2 {
		return nil, false
	}
	return &partial{path: l.Path, offset: l.Offset, prefix: l.Prefix, validator: l.Validator}, true
}

// Partial returns where the partial download of path that an earlier cut
// left stops, and the validator the server gave for it, once its bytes
// have been read and hashed again and found to be the recorded ones. The
// caller asks the server for the rest (If-Range with the validator) and
// passes what arrives to Download with this Resume, or with a zero one if
// the server sent the whole file. false: there is no usable partial file
// (none, or its bytes changed: it is forgotten), and the file is
// downloaded from its start.
func (st *Stage) Partial(path string) (Resume, bool) {
	p := st.partials[path]
	if p == nil {
		return Resume{}, false
	}
	if p.h == nil {
		h, err := hashPrefix(filepath.Join(st.dir, filepath.FromSlash(path)), p.offset)
		if err != nil || hex.EncodeToString(h.Sum(nil)) != p.prefix {
			delete(st.partials, path)
			return Resume{}, false
		}
		p.h = h
	}
	return Resume{Offset: p.offset, Validator: p.validator}, true
}

// hashPrefix hashes the first n bytes of the file at path.
func hashPrefix(path string, n int64) (hash.Hash, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		return nil, err
	}
	return h, nil
}

// keep makes the first p.offset bytes of the cut download in f durable and
// records them in the index (see the steps above), then returns cause. A
// download without a validator, or one whose record fails, is removed as
// any failed download is.
func (st *Stage) keep(f *os.File, dst string, p *partial, cause error) (File, error) {
	err := st.recordPartial(f, dst, p)
	f.Close()
	if err != nil {
		os.Remove(dst)
		if errors.Is(err, errNotKept) {
			return File{}, cause
		}
		return File{}, errors.Join(cause, fmt.Errorf("keep the partial download: %w", err))
	}
	return File{}, fmt.Errorf("%w (%d bytes kept to resume)", cause, p.offset)
}

func (st *Stage) recordPartial(f *os.File, dst string, p *partial) error {
	if p.validator == "" || p.offset == 0 {
		return errNotKept
	}
	crashPoint("fsync partial " + p.path)
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dst, err)
	}
	// The file's directory entry must be durable before the index names it.
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	crashPoint("append partial " + p.path)
	if _, err := st.index.Write(p.line()); err != nil {
		return err
	}
	crashPoint("fsync index " + p.path)
	if err := st.index.Sync(); err != nil {
		return err
	}
	st.partials[p.path] = p
	return nil
}

// readErr passes r on and remembers its first error other than io.EOF, so
// a cut body can be told from a failed write.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// DropPartials removes the partial downloads that are still partial: files
// of an earlier run's list that this release no longer names. The agent
// calls it once every file of the release is staged, before the switch: in
// symlink mode the whole staging dir becomes the release. Each removal is
// durable before the next step.
func (st *Stage) DropPartials() error {
	for _, p := range slices.Sorted(maps.Keys(st.partials)) {
		dst := filepath.Join(st.dir, filepath.FromSlash(p))
		crashPoint("remove partial " + p)
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := syncDir(filepath.Dir(dst)); err != nil {
			return err
		}
		delete(st.partials, p)
	}
	return nil
}
