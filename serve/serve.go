// Package serve is a static file server for the micropython-ota release
// layout (README, "Server layout"): <project>/version, <project>/<v>_<file> and
// <project>/<v>/<file>. It is what `ota-agent serve` runs; any web server
// that serves the same files works as well.
package serve

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/wire"
)

// Options configures Handler.
type Options struct {
	// User and Password, when User is set, require HTTP Basic auth on every
	// request. A password without a user is an error.
	User, Password string
	// Log receives one debug event per request; the zero value logs nothing.
	Log zerolog.Logger
}

// realm is what clients see in the 401 challenge.
const realm = `Basic realm="ota-agent"`

// maxETags bounds the ETag cache; when full it is dropped and rebuilt, which
// only costs a re-hash of the files asked for again.
const maxETags = 4096

// Handler serves the regular files under dir, read only.
//
// Only GET and HEAD are allowed (405 otherwise). A path the release layout
// cannot name (wire.CheckRequestPath: not clean, "..", a dot file or
// directory at the top or in a project directory such as .git or
// .htpasswd), directories, special files, and anything that would resolve
// outside dir (symlinks leading out) are 404, indistinguishable from a
// missing file. A release file whose path has a dot component
// (<project>/<v>/lib/.env) is served, as the agent accepts it. Responses carry a strong ETag (the SHA-256 of the
// content, computed on first use and cached while the file is provably the
// same: same inode, size, mtime and ctime, and last changed a while before
// it was hashed; a file replaced by one of the same size and mtime gets a
// new tag), Last-Modified and Content-Length, and honour If-None-Match,
// If-Modified-Since and Range, so a cut download continues: `Range:
// bytes=N-` (or any single range; several get multipart/byteranges) is a
// 206 with its Content-Range, a range that starts past the end is a 416
// with `Content-Range: bytes */<size>`, and If-Range (this ETag, or the
// Last-Modified date) turns the 206 into a 200 with the whole file when
// the file changed.
//
// dir is opened anew for each request, so replacing it (for example a
// symlink switched to a new tree) takes effect at once and the handler holds
// no file descriptor between requests. Handler fails if dir cannot be opened
// as a directory or the options are inconsistent.
func Handler(dir string, opts Options) (http.Handler, error) {
	if opts.User == "" && opts.Password != "" {
		return nil, errors.New("serve: password without user")
	}
	if strings.ContainsRune(opts.User, ':') {
		// Basic auth splits user and password at the first colon.
		return nil, errors.New("serve: user name contains ':'")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	root.Close()
	h := &handler{dir: dir, log: opts.Log, etags: make(map[string]*etagEntry), racy: racyWindow}
	if opts.User != "" {
		h.auth = true
		h.user = sha256.Sum256([]byte(opts.User))
		h.password = sha256.Sum256([]byte(opts.Password))
	}
	return h, nil
}

type handler struct {
	dir  string
	log  zerolog.Logger
	auth bool
	// Hashes, so the constant-time compare does not leak the lengths either.
	user, password [sha256.Size]byte

	mu     sync.Mutex
	etags  map[string]*etagEntry
	racy   time.Duration // racyWindow; tests shorten it
	hashes atomic.Int64  // files hashed, for tests
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &recorder{ResponseWriter: w}
	err := h.serve(rw, r)
	ev := h.log.Debug().
		Str("method", r.Method).
		Str("path", r.URL.Path). // not the query, which may carry tokens
		Str("remote", r.RemoteAddr).
		Int("status", rw.statusCode()).
		Int64("bytes", rw.bytes).
		Dur("took", time.Since(start))
	if rg := r.Header.Get("Range"); rg != "" {
		// A resumed download shows as what it asked for.
		ev = ev.Str("range", rg).Str("if_range", r.Header.Get("If-Range"))
	}
	if err != nil {
		ev = ev.AnErr("cause", err)
	}
	ev.Msg("request")
}

// serve answers one request; the error, if any, is why a request failed and
// is only logged.
func (h *handler) serve(w http.ResponseWriter, r *http.Request) error {
	if h.auth && !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", realm)
		http.Error(w, "401 unauthorized", http.StatusUnauthorized)
		return nil
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return nil
	}
	name, ok := relPath(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return nil
	}
	f, fi, err := h.open(name)
	if err != nil {
		http.NotFound(w, r)
		return err
	}
	defer f.Close()
	etag, err := h.etag(name, f)
	if err != nil {
		http.Error(w, "500 internal server error", http.StatusInternalServerError)
		return err
	}
	w.Header().Set("ETag", etag)
	if rg := r.Header.Get("Range"); rg != "" && !strings.HasPrefix(rg, "bytes=") {
		// A range unit other than bytes is ignored (RFC 9110 14.2), where
		// ServeContent would answer 416.
		r = r.Clone(r.Context())
		r.Header.Del("Range")
	}
	// ServeContent sets Last-Modified, Content-Length and Content-Type, and
	// answers the conditional and Range headers.
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
	return nil
}

func (h *handler) authorized(r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	if !ok {
		return false
	}
	uh := sha256.Sum256([]byte(u))
	ph := sha256.Sum256([]byte(p))
	// Both compares always run: no early exit tells a right user from a wrong one.
	return subtle.ConstantTimeCompare(uh[:], h.user[:])&subtle.ConstantTimeCompare(ph[:], h.password[:]) == 1
}

// relPath turns a URL path into a name relative to the served directory,
// if the release layout may name it (wire.CheckRequestPath: the agent's own
// rule for a release file's path, and no dot file at the top or in a
// project directory). Empty components (a trailing slash names a
// directory), "." and ".." are refused: os.Root would refuse an escape
// anyway; this keeps "../" from even reaching it.
func relPath(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok || wire.CheckRequestPath(rest) != nil {
		return "", false
	}
	return rest, true
}

// open opens name under dir through os.Root, so neither ".." nor a symlink
// can lead outside it. Anything but a regular file is refused, checked before
// the open so a FIFO cannot block the request.
func (h *handler) open(name string) (*os.File, os.FileInfo, error) {
	root, err := os.OpenRoot(h.dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	fi, err := root.Stat(name)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: not a regular file", name)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	// Stat the open file: that is what gets served, whatever happened to the
	// name since.
	fi, err = f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", name)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// racyWindow is how long after a file's last change its cached hash is not
// trusted. The kernel stamps ctime from a clock that ticks every few
// milliseconds, so a second rewrite within one tick of the first (or of the
// hash) can leave every stat field as it was; until the file's ctime is
// this far behind the time it was hashed, each request hashes it again.
const racyWindow = 2 * time.Second

// fileID is what tells one content of a file from another without reading
// it: a replacement (rename over, cp -p, rsync -a, a tarball's fixed
// mtimes) changes the inode or the ctime even when size and mtime are kept,
// and a rewrite in place changes the ctime, which no one can set back.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds since the epoch
}

// statID returns the fileID of the open file f.
func statID(f *os.File) (fileID, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return fileID{}, err
	}
	var st unix.Stat_t
	var serr error
	if err := sc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return fileID{}, err
	}
	if serr != nil {
		return fileID{}, &os.PathError{Op: "fstat", Path: f.Name(), Err: serr}
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino), size: int64(st.Size),
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// etagEntry is one cached content hash. done is closed once tag or err is set,
// so concurrent first requests for a new file hash it only once.
type etagEntry struct {
	id       fileID
	hashedAt time.Time // when hashing started
	done     chan struct{}
	tag      string
	err      error
}

// settled reports whether the file last changed well before it was hashed,
// so a later change cannot have kept its fileID (see racyWindow).
func (e *etagEntry) settled(window time.Duration) bool {
	return time.Unix(0, e.id.ctime).Before(e.hashedAt.Add(-window))
}

// etag returns the quoted SHA-256 of f's content. The cache answers only
// while the file's fileID (device, inode, size, mtime, ctime) is the one
// hashed and the hash is settled; any replacement or rewrite, or a change
// too recent to tell, costs one hash. f is left at offset 0.
func (h *handler) etag(name string, f *os.File) (string, error) {
	id, err := statID(f)
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	e := h.etags[name]
	if e == nil || e.id != id || !e.settled(h.racy) {
		if len(h.etags) >= maxETags {
			clear(h.etags)
		}
		e = &etagEntry{id: id, hashedAt: time.Now(), done: make(chan struct{})}
		h.etags[name] = e
		h.mu.Unlock()
		h.hashes.Add(1)
		e.tag, e.err = hashFile(f)
		if e.err == nil {
			// A file rewritten in place while it was hashed: the hash may
			// match neither version, so do not keep it.
			if now, err := statID(f); err != nil || now != e.id {
				e.err = fmt.Errorf("%s changed while it was read", name)
			}
		}
		if e.err != nil {
			h.mu.Lock()
			if h.etags[name] == e {
				delete(h.etags, name)
			}
			h.mu.Unlock()
		}
		close(e.done)
		return e.tag, e.err
	}
	h.mu.Unlock()
	<-e.done
	return e.tag, e.err
}

func hashFile(f *os.File) (string, error) {
	s := sha256.New()
	if _, err := io.Copy(s, f); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return `"` + hex.EncodeToString(s.Sum(nil)) + `"`, nil
}

// recorder notes the status and body size for the request log.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the server's sendfile path, which ServeContent uses through
// io.Copy, when the underlying writer has one.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		// Hide recorder's own ReadFrom so io.Copy does not come back here.
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) statusCode() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}
