package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func releaseDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "p", "v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"p/version":      "v1\n",
		"p/v1/main.py":   "print(1)\n",
		"p/v1_main.py":   "print(1)\n",
		"p/v1/.htaccess": "x",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func clientTrusting(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

func get(t *testing.T, c *http.Client, url, user, password string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestNginxTLSAuth(t *testing.T) {
	tlsFiles := NewTLS(t)
	base := StartNginx(t, NginxOptions{Root: releaseDir(t), TLS: &tlsFiles, User: "dev", Password: "pa ss:wörd"})
	c := clientTrusting(t, tlsFiles.CACert)

	tests := []struct {
		path       string
		user, pass string
		status     int
		body       string
	}{
		{"/p/version", "dev", "pa ss:wörd", 200, "v1\n"},
		{"/p/v1_main.py", "dev", "pa ss:wörd", 200, "print(1)\n"},
		{"/p/v1/main.py", "dev", "pa ss:wörd", 200, "print(1)\n"},
		{"/p/missing", "dev", "pa ss:wörd", 404, ""},
		{"/p/version", "", "", 401, ""},
		{"/p/version", "dev", "wrong", 401, ""},
		{"/p/version", "other", "pa ss:wörd", 401, ""},
	}
	for _, tt := range tests {
		url := base + tt.path
		status, body, err := get(t, c, url, tt.user, tt.pass)
		if err != nil {
			t.Errorf("Get(%q) as %q = %v, want %d", url, tt.user, err, tt.status)
			continue
		}
		if status != tt.status || (tt.status == 200 && body != tt.body) {
			t.Errorf("Get(%q) as %q = %d %q, want %d %q", url, tt.user, status, body, tt.status, tt.body)
		}
	}

	// Also by name: the certificate covers localhost.
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	byName := "https://localhost:" + u.Port() + "/p/version"
	if status, _, err := get(t, c, byName, "dev", "pa ss:wörd"); err != nil || status != 200 {
		t.Errorf("Get(%q) = %d, %v, want 200", byName, status, err)
	}

	// Without the CA the handshake fails, before any request is sent.
	plain := &http.Client{Timeout: 10 * time.Second}
	_, _, err = get(t, plain, base+"/p/version", "dev", "pa ss:wörd")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("Get(%q) without the CA = %v, want x509.UnknownAuthorityError", base+"/p/version", err)
	}
}

func TestNginxPlain(t *testing.T) {
	base := StartNginx(t, NginxOptions{Root: releaseDir(t)})
	c := &http.Client{Timeout: 10 * time.Second}
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("StartNginx = %q, want http://127.0.0.1:PORT", base)
	}
	for _, tt := range []struct {
		path   string
		status int
	}{
		{"/p/version", 200},
		{"/p/v1/main.py", 200},
		{"/p/v1/", 403}, // nginx: a directory without an index and no autoindex
		{"/p/nope", 404},
	} {
		status, _, err := get(t, c, base+tt.path, "", "")
		if err != nil || status != tt.status {
			t.Errorf("Get(%q) = %d, %v, want %d", base+tt.path, status, err, tt.status)
		}
	}
}

func TestNginxTwoAtOnce(t *testing.T) {
	// Tests may run in parallel: each nginx has its own port and files.
	dir := releaseDir(t)
	a := StartNginx(t, NginxOptions{Root: dir})
	b := StartNginx(t, NginxOptions{Root: dir})
	if a == b {
		t.Fatalf("StartNginx twice = %q and %q, want two servers", a, b)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	for _, base := range []string{a, b} {
		if status, body, err := get(t, c, base+"/p/version", "", ""); err != nil || status != 200 || body != "v1\n" {
			t.Errorf("Get(%q) = %d %q %v, want 200 %q", base+"/p/version", status, body, err, "v1\n")
		}
	}
}

func TestRequire(t *testing.T) {
	// Require(ok=true) must not stop the test; the skip and fail paths end
	// the calling goroutine, so they are checked through a fake TB.
	Require(t, "present", true)
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		f := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Require(f, "missing", false)
		}()
		<-done
		if ci == "true" && (!f.fatal || f.skip) {
			t.Errorf("Require with CI=true: fatal=%v skip=%v, want a failure", f.fatal, f.skip)
		}
		if ci == "" && (f.fatal || !f.skip) {
			t.Errorf("Require without CI: fatal=%v skip=%v, want a skip", f.fatal, f.skip)
		}
	}
}

type fakeTB struct {
	testing.TB
	fatal, skip bool
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(string, ...any) {
	f.fatal = true
	runtime.Goexit()
}

func (f *fakeTB) Skipf(string, ...any) {
	f.skip = true
	runtime.Goexit()
}
