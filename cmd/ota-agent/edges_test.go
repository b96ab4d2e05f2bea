package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A server that trickles one byte every 200 ms never trips the 1 s stall
// timeout; min_rate cuts it within its window: exit 75, nothing installed.
func TestTrickleExits75(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	if code, _, errs := runCLI(t, append([]string{"update"}, appArgs(srv.URL, dir)...)...); code != ExitOK {
		t.Fatalf("installing v1: exit %d: %s", code, errs)
	}
	trickle := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/p/version":
			fmt.Fprint(w, "v2\n")
		case "/p/v2_a.py":
			fmt.Fprint(w, "a2")
		case "/p/v2_manifest.json":
			http.NotFound(w, r) // no manifest: the seed's layout
		default:
			w.Header().Set("Content-Length", "1000")
			for range 1000 {
				if _, err := w.Write([]byte("#")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}))
	t.Cleanup(trickle.Close)
	const window = 2 * time.Second
	args := append([]string{"update"}, appArgs(trickle.URL, dir)...)
	args = append(args, "--min-rate", "1KiB", "--min-rate-window", window.String())
	start := time.Now()
	code, _, stderr := runCLI(t, args...)
	took := time.Since(start)
	t.Logf("exit %d after %v: %s", code, took.Round(time.Millisecond), stderr)
	if code != ExitTempFail || !strings.Contains(stderr, "too slow") || !strings.Contains(stderr, "/p/v2_lib/b.py") {
		t.Fatalf("update against a trickle = exit %d, stderr %q; want 75 naming the file and the slow transfer", code, stderr)
	}
	if took < window || took > window*11/10+time.Second {
		t.Errorf("update against a trickle took %v, want about the window (%v)", took, window)
	}
	if got := readTree(filepath.Join(dir, "app")); got != "a.py=a1;lib/b.py=b1;" {
		t.Errorf("app dir = %q, want v1 as it was", got)
	}
}

// An interval below the minimum is a configuration error naming the key,
// from the config file (global or per app) and from --interval.
func TestIntervalBelowMinimum(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	app := []string{
		`[[app]]`,
		`host = "` + srv.URL + `"`,
		`project = "p"`,
		`files = ["a.py"]`,
		`app_dir = "` + filepath.Join(dir, "app") + `"`,
		`state_dir = "` + filepath.Join(dir, "state") + `"`,
	}
	tests := []struct {
		name   string
		config []string
		args   []string
		key    string
	}{
		{"global interval", append([]string{`interval = "1ns"`}, app...), []string{"check"}, "interval (line 1)"},
		{"app interval", append(app, `interval = "1ns"`), []string{"run"}, "interval (line 7)"},
		{"--interval", app, []string{"run", "--interval", "1ns"}, "--interval"},
		{"--interval 0", app, []string{"run", "--interval", "0"}, "--interval"},
		{"--interval with app flags", nil, append([]string{"run", "--interval", "500ms"}, appArgs(srv.URL, dir)...), "--interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.config != nil {
				args = append(args, "--config", writeConfig(t, tt.config...), "--runtime-dir", filepath.Join(dir, "run"))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, args, &stdout, &stderr)
			if code != ExitUsage || !strings.Contains(stderr.String(), tt.key) || !strings.Contains(stderr.String(), "below the minimum of 1s") {
				t.Errorf("ota-agent %v = exit %d, stderr %q; want 2 naming %s and the minimum", args, code, stderr.String(), tt.key)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer for a daemon's several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A password in a config file every user can read gets one warning per
// run, naming the file and the fixes, from every command that reads the
// file, the daemon's reloads included; a 0600 or 0640 file gets none.
func TestPasswordInReadableConfigWarns(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	config := func(mode os.FileMode, password bool) string {
		lines := []string{
			`[[app]]`,
			`host = "` + srv.URL + `"`,
			`project = "p"`,
			`files = ["a.py"]`,
			`app_dir = "` + filepath.Join(dir, "app") + `"`,
			`state_dir = "` + filepath.Join(dir, "state") + `"`,
			`user = "u"`,
			`allow_insecure_auth = true`,
		}
		if password {
			lines = append(lines, `password = "hunter2"`)
		} else {
			pw := filepath.Join(dir, "pw")
			if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, `password_file = "`+pw+`"`)
		}
		path := writeConfig(t, lines...)
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	const warning = "is readable by every user of the board"
	tests := []struct {
		name     string
		mode     os.FileMode
		password bool
		warn     bool
	}{
		{"0644 with password", 0o644, true, true},
		{"0604 with password", 0o604, true, true},
		{"0600 with password", 0o600, true, false},
		{"0640 with password", 0o640, true, false},
		{"0644 with password_file", 0o644, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := config(tt.mode, tt.password)
			for _, cmd := range []string{"update", "check", "status", "recover"} {
				code, _, stderr := runCLI(t, cmd, "--config", path, "--runtime-dir", filepath.Join(dir, "run"))
				if code != ExitOK {
					t.Fatalf("ota-agent %s = exit %d: %s", cmd, code, stderr)
				}
				n := strings.Count(stderr, warning)
				if !tt.warn {
					if n != 0 {
						t.Errorf("ota-agent %s with a %04o config: stderr %q, want no warning", cmd, tt.mode, stderr)
					}
					continue
				}
				if n != 1 {
					t.Errorf("ota-agent %s: %d warnings in stderr %q, want 1", cmd, n, stderr)
				}
				for _, want := range []string{path, "app p", "chmod 0600 " + path, "password_file", "LoadCredential="} {
					if !strings.Contains(stderr, want) {
						t.Errorf("ota-agent %s: stderr %q, want it to name %q", cmd, stderr, want)
					}
				}
				if strings.Contains(stderr, "hunter2") {
					t.Errorf("ota-agent %s: stderr shows the password: %q", cmd, stderr)
				}
			}
		})
	}

	t.Run("daemon with a reload", func(t *testing.T) {
		path := config(0o644, true)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stderr lockedBuffer
		done := make(chan int)
		go func() {
			done <- run(ctx, []string{"run", "--config", path, "--runtime-dir", filepath.Join(dir, "run"), "--interval", "1h"}, &bytes.Buffer{}, &stderr)
		}()
		waitFor(t, &stderr, "daemon running")
		// The daemon has its SIGHUP handler: this reaches it, not the default action.
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, &stderr, "configuration reloaded")
		cancel()
		if code := <-done; code != ExitOK {
			t.Errorf("run = exit %d, want 0; stderr %s", code, stderr.String())
		}
		if n := strings.Count(stderr.String(), warning); n != 1 {
			t.Errorf("daemon started and reloaded: %d warnings, want 1; stderr %s", n, stderr.String())
		}
	})
}

// waitFor waits up to 10 s for s to appear in b.
func waitFor(t *testing.T, b *lockedBuffer, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(b.String(), s); {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in stderr after 10s: %s", s, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
