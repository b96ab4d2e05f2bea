// Package testenv starts the real programs users deploy beside the agent, for
// tests: a throwaway CA made with openssl, and nginx serving a release tree
// with TLS and Basic auth.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxBinary is where Debian's nginx package installs the server.
const NginxBinary = "/usr/sbin/nginx"

// Require skips the test when a component it needs is missing (ok is false),
// but fails it when the environment variable CI is "true": CI installs every
// component, so a missing one there is a broken setup, not a reason to skip.
func Require(t testing.TB, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI but is not available", what)
	}
	t.Skipf("%s is not available", what)
}

// TLSFiles are PEM files: a CA certificate, and a certificate and key for
// 127.0.0.1 and localhost that it signed.
type TLSFiles struct {
	CACert, Cert, Key string
}

// NewTLS makes a throwaway CA and a server certificate for 127.0.0.1 and
// localhost with the openssl binary, in a temporary directory removed when
// the test ends. Both certificates are valid for one day.
func NewTLS(t testing.TB) TLSFiles {
	t.Helper()
	openssl := requireOpenSSL(t)
	dir := t.TempDir()
	f := TLSFiles{
		CACert: filepath.Join(dir, "ca.crt"),
		Cert:   filepath.Join(dir, "server.crt"),
		Key:    filepath.Join(dir, "server.key"),
	}
	caKey := filepath.Join(dir, "ca.key")
	csr := filepath.Join(dir, "server.csr")
	ext := filepath.Join(dir, "server.ext")
	if err := os.WriteFile(ext, []byte(strings.Join([]string{
		"basicConstraints = critical, CA:FALSE",
		"keyUsage = critical, digitalSignature",
		"extendedKeyUsage = serverAuth",
		"subjectAltName = IP:127.0.0.1, DNS:localhost",
		"subjectKeyIdentifier = hash",
		"authorityKeyIdentifier = keyid",
		"",
	}, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"}
	run(t, openssl, append([]string{"req", "-x509", "-days", "1", "-subj", "/CN=ota-agent test CA",
		"-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign",
		"-keyout", caKey, "-out", f.CACert}, ec...)...)
	run(t, openssl, append([]string{"req", "-subj", "/CN=localhost", "-keyout", f.Key, "-out", csr}, ec...)...)
	run(t, openssl, "x509", "-req", "-in", csr, "-CA", f.CACert, "-CAkey", caKey, "-set_serial", "2",
		"-days", "1", "-extfile", ext, "-out", f.Cert)
	return f
}

// NginxOptions configures StartNginx.
type NginxOptions struct {
	Root string    // directory served at /
	TLS  *TLSFiles // HTTPS when set, else plain HTTP
	// User and Password, when User is set, turn on auth_basic (realm
	// "ota-agent") for every request.
	User, Password string
}

// StartNginx runs nginx in the foreground, as a child of the test, on a free
// port of 127.0.0.1, serving o.Root read only (no directory listings). Its
// configuration, logs, pid file and temp paths live in a temporary
// directory, so it never touches /etc/nginx, /var/log/nginx or
// /var/lib/nginx, nor a system nginx. It is stopped when the test ends; its
// error log is shown if the test failed. StartNginx returns the base URL,
// "http(s)://127.0.0.1:PORT", without a trailing slash.
func StartNginx(t testing.TB, o NginxOptions) string {
	t.Helper()
	bin := NginxBinary
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("nginx")
		Require(t, "nginx ("+NginxBinary+")", lerr == nil)
		bin = p
	}
	if o.Root == "" {
		t.Fatal("StartNginx: no Root")
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	var htpasswd string
	if o.User != "" {
		htpasswd = filepath.Join(prefix, "htpasswd")
		writeHtpasswd(t, htpasswd, o.User, o.Password)
	}
	// The port is found free, then bound by nginx: another process may take
	// it in between, so a bind failure is retried on a new port.
	var lastErr error
	for range 5 {
		port := freePort(t)
		url, err := startNginx(t, bin, prefix, root, htpasswd, port, o.TLS)
		if err == nil {
			return url
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("StartNginx: %v", lastErr)
	return ""
}

var errAddrInUse = errors.New("address already in use")

func startNginx(t testing.TB, bin, prefix, root, htpasswd string, port int, tlsFiles *TLSFiles) (string, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	errorLog := filepath.Join(prefix, "error.log")
	os.Remove(errorLog) // left by a failed attempt
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(prefix, root, htpasswd, addr, tlsFiles)), 0o600); err != nil {
		return "", err
	}
	// -e: errors found before the configuration is read go there too.
	cmd := exec.Command(bin, "-p", prefix, "-c", conf, "-e", errorLog)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(errorLog)
			msg := fmt.Errorf("nginx exited (%v): %s%s", err, out.Bytes(), log)
			if bytes.Contains(log, []byte("Address already in use")) {
				return "", fmt.Errorf("%w: %v", errAddrInUse, msg)
			}
			return "", msg
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stopNginx(cmd, exited)
			return "", fmt.Errorf("nginx did not listen on %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		stopNginx(cmd, exited)
		if t.Failed() {
			log, _ := os.ReadFile(errorLog)
			t.Logf("nginx error log:\n%s", log)
		}
	})
	scheme := "http"
	if tlsFiles != nil {
		scheme = "https"
	}
	return scheme + "://" + addr, nil
}

// stopNginx asks nginx to stop at once (SIGTERM), and kills it if it has not
// within 5 s.
func stopNginx(cmd *exec.Cmd, exited <-chan error) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

func nginxConf(prefix, root, htpasswd, addr string, tlsFiles *TLSFiles) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	q := func(s string) string { return quote(filepath.Join(prefix, s)) }
	p("daemon off;")
	// One process: nothing to hand files to another user, and a single pid
	// to stop.
	p("master_process off;")
	if os.Geteuid() == 0 {
		p("user root;")
	}
	p("pid %s;", q("nginx.pid"))
	p("error_log %s info;", q("error.log"))
	p("events { worker_connections 64; }")
	p("http {")
	p("  access_log %s;", q("access.log"))
	for _, tmp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		p("  %s_temp_path %s;", tmp, q(tmp+"_temp"))
	}
	p("  default_type application/octet-stream;")
	p("  sendfile on;")
	p("  server {")
	if tlsFiles != nil {
		p("    listen %s ssl;", addr)
		p("    ssl_certificate %s;", quote(tlsFiles.Cert))
		p("    ssl_certificate_key %s;", quote(tlsFiles.Key))
	} else {
		p("    listen %s;", addr)
	}
	p("    server_name localhost;")
	p("    root %s;", quote(root))
	p("    autoindex off;")
	if htpasswd != "" {
		p(`    auth_basic "ota-agent";`)
		p("    auth_basic_user_file %s;", quote(htpasswd))
	}
	p("  }")
	p("}")
	return b.String()
}

// quote makes s one nginx configuration token, whatever it contains.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// writeHtpasswd writes an apr1 (Apache MD5) entry, which nginx's
// auth_basic_user_file reads; the password goes to openssl on stdin so it is
// not in any process list.
func writeHtpasswd(t testing.TB, name, user, password string) {
	t.Helper()
	if strings.ContainsAny(user, ":\n") || strings.Contains(password, "\n") {
		t.Fatalf("StartNginx: user %q or its password cannot go into an htpasswd file", user)
	}
	cmd := exec.Command(requireOpenSSL(t), "passwd", "-apr1", "-stdin")
	cmd.Stdin = strings.NewReader(password + "\n")
	hash, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl passwd: %v", err)
	}
	line := user + ":" + strings.TrimSpace(string(hash)) + "\n"
	if err := os.WriteFile(name, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

func requireOpenSSL(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	Require(t, "openssl", err == nil)
	return p
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
