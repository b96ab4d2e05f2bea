package packaging_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// checkHTTPS runs a release binary (built without net/http's HTTP/2) over
// https both ways: `update` from a server that offers HTTP/2 (ALPN settles
// on HTTP/1.1), and `serve --tls-cert` answering a client that asks for
// HTTP/2 (it gets HTTP/1.1).
func checkHTTPS(t *testing.T, bin string) {
	t.Helper()
	certs := testenv.NewTLS(t)
	pair, err := tls.LoadX509KeyPair(certs.Cert, certs.Key)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(certs.CACert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)

	releases := t.TempDir()
	for name, body := range map[string]string{"sample/version": "v1\n", "sample/v1_main.py": "print('v1')\n"} {
		p := filepath.Join(releases, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// update from an HTTP/2 server.
	var mu sync.Mutex
	var protos []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos = append(protos, r.Proto)
		mu.Unlock()
		http.FileServer(http.Dir(releases)).ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	host := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) // the certificate's name
	dir := t.TempDir()
	cmd := exec.Command(bin, "update", "--host", host, "--project", "sample", "--files", "main.py",
		"--app-dir", filepath.Join(dir, "app"), "--state-dir", filepath.Join(dir, "state"),
		"--runtime-dir", filepath.Join(dir, "run"), "--ca-file", certs.CACert)
	if err := os.Mkdir(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release binary: update over https: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "app", "main.py")); err != nil || string(b) != "print('v1')\n" {
		t.Errorf("after update over https: main.py = %q (%v)", b, err)
	}
	mu.Lock()
	if len(protos) == 0 {
		t.Errorf("update over https: the server saw no request")
	}
	for _, p := range protos {
		if p != "HTTP/1.1" {
			t.Errorf("update over https: a request came as %s, want HTTP/1.1", p)
		}
	}
	mu.Unlock()

	// serve over https, asked for HTTP/2.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	serve := exec.Command(bin, "serve", releases, "--addr", addr, "--tls-cert", certs.Cert, "--tls-key", certs.Key)
	var serveLog strings.Builder
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		serve.Process.Kill()
		serve.Wait()
	}()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}
	url := "https://" + strings.Replace(addr, "127.0.0.1", "localhost", 1) + "/sample/version"
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err = client.Get(url)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("release binary: serve over https: GET %s: %v\n%s", url, err, serveLog.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "v1\n" || resp.Proto != "HTTP/1.1" {
		t.Errorf("release binary: serve over https: GET %s = %s %s %q, want HTTP/1.1 200 \"v1\\n\"", url, resp.Proto, resp.Status, body)
	}
}
