package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// verify finds the files of a tampered app dir; update --force repairs
// them through the normal switch, in both install modes.
func TestVerifyAndRepair(t *testing.T) {
	for _, mode := range []string{"in-place", "symlink"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			srv := cliServer(t, "v1", nil)
			args := append(appArgs(srv.URL, dir), "--install", mode)
			if code, _, stderr := runCLI(t, append([]string{"update"}, args...)...); code != ExitOK {
				t.Fatalf("update = %d: %s", code, stderr)
			}
			if code, out, _ := runCLI(t, append([]string{"verify"}, args...)...); code != ExitOK || !strings.Contains(out, "p: v1, every file as installed") {
				t.Fatalf("verify after install = %d, %q; want 0", code, out)
			}
			app := filepath.Join(dir, "app")
			os.WriteFile(filepath.Join(app, "a.py"), []byte("A!"), 0o644) // same size, other content
			os.Remove(filepath.Join(app, "lib", "b.py"))
			code, out, _ := runCLI(t, append([]string{"verify"}, args...)...)
			for _, want := range []string{"2 file(s) differ", "a.py: content differs", "lib/b.py: missing", "update --force p"} {
				if !strings.Contains(out, want) {
					t.Errorf("verify of a tampered app dir: %q lacks %q", out, want)
				}
			}
			if code != ExitFailed {
				t.Errorf("verify of a tampered app dir = %d, want 1", code)
			}
			code, out, _ = runCLI(t, append([]string{"verify", "--json"}, args...)...)
			if code != ExitFailed || !strings.Contains(out, `"path": "lib/b.py"`) || !strings.Contains(out, `"problem": "missing"`) {
				t.Errorf("verify --json = %d, %q", code, out)
			}
			code, _, stderr := runCLI(t, append([]string{"update", "--force"}, args...)...)
			if mode == "symlink" {
				// The live release is the app dir itself: refused, not half-repaired.
				if code != ExitFailed || !strings.Contains(stderr, "publish the release under a new tag") {
					t.Errorf("update --force of a symlink app = %d, %q; want 1 and the refusal", code, stderr)
				}
				return
			}
			if code != ExitOK {
				t.Fatalf("update --force = %d: %s", code, stderr)
			}
			if code, out, _ := runCLI(t, append([]string{"verify"}, args...)...); code != ExitOK {
				t.Errorf("verify after update --force = %d, %q; want 0", code, out)
			}
			if b, _ := os.ReadFile(filepath.Join(app, "a.py")); string(b) != "a1" {
				t.Errorf("a.py after repair = %q, want a1", b)
			}
		})
	}
}
