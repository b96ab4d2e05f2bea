package store

import (
	"bufio"
	"bytes"
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
	"sort"

	"github.com/ota-agent/ota-agent/wire"
	"golang.org/x/sys/unix"
)

// ErrTooLarge is returned by Stage.Write for a body over its size cap.
var ErrTooLarge = errors.New("file exceeds the size limit")

// ErrTruncated is returned by Stage.Write when fewer bytes arrived than announced.
var ErrTruncated = errors.New("body shorter than announced")

// ErrNoSpace is returned when the filesystem lacks room for a download.
var ErrNoSpace = errors.New("not enough free space")

// indexName lists, one JSON line each, the staged files that were written
// completely and fsynced, and the partial downloads a cut left (see
// partial.go). Anything in staging that it does not name is removed; what
// it names is reused or continued. Of several lines for one path the last
// one counts.
const indexName = ".ota-index"

// Stage is a release being downloaded into staging/<version>/ while the app
// keeps running. Its files move into the app only through Install.
type Stage struct {
	s       *Store
	version string
	dir     string
	files   map[string]File
	// partials are the cut downloads a later Write may continue.
	partials map[string]*partial
	index    *os.File
	// sequence is the signed manifest's, recorded by Install (SetSequence).
	sequence uint64
	// local indexes what the app already holds, for Reuse; built on first use.
	local *localFiles
}

// Stage opens staging/<version>/, keeping files an interrupted earlier run
// finished for the same version and removing everything else in staging.
func (s *Store) Stage(version string) (*Stage, error) {
	if err := wire.CheckTag(version); err != nil {
		return nil, err
	}
	base := s.stagingDir()
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() != version {
			if err := os.RemoveAll(filepath.Join(base, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	st := &Stage{s: s, version: version, dir: filepath.Join(base, version), files: map[string]File{}, partials: map[string]*partial{}}
	if err := os.MkdirAll(st.dir, 0o755); err != nil {
		return nil, err
	}
	if err := st.loadIndex(); err != nil {
		return nil, err
	}
	st.index, err = os.OpenFile(filepath.Join(st.dir, indexName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// loadIndex keeps the indexed files whose size and hash still match and
// the partial downloads whose recorded bytes are all there, and removes
// every other file in the staging dir.
func (st *Stage) loadIndex() error {
	b, err := os.ReadFile(filepath.Join(st.dir, indexName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	known := map[string]File{}
	cut := map[string]*partial{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// A torn last line after a power cut does not parse: that file is
		// downloaded again (or continued from its previous line).
		if p, ok := parsePartial(sc.Bytes()); ok {
			delete(known, p.path)
			cut[p.path] = p
			continue
		}
		var f File
		if json.Unmarshal(sc.Bytes(), &f) == nil && wire.CheckPath(f.Path) == nil {
			delete(cut, f.Path)
			known[f.Path] = f
		}
	}
	for p, f := range known {
		if sum, size, err := hashFile(filepath.Join(st.dir, p)); err == nil && sum == f.SHA256 && size == f.Size {
			st.files[p] = f
		}
	}
	for p, c := range cut {
		// Its prefix is hashed when it is continued (Partial), not here.
		if fi, err := os.Lstat(filepath.Join(st.dir, p)); err == nil && fi.Mode().IsRegular() && fi.Size() >= c.offset {
			st.partials[p] = c
		}
	}
	err = filepath.WalkDir(st.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(st.dir, path)
		rel = filepath.ToSlash(rel)
		_, complete := st.files[rel]
		_, cut := st.partials[rel]
		if !complete && !cut && rel != indexName {
			return os.Remove(path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return st.rewriteIndex()
}

func (st *Stage) rewriteIndex() error {
	var buf bytes.Buffer
	for _, f := range st.Files() {
		b, _ := json.Marshal(f)
		buf.Write(append(b, '\n'))
	}
	for _, p := range slices.Sorted(maps.Keys(st.partials)) {
		buf.Write(st.partials[p].line())
	}
	return WriteFile(filepath.Join(st.dir, indexName), buf.Bytes(), 0o600)
}

// Have returns the staged file at path if an earlier run completed it.
func (st *Stage) Have(path string) (File, bool) {
	f, ok := st.files[path]
	return f, ok
}

// Files returns the staged files sorted by path.
func (st *Stage) Files() []File {
	out := make([]File, 0, len(st.files))
	for _, f := range st.files {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Close releases the staging index; staged files stay for the next run.
func (st *Stage) Close() error { return st.index.Close() }

// Write streams r into the staged file at path, hashing as it goes, in
// constant memory. want is the announced size (-1 if unknown): fewer bytes
// fail with ErrTruncated. More than max bytes fail with ErrTooLarge. The
// free space is checked before writing when want is known (CheckFree) and
// as the file grows in any case: a write that would leave less than
// minFree on the filesystem fails with ErrNoSpace, so a body of unknown
// length never fills the disk. The file gets the owner and mode it will
// have in the app (see Install), is fsynced, and only then recorded in the
// index; on any error it is removed. Write never keeps a cut download:
// Download does, given the server's validator.
func (st *Stage) Write(path string, r io.Reader, want, max int64) (File, error) {
	return st.Download(path, Download{Body: r, Size: want, Max: max})
}

// Want is what a staged file must be, as a release manifest says.
type Want struct {
	Size   int64
	SHA256 string      // hex
	Mode   fs.FileMode // permission bits the file gets in the app
}

// ErrMismatch is returned for a file whose size or SHA-256 is not what its
// manifest says: it was tampered with, or the manifest is wrong.
var ErrMismatch = errors.New("content differs from the manifest")

// WriteWant is Write for a file a manifest describes: a body whose
// announced length, size or SHA-256 differs from w fails with ErrMismatch
// (at most w.Size+1 bytes are read) and is removed, and the file gets
// w.Mode rather than the mode of the file it replaces.
func (st *Stage) WriteWant(path string, r io.Reader, announced int64, w Want, max int64) (File, error) {
	return st.Download(path, Download{Body: r, Size: announced, Max: max, Want: &w})
}

// Download is one response body for Stage.Download.
type Download struct {
	Body io.Reader
	// Size is the whole file's announced length (not the body's, when it
	// continues a partial file), -1 if unknown.
	Size int64
	// Max caps the whole file's size (ErrTooLarge).
	Max int64
	// Want, if set, is what the file must be, as with WriteWant.
	Want *Want
	// Resume says which byte of the file Body starts at, and with what
	// validator a later run may continue it if it is cut.
	Resume Resume
}

// Download stages one file as Write does (or WriteWant, with d.Want), and
// makes downloads resumable:
//
//   - With d.Resume.Offset > 0, Body continues the partial file that
//     Partial just returned with that offset: its first Offset bytes are
//     kept, their hash (computed again by Partial) goes on, and the whole
//     file must pass every check of Write and WriteWant. Anything else
//     after the offset is dropped.
//   - When reading Body fails (a cut connection, a stall, a cancelled
//     context), and d.Resume.Validator is set and some bytes arrived, the
//     bytes written so far are fsynced and recorded as a partial download
//     (see Partial) before the read error is returned. Every other failure
//     (no space, too large, a mismatch, a write error) removes the file as
//     Write does.
func (st *Stage) Download(path string, d Download) (File, error) {
	if w := d.Want; w != nil {
		if w.Size > d.Max {
			return File{}, fmt.Errorf("%s: %w (the manifest says %d bytes, limit %d)", path, ErrTooLarge, w.Size, d.Max)
		}
		if d.Size >= 0 && d.Size != w.Size {
			return File{}, fmt.Errorf("%s: %w: %d bytes announced, the manifest says %d", path, ErrMismatch, d.Size, w.Size)
		}
		return st.write(path, d.Body, -1, w.Size, w, d.Resume)
	}
	return st.write(path, d.Body, d.Size, d.Max, nil, d.Resume)
}

// HaveWant returns the staged file at path if an earlier run completed it
// with w's size, hash and mode.
func (st *Stage) HaveWant(path string, w Want) (File, bool) {
	f, ok := st.files[path]
	return f, ok && f.Size == w.Size && f.SHA256 == w.SHA256 && f.Mode == w.Mode
}

// SetSequence records the sequence of the signed manifest this release
// came with: Install keeps the highest one in the state (replay protection).
func (st *Stage) SetSequence(n uint64) { st.sequence = n }

func (st *Stage) write(path string, r io.Reader, want, max int64, w *Want, rs Resume) (File, error) {
	if err := wire.CheckPath(path); err != nil {
		return File{}, err
	}
	if path == indexName {
		return File{}, fmt.Errorf("%w: %s is the name of ota-agent's staging index", wire.ErrBadPath, indexName)
	}
	if want > max {
		return File{}, fmt.Errorf("%s: %w (%d bytes announced, limit %d)", path, ErrTooLarge, want, max)
	}
	var h hash.Hash
	if rs.Offset > 0 {
		p := st.partials[path]
		if p == nil || p.offset != rs.Offset || p.h == nil {
			return File{}, fmt.Errorf("%s: %w at byte %d", path, errNoPartial, rs.Offset)
		}
		if rs.Offset > max {
			return File{}, fmt.Errorf("%s: %w (over %d bytes)", path, ErrTooLarge, max)
		}
		h = p.h
	}
	// The space still needed: a partial file already holds its bytes.
	need := want
	if w != nil {
		need = w.Size
	}
	if need -= rs.Offset; need > 0 {
		if err := st.s.CheckFree(need); err != nil {
			return File{}, err
		}
	}
	dst := filepath.Join(st.dir, filepath.FromSlash(path))
	if err := mkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return File{}, err
	}
	delete(st.files, path)
	delete(st.partials, path)
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if h != nil {
		flags = os.O_WRONLY
	}
	f, err := os.OpenFile(dst, flags, 0o600)
	if err != nil {
		return File{}, err
	}
	fail := func(err error) (File, error) {
		f.Close()
		os.Remove(dst)
		return File{}, err
	}
	crashPoint("write staged " + path)
	if h == nil {
		h = sha256.New()
	} else {
		// Bytes past the recorded offset were never fsynced: they go.
		if err := f.Truncate(rs.Offset); err != nil {
			return fail(err)
		}
		if _, err := f.Seek(rs.Offset, io.SeekStart); err != nil {
			return fail(err)
		}
	}
	body := &readErr{r: io.LimitReader(r, max+1-rs.Offset)}
	m, err := copyHashing(&spaceGuard{s: st.s, w: f}, h, body)
	n := rs.Offset + m
	sum := hex.EncodeToString(h.Sum(nil))
	switch {
	case errors.Is(err, ErrNoSpace):
		return fail(fmt.Errorf("%s: %w", dst, err))
	case errors.Is(err, unix.ENOSPC):
		return fail(fmt.Errorf("%s: %w: the disk filled up after %d bytes", dst, ErrNoSpace, n))
	case err != nil && err == body.err && n <= max:
		// The body was cut (not a write): every byte read was written
		// and hashed.
		return st.keep(f, dst, &partial{path: path, offset: n, prefix: sum, validator: rs.Validator}, err)
	case err != nil:
		return fail(err)
	case w != nil && n != w.Size:
		return fail(fmt.Errorf("%s: %w: %d bytes, the manifest says %d", path, ErrMismatch, n, w.Size))
	case w != nil && sum != w.SHA256:
		return fail(fmt.Errorf("%s: %w: SHA-256 %s, the manifest says %s", path, ErrMismatch, sum, w.SHA256))
	case n > max:
		return fail(fmt.Errorf("%s: %w (over %d bytes)", path, ErrTooLarge, max))
	case want >= 0 && n != want:
		return fail(fmt.Errorf("%s: %w: %d of %d bytes", path, ErrTruncated, n, want))
	}
	meta, err := st.s.targetMeta(path)
	if err != nil {
		return fail(err)
	}
	if w != nil {
		meta.mode = w.Mode
	}
	if err := f.Chmod(meta.mode); err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		if err := f.Chown(meta.uid, meta.gid); err != nil {
			return fail(err)
		}
	}
	crashPoint("fsync staged " + path)
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("fsync %s: %w", dst, err))
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	file := File{Path: path, Size: n, SHA256: sum, Mode: meta.mode}
	if err := st.record(file, dst); err != nil {
		return File{}, err
	}
	return file, nil
}

// record appends a complete staged file to the index, once its directory
// entry is durable.
func (st *Stage) record(file File, dst string) error {
	b, _ := json.Marshal(file)
	crashPoint("append index " + file.Path)
	if _, err := st.index.Write(append(b, '\n')); err != nil {
		return err
	}
	crashPoint("fsync index " + file.Path)
	// The file's directory entry must be durable before the index names it.
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	if err := st.index.Sync(); err != nil {
		return err
	}
	st.files[file.Path] = file
	delete(st.partials, file.Path)
	return nil
}

// minFree is the free space a download always leaves on the state dir's
// filesystem, whether or not its length was announced: the board keeps
// room for its logs and for the switch's own small writes.
const minFree = 4 << 20

// freeCheckStep is how many bytes a download writes between two looks at
// the free space (at most; less when the margin comes near).
const freeCheckStep = 4 << 20

// CheckFree fails with ErrNoSpace unless the state dir's filesystem has
// need bytes free plus a margin of minFree and a tenth of need (so the
// download never fills the card).
func (s *Store) CheckFree(need int64) error {
	free, err := s.free()
	if err != nil {
		return err
	}
	margin := int64(minFree) + need/10
	if free < need+margin {
		return fmt.Errorf("%w: needs %s on the filesystem of %s (with a margin of %s), %s free",
			ErrNoSpace, mib(need), s.dir, mib(margin), mib(free))
	}
	return nil
}

// free is the space available to unprivileged writers on the state dir's
// filesystem (root may dig into the reserved blocks; the agent does not).
func (s *Store) free() (int64, error) {
	var fsst unix.Statfs_t
	if err := unix.Statfs(s.dir, &fsst); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: s.dir, Err: err}
	}
	return int64(fsst.Bavail) * int64(fsst.Bsize), nil
}

// spaceGuard writes to w while at least minFree stays free on the store's
// filesystem, so a body of unknown length (or a disk another writer fills)
// stops the download with ErrNoSpace before the disk is full. It looks at
// the free space again whenever the bytes written since the last look
// would reach what that look allowed (at most freeCheckStep).
type spaceGuard struct {
	s       *Store
	w       io.Writer
	written int64 // bytes written in all
	allowed int64 // bytes that may still be written before the next look
}

func (g *spaceGuard) Write(p []byte) (int, error) {
	if int64(len(p)) > g.allowed {
		free, err := g.s.free()
		if err != nil {
			return 0, err
		}
		if free-int64(len(p)) < minFree {
			return 0, fmt.Errorf("%w: stopped after %s: %s free on the filesystem of %s, and %s must stay free",
				ErrNoSpace, mib(g.written), mib(free), g.s.dir, mib(minFree))
		}
		g.allowed = min(free-minFree, max(freeCheckStep, int64(len(p))))
	}
	n, err := g.w.Write(p)
	g.written += int64(n)
	g.allowed -= int64(n)
	return n, err
}

func mib(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", (n+1023)>>10)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
