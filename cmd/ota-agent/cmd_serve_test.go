package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// syncBuffer is written by the server goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeUsage(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"-h"}, ExitOK},
		{[]string{}, ExitUsage},
		{[]string{dir, dir}, ExitUsage},
		{[]string{dir, "--nope"}, ExitUsage},
		{[]string{dir, "--user", "u"}, ExitUsage},
		{[]string{dir, "--password-file", pw}, ExitUsage},
		{[]string{dir, "--tls-cert", pw}, ExitUsage},
		{[]string{dir, "--tls-key", pw}, ExitUsage},
		{[]string{dir, "--log-level", "loud"}, ExitUsage},
		{[]string{dir, "--user", "u", "--password-file", filepath.Join(dir, "missing")}, ExitUsage},
		{[]string{dir, "--user", "u", "--password-file", empty}, ExitUsage},
		{[]string{filepath.Join(dir, "missing")}, ExitUsage},
		{[]string{dir, "--tls-cert", pw, "--tls-key", pw}, ExitUsage},
		{[]string{dir, "--addr", "256.0.0.1:1"}, ExitFailed},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		g := &globals{stdout: io.Discard, stderr: &stderr}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code := g.exitCode(g.dispatch(ctx, append([]string{"serve"}, tt.args...)))
		cancel()
		if code != tt.code {
			t.Errorf("serve %q = %d, want %d\n%s", tt.args, code, tt.code, stderr.String())
		}
		if strings.Contains(stderr.String(), "secret") {
			t.Errorf("serve %q printed the password:\n%s", tt.args, stderr.String())
		}
	}
}

func TestServeRuns(t *testing.T) {
	tl := testenv.NewTLS(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "p"), 0o755)
	os.WriteFile(filepath.Join(dir, "p", "version"), []byte("v2\n"), 0o644)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\r\n"), 0o600)

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"https", []string{"--addr", "127.0.0.1:0", dir, "--user", "dev", "--password-file", pw, "--tls-cert", tl.Cert, "--tls-key", tl.Key, "--log-level", "debug"}},
		{"http", []string{dir, "--addr", "127.0.0.1:0", "--user", "dev", "--password-file", pw}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr syncBuffer
			g := &globals{stdout: io.Discard, stderr: &stderr}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- g.dispatch(ctx, append([]string{"serve"}, tc.args...)) }()
			re := regexp.MustCompile(`serving (\S+) on (https?://\S+)\n`)
			var base string
			for deadline := time.Now().Add(5 * time.Second); base == ""; {
				if m := re.FindStringSubmatch(stderr.String()); m != nil {
					if m[1] != dir {
						t.Errorf("serving %q, want %q", m[1], dir)
					}
					base = m[2]
				}
				if time.Now().After(deadline) {
					t.Fatalf("no serving line:\n%s", stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			pem, _ := os.ReadFile(tl.CACert)
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			req, _ := http.NewRequest("GET", base+"/p/version", nil)
			req.SetBasicAuth("dev", "s3cret")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("Get(%q) = %v", req.URL, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "v2\n" {
				t.Errorf("Get(%q) = %d %q, want 200 %q", req.URL, resp.StatusCode, body, "v2\n")
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve after cancel = %v, want nil", err)
				}
			case <-time.After(7 * time.Second):
				t.Fatal("serve did not return after cancel")
			}
			out := stderr.String()
			t.Logf("stderr:\n%s", out)
			if strings.Contains(out, "s3cret") {
				t.Errorf("stderr has the password")
			}
			warned := strings.Contains(out, "plain http")
			if warned != (tc.name == "http") {
				t.Errorf("plain-http warning = %v, want %v", warned, tc.name == "http")
			}
		})
	}
}
