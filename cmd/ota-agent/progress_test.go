package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// TestProgressLine runs `ota-agent update` on a pseudo-terminal (util-linux
// script) and on a pipe: on the terminal a progress line is drawn and
// redrawn in place for the release (\r, erase line), ending in every file
// and byte; on the pipe there is none.
func TestProgressLine(t *testing.T) {
	scriptBin, err := exec.LookPath("script")
	testenv.Require(t, "script (util-linux) for a pseudo-terminal", err == nil)
	dir := t.TempDir()
	bin := buildAgentBinary(t, dir, "ota-agent")
	srvDir := filepath.Join(dir, "srv", "p")
	if err := os.MkdirAll(srvDir, 0o755); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	for name, body := range map[string][]byte{"version": []byte("v1\n"), "v1_a.bin": big, "v1_b.txt": []byte("b\n")} {
		if err := os.WriteFile(filepath.Join(srvDir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(dir, "srv"))))
	defer srv.Close()
	args := func(n string) []string {
		if err := os.MkdirAll(filepath.Join(dir, n, "app"), 0o755); err != nil {
			t.Fatal(err)
		}
		return []string{"update", "--host", srv.URL, "--project", "p", "--files", "a.bin,b.txt",
			"--app-dir", filepath.Join(dir, n, "app"), "--state-dir", filepath.Join(dir, n, "state"),
			"--runtime-dir", filepath.Join(dir, n, "run")}
	}

	// A terminal: script gives the command a pty and copies what it writes.
	var quoted []string
	for _, a := range append([]string{bin}, args("tty")...) {
		quoted = append(quoted, "'"+a+"'")
	}
	out, err := exec.Command(scriptBin, "-qefc", strings.Join(quoted, " "), "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("update on a pty: %v\n%q", err, out)
	}
	final := regexp.MustCompile(`\r\x1b\[Kp v1: 2/2 files, 4\.0 MiB, [0-9.]+ [KMG]?i?B/s\r?\n`)
	if !final.Match(out) || !bytes.Contains(out, []byte("\r\x1b[Kp v1: 0/2 files")) {
		t.Errorf("update on a terminal: want a progress line from 0/2 to 2/2 files, 4.0 MiB, redrawn in place; got %q", out)
	}

	// A pipe: no progress line.
	cmd := exec.Command(bin, args("pipe")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("update on a pipe: %v\n%s", err, stderr.String())
	}
	if all := stdout.String() + stderr.String(); strings.Contains(all, "\r") || strings.Contains(all, "2/2 files") {
		t.Errorf("update on a pipe drew a progress line: %q", all)
	}
}
