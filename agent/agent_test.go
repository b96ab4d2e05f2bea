package agent

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
)

// release server: files keyed by URL path below the root, e.g.
// "/sample/version", "/sample/v1.0.1_main.py". Handlers may override paths.
type server struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string]string
	override map[string]http.HandlerFunc
	reqs     []*http.Request
}

func newServer(t *testing.T, files map[string]string) *server {
	t.Helper()
	s := &server{files: files, override: map[string]http.HandlerFunc{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	h, ok := s.override[r.URL.Path]
	body, found := s.files[r.URL.Path]
	s.mu.Unlock()
	if ok {
		h(w, r)
		return
	}
	if !found {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Write([]byte(body))
}

func (s *server) set(path, body string) {
	s.mu.Lock()
	s.files[path] = body
	s.mu.Unlock()
}

func (s *server) handle(path string, h http.HandlerFunc) {
	s.mu.Lock()
	s.override[path] = h
	s.mu.Unlock()
}

func (s *server) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

func (s *server) paths() []string {
	var out []string
	for _, r := range s.requests() {
		out = append(out, r.URL.Path)
	}
	return out
}

// sample publishes v1.0.0 and v1.0.1 of "sample" in the prefix layout, with
// version naming v1.0.1.
func sample() map[string]string {
	return map[string]string{
		"/sample/version":            "v1.0.1\n",
		"/sample/v1.0.0_main.py":     "print('v1.0.0 main')\n",
		"/sample/v1.0.0_lib/util.py": "V = '1.0.0'\n",
		"/sample/v1.0.1_main.py":     "print('v1.0.1 main')\n",
		"/sample/v1.0.1_lib/util.py": "V = '1.0.1'\n",
	}
}

type env struct {
	root, appDir string
	app          App
}

func newEnv(t *testing.T, host string) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{root: root, appDir: filepath.Join(root, "app")}
	e.app = App{Host: host, Project: "sample", Files: []string{"main.py", "lib/util.py"}, UseVersionPrefix: true,
		AppDir: e.appDir, StateRoot: filepath.Join(root, "state")}
	e.app.ApplyDefaults()
	return e
}

func (e *env) agent(t *testing.T) *Agent {
	t.Helper()
	if err := e.app.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	a, err := New(e.app, Options{UserAgent: "ota-agent/test"})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return a
}

// tree returns every regular file under dir with its content.
func tree(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = string(b)
		}
		return nil
	})
	return out
}

func installed(t *testing.T, e *env) string {
	t.Helper()
	st, err := store.ReadState(e.app.StateDir())
	if err != nil {
		t.Fatal(err)
	}
	return st.Version
}

func wantApp(t *testing.T, e *env, version string) {
	t.Helper()
	got := tree(t, e.appDir)
	want := map[string]string{
		"main.py":     fmt.Sprintf("print('%s main')\n", version),
		"lib/util.py": fmt.Sprintf("V = '%s'\n", strings.TrimPrefix(version, "v")),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("app dir = %v, want %v", got, want)
	}
	if v := installed(t, e); v != version {
		t.Fatalf("installed = %q, want %q", v, version)
	}
}

func TestFirstRunInstallsPrefixLayout(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	res, err := e.agent(t).Update(context.Background())
	if err != nil || !res.Updated || res.Installed != "" || res.Remote != "v1.0.1" {
		t.Fatalf("Update() = %+v, %v; want an update from none to v1.0.1", res, err)
	}
	wantApp(t, e, "v1.0.1")
	// The manifest's 404 says the server has none: the files list is the release.
	want := []string{"/sample/version", "/sample/v1.0.1_manifest.json", "/sample/v1.0.1_main.py", "/sample/v1.0.1_lib/util.py"}
	if got := srv.paths(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
}

func TestSubdirLayout(t *testing.T) {
	srv := newServer(t, map[string]string{
		"/sample/version":            "v1.0.1",
		"/sample/v1.0.1/main.py":     "print('v1.0.1 main')\n",
		"/sample/v1.0.1/lib/util.py": "V = '1.0.1'\n",
	})
	e := newEnv(t, srv.URL)
	e.app.UseVersionPrefix = false
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() = %v", err)
	}
	wantApp(t, e, "v1.0.1")
	want := []string{"/sample/version", "/sample/v1.0.1/manifest.json", "/sample/v1.0.1/main.py", "/sample/v1.0.1/lib/util.py"}
	if got := srv.paths(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
}

func TestVersionBodyIsTrimmed(t *testing.T) {
	srv := newServer(t, sample())
	srv.set("/sample/version", " \t v1.0.1 \r\n\n")
	e := newEnv(t, srv.URL)
	res, err := e.agent(t).Check(context.Background())
	if err != nil || res.Remote != "v1.0.1" {
		t.Fatalf("Check() = %+v, %v; want remote v1.0.1", res, err)
	}
}

func TestUpToDateCostsOneRequest(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := len(srv.requests())
	res, err := e.agent(t).Update(context.Background())
	if err != nil || res.Updated || res.Available {
		t.Fatalf("second Update() = %+v, %v; want up to date", res, err)
	}
	if n := len(srv.requests()) - before; n != 1 || res.Requests != 1 {
		t.Errorf("up-to-date update made %d requests (counted %d), want 1", n, res.Requests)
	}
}

func TestOlderTagInstalls(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.set("/sample/version", "v1.0.0")
	res, err := e.agent(t).Update(context.Background())
	if err != nil || !res.Updated {
		t.Fatalf("Update() to an older tag = %+v, %v; want it installed", res, err)
	}
	wantApp(t, e, "v1.0.0")
}

func TestCheckNeverDownloads(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	res, err := e.agent(t).Check(context.Background())
	if err != nil || !res.Available || res.Remote != "v1.0.1" {
		t.Fatalf("Check() = %+v, %v; want available v1.0.1", res, err)
	}
	if got := srv.paths(); len(got) != 1 || got[0] != "/sample/version" {
		t.Errorf("Check requested %v, want only the version", got)
	}
	if got := tree(t, e.root); len(got) != 0 {
		t.Errorf("Check wrote %v, want nothing", got)
	}
}

func TestFilesOutsideTheReleaseStay(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	os.MkdirAll(filepath.Join(e.appDir, "data"), 0o755)
	os.WriteFile(filepath.Join(e.appDir, "data/config.json"), []byte("{}"), 0o600)
	os.WriteFile(filepath.Join(e.appDir, "main.py"), []byte("old"), 0o640)
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := tree(t, e.appDir)
	if got["data/config.json"] != "{}" || got["main.py"] != "print('v1.0.1 main')\n" {
		t.Errorf("app dir = %v, want data/config.json kept and main.py replaced", got)
	}
	fi, _ := os.Stat(filepath.Join(e.appDir, "main.py"))
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("main.py mode = %v, want 0640 from the file it replaced", fi.Mode())
	}
}

func TestBasicAuthOnEveryRequest(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	e.app.User, e.app.Password, e.app.AllowInsecureAuth = "otauser", "topsecret", true
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range srv.requests() {
		u, p, ok := r.BasicAuth()
		if !ok || u != "otauser" || p != "topsecret" {
			t.Errorf("%s carried auth %q/%q (%v), want otauser/topsecret", r.URL.Path, u, p, ok)
		}
		if ua := r.Header.Get("User-Agent"); ua != "ota-agent/test" {
			t.Errorf("%s User-Agent = %q, want ota-agent/test", r.URL.Path, ua)
		}
	}
}

// Every failure of a release fetch: the documented error, the app dir as it
// was, the old version still recorded, nothing written outside app and state.
func TestFailuresChangeNothing(t *testing.T) {
	hang := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("print("))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	tests := []struct {
		name        string
		path, body  string
		h           http.HandlerFunc
		unreachable bool
		is          error
	}{
		{name: "404 file", path: "/sample/v1.0.1_lib/util.py", h: http.NotFound},
		{name: "500 file", path: "/sample/v1.0.1_lib/util.py", h: status(500), unreachable: true},
		{name: "500 version", path: "/sample/version", h: status(500), unreachable: true},
		{name: "404 version", path: "/sample/version", h: http.NotFound},
		{name: "203 version", path: "/sample/version", h: status(203)},
		{name: "truncated", path: "/sample/v1.0.1_lib/util.py", h: truncated, unreachable: true},
		{name: "stalled", path: "/sample/v1.0.1_lib/util.py", h: hang, unreachable: true},
		{name: "oversized version", path: "/sample/version", body: strings.Repeat("v", wire.MaxVersionBody+1)},
		{name: "tag ../x", path: "/sample/version", body: "../x", is: wire.ErrBadTag},
		{name: "tag v1/../..", path: "/sample/version", body: "v1/../..", is: wire.ErrBadTag},
		{name: "tag control", path: "/sample/version", body: "v1\x1b[2J", is: wire.ErrBadTag},
		{name: "tag 200 bytes", path: "/sample/version", body: strings.Repeat("a", 200), is: wire.ErrBadTag},
		{name: "tag html", path: "/sample/version", body: "<html><body>Wi-Fi login</body></html>", is: wire.ErrBadTag},
		{name: "oversized file", path: "/sample/v1.0.1_lib/util.py", body: strings.Repeat("x", 2000), is: store.ErrTooLarge},
		{name: "oversized chunked file", path: "/sample/v1.0.1_lib/util.py", h: chunked(2000), is: store.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, sample())
			e := newEnv(t, srv.URL)
			e.app.Timeout = 300 * time.Millisecond
			e.app.MaxFileSize = 1000
			srv.set("/sample/version", "v1.0.0")
			if _, err := e.agent(t).Update(context.Background()); err != nil {
				t.Fatal(err)
			}
			srv.set("/sample/version", "v1.0.1")
			if tt.h != nil {
				srv.handle(tt.path, tt.h)
			} else {
				srv.set(tt.path, tt.body)
			}
			before := tree(t, e.root)
			res, err := e.agent(t).Update(context.Background())
			if err == nil || res.Updated {
				t.Fatalf("Update() = %+v, %v; want a failure", res, err)
			}
			if got := errors.Is(err, ErrUnreachable); got != tt.unreachable {
				t.Errorf("Update() = %v; unreachable = %v, want %v", err, got, tt.unreachable)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Update() = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), srv.URL) {
				t.Errorf("Update() = %q, want the URL in the message", err)
			}
			wantApp(t, e, "v1.0.0")
			// Only the state dir may differ (staged downloads of complete files).
			after := tree(t, e.root)
			for p, b := range after {
				if !strings.HasPrefix(p, "state/") && before[p] != b {
					t.Errorf("%s changed outside the state dir", p)
				}
			}
			top, _ := os.ReadDir(e.root)
			if len(top) != 2 {
				t.Errorf("temp root holds %v, want only app and state", top)
			}
		})
	}
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code); w.Write([]byte("v9.9.9")) }
}

func truncated(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "100")
	w.Write([]byte("V = 'half"))
	// Returning with fewer bytes than announced makes net/http cut the connection.
}

func chunked(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < n; i += 100 {
			w.Write([]byte(strings.Repeat("x", 100)))
			w.(http.Flusher).Flush()
		}
	}
}

// A transfer that keeps moving is never cut, however long it takes in all.
func TestSlowSteadyBodySucceeds(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	e.app.Timeout = 200 * time.Millisecond
	content := strings.Repeat("# slow line\n", 20)
	srv.handle("/sample/v1.0.1_main.py", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(content)))
		for i := 0; i < len(content); i += 12 {
			w.Write([]byte(content[i : i+12]))
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond) // 20 x 50 ms = 1 s, five timeouts in all
		}
	})
	start := time.Now()
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() = %v, want a slow steady body to arrive", err)
	}
	if d := time.Since(start); d < 4*e.app.Timeout {
		t.Fatalf("the transfer took %v, which does not exercise a total longer than the timeout", d)
	}
	if got := tree(t, e.appDir)["main.py"]; got != content {
		t.Errorf("main.py = %q, want the slow content", got)
	}
}

func TestRedirects(t *testing.T) {
	// other host: 127.0.0.1 and localhost are different hosts to the client
	other := newServer(t, sample())
	srv := newServer(t, sample())
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv.handle("/sample/v1.0.1_main.py", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, otherURL+"/sample/v1.0.1_main.py", http.StatusFound)
	})
	srv.handle("/sample/v1.0.1_lib/util.py", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/sample/moved_util.py", http.StatusMovedPermanently)
	})
	srv.set("/sample/moved_util.py", "V = '1.0.1'\n")
	e := newEnv(t, srv.URL)
	e.app.User, e.app.Password, e.app.AllowInsecureAuth = "u", "p", true
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() = %v", err)
	}
	wantApp(t, e, "v1.0.1")
	for _, r := range other.requests() {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("redirect to another host carried credentials to %s", r.URL.Path)
		}
	}
	for _, r := range srv.requests() {
		if _, _, ok := r.BasicAuth(); !ok {
			t.Errorf("same-host request %s lost its credentials", r.URL.Path)
		}
	}
}

func TestHTTPSNeverRedirectsToHTTP(t *testing.T) {
	plain := newServer(t, sample())
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(tlsSrv.Close)
	e := newEnv(t, tlsSrv.URL)
	e.app.CAFile = writeCA(t, tlsSrv)
	_, err := e.agent(t).Update(context.Background())
	if err == nil || !strings.Contains(err.Error(), "https to") {
		t.Fatalf("Update() = %v, want a refused downgrade", err)
	}
	if n := len(plain.requests()); n != 0 {
		t.Errorf("plain http server got %d requests, want 0", n)
	}
}

func writeCA(t *testing.T, s *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCAFile(t *testing.T) {
	files := sample()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[r.URL.Path]; ok {
			w.Write([]byte(b))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(tlsSrv.Close)

	e := newEnv(t, tlsSrv.URL)
	_, err := e.agent(t).Update(context.Background())
	if err == nil || errors.Is(err, ErrUnreachable) {
		t.Fatalf("Update() without the CA = %v, want a certificate failure (not 'unreachable')", err)
	}
	if got := tree(t, e.appDir); len(got) != 0 {
		t.Fatalf("app dir = %v after a TLS failure, want empty", got)
	}
	e.app.CAFile = writeCA(t, tlsSrv)
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() with ca_file = %v", err)
	}
	wantApp(t, e, "v1.0.1")
}

func TestLockHeldFailsAtOnce(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	s, err := store.Open(e.app.StateDir(), e.appDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.agent(t).Update(context.Background())
	var le *store.LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("Update() with the lock held = %v, want a LockedError naming PID %d", err, os.Getpid())
	}
	go func() { time.Sleep(200 * time.Millisecond); l.Unlock() }()
	a, _ := New(e.app, Options{LockWait: 5 * time.Second})
	if _, err := a.Update(context.Background()); err != nil {
		t.Fatalf("Update() with LockWait = %v, want it to wait for the holder", err)
	}
	wantApp(t, e, "v1.0.1")
}

// A resetter that records calls, for the order of stop, switch and start.
type recorder struct {
	e      *env
	active bool
	calls  []string
}

func (r *recorder) Stop(ctx context.Context) (bool, error) {
	r.calls = append(r.calls, "stop:"+fmt.Sprint(sortedKeys(tree(nil, r.e.appDir))))
	return r.active, nil
}

func (r *recorder) Start(ctx context.Context) error {
	r.calls = append(r.calls, "start:"+installedNoT(r.e))
	return nil
}

func installedNoT(e *env) string {
	st, _ := store.ReadState(e.app.StateDir())
	return st.Version
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestResetAroundSwitch(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	rec := &recorder{e: e, active: true}
	a, _ := New(e.app, Options{Reset: rec})
	if _, err := a.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"stop:[]", "start:v1.0.1"}
	if fmt.Sprint(rec.calls) != fmt.Sprint(want) {
		t.Errorf("reset calls = %v, want %v", rec.calls, want)
	}
	// At boot the app is not running yet: nothing is started.
	srv.set("/sample/version", "v1.0.0")
	boot := &recorder{e: e, active: false}
	a, _ = New(e.app, Options{Reset: boot})
	if _, err := a.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(boot.calls) != 1 {
		t.Errorf("reset calls at boot = %v, want only the stop probe", boot.calls)
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
