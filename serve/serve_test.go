package serve

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// release writes a served tree with both layouts, dotfiles, a directory, and
// a symlink pointing at a secret outside the tree. It returns the tree.
func release(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	outside := t.TempDir()
	files := map[string]string{
		"p/version":             "v1.0.1\n",
		"p/v1.0.1_main.py":      "print('prefix')\n",
		"p/v1.0.1/main.py":      "print('subdir')\n",
		"p/v1.0.1/lib/util.py":  "X = 1\n",
		"p/.htpasswd":           "user:secret\n",
		"p/.git/config":         "[core]\n",
		"p/v1.0.1/.hidden/a.py": "hidden\n",
		"p/v1.0.1/lib/.env":     "SUBDIR=1\n",
		"p/v1.0.1_lib/.env":     "PREFIX=1\n",
		"p/v1.0.1_.env":         "TOP=1\n",
		".git/config":           "[core]\n",
	}
	for name, body := range files {
		writeFile(t, filepath.Join(dir, name), body)
	}
	writeFile(t, filepath.Join(outside, "secret.txt"), "TOP SECRET\n")
	for link, target := range map[string]string{
		"p/escape.txt":  filepath.Join(outside, "secret.txt"),
		"p/escape-rel":  "../../" + filepath.Base(outside) + "/secret.txt",
		"p/escape-dir":  outside,
		"p/current.txt": "version", // stays inside: allowed
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Skipf("symlinks unavailable: %v", err)
		}
	}
	return dir
}

func writeFile(t *testing.T, name, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func startServer(t *testing.T, dir string, opts Options) *httptest.Server {
	t.Helper()
	h, err := Handler(dir, opts)
	if err != nil {
		t.Fatalf("Handler(%q) = %v", dir, err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// raw sends target as written (no client-side cleaning or re-encoding) and
// returns the response with its body read.
func raw(t *testing.T, addr, method, target string, header http.Header) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	req.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n")
	header.Write(&req)
	req.WriteString("\r\n")
	if _, err := c.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return resp, string(body)
}

func TestServe(t *testing.T) {
	srv := startServer(t, release(t), Options{})
	addr := srv.Listener.Addr().String()
	tests := []struct {
		target string
		status int
		body   string // checked when status is 200
	}{
		{"/p/version", 200, "v1.0.1\n"},
		{"/p/v1.0.1_main.py", 200, "print('prefix')\n"},
		{"/p/v1.0.1/main.py", 200, "print('subdir')\n"},
		{"/p/v1.0.1/lib/util.py", 200, "X = 1\n"},
		{"/p/current.txt", 200, "v1.0.1\n"},
		{"/p/v1.0.1%2fmain.py", 200, "print('subdir')\n"},
		{"/p/missing", 404, ""},
		{"/", 404, ""},
		{"/p", 404, ""},
		{"/p/", 404, ""},
		{"/p/v1.0.1", 404, ""},
		{"/p/v1.0.1/", 404, ""},
		{"/p/version/", 404, ""},
		{"/p//version", 404, ""},
		{"/p/./version", 404, ""},
		{"/p/.htpasswd", 404, ""},
		{"/p/.git/config", 404, ""},
		{"/p/v1.0.1/.hidden/a.py", 200, "hidden\n"}, // a release file, as wire.CheckPath allows
		{"/p/v1.0.1/lib/.env", 200, "SUBDIR=1\n"},
		{"/p/v1.0.1_lib/.env", 200, "PREFIX=1\n"},
		{"/p/v1.0.1_.env", 200, "TOP=1\n"},
		{"/.git/config", 404, ""},
		{"/p/%2ehtpasswd", 404, ""},
		{"/p/escape.txt", 404, ""},
		{"/p/escape-rel", 404, ""},
		{"/p/escape-dir/secret.txt", 404, ""},
		{"/../secret.txt", 404, ""},
		{"/p/../p/version", 404, ""},
		{"/p/%2e%2e/p/version", 404, ""},
		{"/%2e%2e/%2e%2e/etc/passwd", 404, ""},
		{"/p/..%2f..%2fetc%2fpasswd", 404, ""},
		{"/../../../../etc/passwd", 404, ""},
		{"//etc/passwd", 404, ""},
		{"/etc/passwd", 404, ""},
		{"/p/version%00.txt", 404, ""},
		{"/p/..\\..\\etc\\passwd", 404, ""},
	}
	for _, tt := range tests {
		resp, body := raw(t, addr, "GET", tt.target, nil)
		if resp.StatusCode != tt.status {
			t.Errorf("Get(%q) = %d, want %d", tt.target, resp.StatusCode, tt.status)
			continue
		}
		if tt.status == 200 && body != tt.body {
			t.Errorf("Get(%q) body = %q, want %q", tt.target, body, tt.body)
		}
		for _, leak := range []string{"TOP SECRET", "root:", "secret", "[core]"} {
			if tt.status != 200 && strings.Contains(body, leak) {
				t.Errorf("Get(%q) body = %q, leaks %q", tt.target, body, leak)
			}
		}
		if resp.StatusCode == 200 && resp.ContentLength != int64(len(tt.body)) {
			t.Errorf("Get(%q) Content-Length = %d, want %d", tt.target, resp.ContentLength, len(tt.body))
		}
	}
}

func TestServeAbsoluteFormTarget(t *testing.T) {
	// A request target in absolute form must not select a file by its
	// filesystem path.
	srv := startServer(t, release(t), Options{})
	addr := srv.Listener.Addr().String()
	for _, target := range []string{"http://" + addr + "/p/version", "http://" + addr + "/etc/passwd"} {
		resp, body := raw(t, addr, "GET", target, nil)
		want := 200
		if strings.HasSuffix(target, "passwd") {
			want = 404
		}
		if resp.StatusCode != want {
			t.Errorf("Get(%q) = %d %q, want %d", target, resp.StatusCode, body, want)
		}
	}
}

func TestServeConditional(t *testing.T) {
	dir := release(t)
	srv := startServer(t, dir, Options{})
	url := srv.URL + "/p/version"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	sum := sha256.Sum256([]byte("v1.0.1\n"))
	if want := `"` + hex.EncodeToString(sum[:]) + `"`; etag != want {
		t.Fatalf("Get(%q) ETag = %q, want %q", url, etag, want)
	}
	lastMod := resp.Header.Get("Last-Modified")
	if lastMod == "" {
		t.Fatalf("Get(%q) Last-Modified missing", url)
	}

	tests := []struct {
		name   string
		header map[string]string
		status int
	}{
		{"etag", map[string]string{"If-None-Match": etag}, 304},
		{"etag in list", map[string]string{"If-None-Match": `"x", ` + etag}, 304},
		{"star", map[string]string{"If-None-Match": "*"}, 304},
		{"other etag", map[string]string{"If-None-Match": `"0000"`}, 200},
		{"if-modified-since", map[string]string{"If-Modified-Since": lastMod}, 304},
		{"modified since", map[string]string{"If-Modified-Since": "Mon, 02 Jan 2006 15:04:05 GMT"}, 200},
		// If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
		{"etag mismatch beats date", map[string]string{"If-None-Match": `"0000"`, "If-Modified-Since": lastMod}, 200},
		{"range", map[string]string{"Range": "bytes=0-1"}, 206},
		{"if-range etag", map[string]string{"Range": "bytes=0-1", "If-Range": etag}, 206},
		{"if-range stale", map[string]string{"Range": "bytes=0-1", "If-Range": `"0000"`}, 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range tt.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: Get(%q) = %d, want %d", tt.name, url, resp.StatusCode, tt.status)
		}
		if tt.status == 304 && (len(body) != 0 || resp.Header.Get("ETag") != etag) {
			t.Errorf("%s: 304 body = %q ETag = %q, want empty and %q", tt.name, body, resp.Header.Get("ETag"), etag)
		}
		if tt.status == 206 && string(body) != "v1" {
			t.Errorf("%s: 206 body = %q, want %q", tt.name, body, "v1")
		}
	}

	// A new release in place changes the ETag, even within the same second.
	writeFile(t, filepath.Join(dir, "p/version"), "v1.0.2\n")
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "v1.0.2\n" || resp.Header.Get("ETag") == etag {
		t.Errorf("after rewrite: Get(%q) = %d %q ETag %q, want 200 %q and a new ETag",
			url, resp.StatusCode, body, resp.Header.Get("ETag"), "v1.0.2\n")
	}
}

func TestServeAuth(t *testing.T) {
	var logs bytes.Buffer
	logger := zerolog.New(&logs).Level(zerolog.DebugLevel)
	srv := startServer(t, release(t), Options{User: "dev", Password: "s3cr3t-pw", Log: logger})
	url := srv.URL + "/p/version"
	tests := []struct {
		name       string
		user, pass string
		set        bool
		status     int
	}{
		{"none", "", "", false, 401},
		{"wrong password", "dev", "nope", true, 401},
		{"wrong user", "root", "s3cr3t-pw", true, 401},
		{"prefix of password", "dev", "s3cr3t", true, 401},
		{"empty", "", "", true, 401},
		{"right", "dev", "s3cr3t-pw", true, 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", url, nil)
		if tt.set {
			req.SetBasicAuth(tt.user, tt.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: Get(%q) = %d, want %d", tt.name, url, resp.StatusCode, tt.status)
		}
		if tt.status == 401 {
			if got, want := resp.Header.Get("WWW-Authenticate"), `Basic realm="ota-agent"`; got != want {
				t.Errorf("%s: WWW-Authenticate = %q, want %q", tt.name, got, want)
			}
			if strings.Contains(string(body), "v1.0.1") {
				t.Errorf("%s: 401 body leaks the file: %q", tt.name, body)
			}
		}
	}
	// Unauthenticated clients learn nothing about what exists or is allowed.
	for _, m := range []string{"GET /p/missing", "POST /p/version", "GET /../x"} {
		method, target, _ := strings.Cut(m, " ")
		if resp, _ := raw(t, srv.Listener.Addr().String(), method, target, nil); resp.StatusCode != 401 {
			t.Errorf("%s %s without auth = %d, want 401", method, target, resp.StatusCode)
		}
	}

	if strings.Contains(logs.String(), "s3cr3t") || strings.Contains(logs.String(), "Authorization") {
		t.Errorf("log leaks credentials:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"status":401`) || !strings.Contains(logs.String(), `"path":"/p/version"`) {
		t.Errorf("log lacks request events:\n%s", logs.String())
	}
}

func TestServeMethods(t *testing.T) {
	srv := startServer(t, release(t), Options{})
	addr := srv.Listener.Addr().String()

	resp, body := raw(t, addr, "HEAD", "/p/v1.0.1_main.py", nil)
	if resp.StatusCode != 200 || body != "" {
		t.Errorf("Head(/p/v1.0.1_main.py) = %d %q, want 200 and no body", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("Content-Length"), "16"; got != want {
		t.Errorf("Head(/p/v1.0.1_main.py) Content-Length = %q, want %q", got, want)
	}
	if resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
		t.Errorf("Head(/p/v1.0.1_main.py) headers = %v, want ETag and Last-Modified", resp.Header)
	}

	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"} {
		resp, _ := raw(t, addr, m, "/p/version", nil)
		if resp.StatusCode != 405 {
			t.Errorf("%s(/p/version) = %d, want 405", m, resp.StatusCode)
		}
		if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
			t.Errorf("%s(/p/version) Allow = %q, want %q", m, got, "GET, HEAD")
		}
	}
}

func TestServeSpecialFile(t *testing.T) {
	mkfifo, err := exec.LookPath("mkfifo")
	if err != nil {
		t.Skip("no mkfifo")
	}
	dir := release(t)
	if out, err := exec.Command(mkfifo, filepath.Join(dir, "p/fifo")).CombinedOutput(); err != nil {
		t.Skipf("mkfifo: %v %s", err, out)
	}
	srv := startServer(t, dir, Options{})
	// A FIFO without a writer would block an open for reading forever.
	resp, _ := raw(t, srv.Listener.Addr().String(), "GET", "/p/fifo", nil)
	if resp.StatusCode != 404 {
		t.Errorf("Get(/p/fifo) = %d, want 404", resp.StatusCode)
	}
}

func TestServeTLS(t *testing.T) {
	h, err := Handler(release(t), Options{User: "dev", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	t.Cleanup(srv.Close)

	req, _ := http.NewRequest("GET", srv.URL+"/p/version", nil)
	req.SetBasicAuth("dev", "pw")
	resp, err := srv.Client().Do(req) // trusts the server's certificate
	if err != nil {
		t.Fatalf("Get(%q) = %v, want success", req.URL, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "v1.0.1\n" {
		t.Errorf("Get(%q) = %d %q, want 200 %q", req.URL, resp.StatusCode, body, "v1.0.1\n")
	}

	// A client without the certificate in its pool refuses the server.
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("Get(%q) with system roots = %d, want a certificate error", req.URL, resp.StatusCode)
	}
}

func TestHandlerErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	writeFile(t, file, "x")
	tests := []struct {
		name string
		dir  string
		opts Options
	}{
		{"missing dir", filepath.Join(dir, "nope"), Options{}},
		{"not a dir", file, Options{}},
		{"password without user", dir, Options{Password: "pw"}},
		{"colon in user", dir, Options{User: "a:b", Password: "pw"}},
	}
	for _, tt := range tests {
		if _, err := Handler(tt.dir, tt.opts); err == nil {
			t.Errorf("%s: Handler(%q) = nil error, want an error", tt.name, tt.dir)
		}
	}
}

func TestRelPath(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"/p/version", "p/version", true},
		{"/p/v1/lib/util.py", "p/v1/lib/util.py", true},
		{"/p/v1..2_x", "p/v1..2_x", true},
		{"", "", false},
		{"/", "", false},
		{"p/version", "", false},
		{"/p/", "", false},
		{"/p//x", "", false},
		{"/./p", "", false},
		{"/p/..", "", false},
		{"/p/.env", "", false},
		{"/.env", "", false},
		{"/p/v1/.env", "p/v1/.env", true},
		{"/p/v1_lib/.env", "p/v1_lib/.env", true},
		{"/p/a\x01b", "", false},
		{"/p/a\\b", "", false},
		{"/p/a\x00b", "", false},
	}
	for _, tt := range tests {
		got, ok := relPath(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("relPath(%q) = %q, %v, want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// A version file replaced by one of the same size and mtime (cp -p, rsync
// -a, a reproducible-build tarball) gets a new ETag on the next request,
// whether the cached hash is long settled or only just computed, while an
// unchanged file is hashed once.
func TestServeETagReplaced(t *testing.T) {
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	replace := map[string]func(t *testing.T, path, body string){
		"renamed over": func(t *testing.T, path, body string) {
			tmp := path + ".new"
			writeFile(t, tmp, body)
			chtimes(t, tmp, mtime)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		},
		"rewritten in place, mtime set back": func(t *testing.T, path, body string) {
			writeFile(t, path, body)
			chtimes(t, path, mtime)
		},
		"cp -p": func(t *testing.T, path, body string) {
			cp, err := exec.LookPath("cp")
			if err != nil {
				t.Skip("no cp")
			}
			src := filepath.Join(t.TempDir(), "version")
			writeFile(t, src, body)
			chtimes(t, src, mtime)
			if out, err := exec.Command(cp, "-p", src, path).CombinedOutput(); err != nil {
				t.Fatalf("cp -p: %v: %s", err, out)
			}
		},
	}
	for name, fn := range replace {
		for _, settled := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, settled %v", name, settled), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				path := filepath.Join(dir, "p", "version")
				writeFile(t, path, "v1.0.1\n")
				chtimes(t, path, mtime)
				h, err := Handler(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				hh := h.(*handler)
				if settled {
					// As in a daemon up for days: the hash is trusted.
					hh.racy = 10 * time.Millisecond
					time.Sleep(50 * time.Millisecond)
				}
				srv := httptest.NewServer(h)
				t.Cleanup(srv.Close)
				url := srv.URL + "/p/version"

				resp, body := get(t, url, nil)
				etag, lastMod := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
				if resp.StatusCode != 200 || body != "v1.0.1\n" || etag != sha(body) {
					t.Fatalf("Get(%q) = %d %q ETag %s, want 200 v1.0.1", url, resp.StatusCode, body, etag)
				}
				cond := map[string]string{"If-None-Match": etag, "If-Modified-Since": lastMod}
				if resp, _ := get(t, url, cond); resp.StatusCode != 304 {
					t.Fatalf("conditional Get(%q) before the change = %d, want 304", url, resp.StatusCode)
				}
				if settled && hh.hashes.Load() != 1 {
					t.Errorf("an unchanged, settled file was hashed %d times, want 1", hh.hashes.Load())
				}

				fn(t, path, "v1.0.2\n")
				fi, err := os.Stat(path)
				if err != nil || fi.Size() != 7 || !fi.ModTime().Equal(mtime) {
					t.Fatalf("replaced version: %v, %v; want the same size and mtime", fi, err)
				}
				resp, body = get(t, url, cond)
				if resp.StatusCode != 200 || body != "v1.0.2\n" || resp.Header.Get("ETag") != sha(body) {
					t.Errorf("conditional Get(%q) after the change = %d %q ETag %s, want 200 v1.0.2 and its tag",
						url, resp.StatusCode, body, resp.Header.Get("ETag"))
				}
				if resp.Header.Get("Last-Modified") != lastMod {
					t.Errorf("Last-Modified = %q, want %q as before (same mtime)", resp.Header.Get("Last-Modified"), lastMod)
				}
				// The new tag is cached as the old one was: a 304 for it.
				if resp, _ := get(t, url, map[string]string{"If-None-Match": sha("v1.0.2\n")}); resp.StatusCode != 304 {
					t.Errorf("conditional Get(%q) with the new tag = %d, want 304", url, resp.StatusCode)
				}
			})
		}
	}
}

func chtimes(t *testing.T, path string, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func sha(body string) string {
	sum := sha256.Sum256([]byte(body))
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// get sends a GET with header and returns the response with its body read.
func get(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}
