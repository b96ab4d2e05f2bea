package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ota-agent/ota-agent/serve"
)

// A release file with a dot component (lib/.env) passes the config check,
// so `ota-agent serve` serves it: an update from it installs the file, in
// both layouts. The server's own dot files stay out of reach.
func TestServeReleaseWithDotFile(t *testing.T) {
	for _, prefix := range []bool{true, false} {
		name := map[bool]string{true: "prefix", false: "subdir"}[prefix]
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			files := map[string]string{"main.py": "print(1)\n", "lib/.env": "KEY=1\n", ".flaskenv": "APP=main\n"}
			write := func(rel, body string) {
				p := filepath.Join(root, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("p/version", "v1\n")
			write("p/.htpasswd", "user:secret\n")
			for f, body := range files {
				if prefix {
					write("p/v1_"+f, body)
				} else {
					write("p/v1/"+f, body)
				}
			}
			h, err := serve.Handler(root, serve.Options{})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)

			dir := t.TempDir()
			args := []string{"update", "--host", srv.URL, "--project", "p", "--files", "main.py,lib/.env,.flaskenv",
				"--app-dir", filepath.Join(dir, "app"), "--state-dir", filepath.Join(dir, "state"),
				"--runtime-dir", filepath.Join(dir, "run"), "--timeout", "5s"}
			if !prefix {
				args = append(args, "--no-version-prefix")
			}
			if code, _, stderr := runCLI(t, args...); code != ExitOK {
				t.Fatalf("update = exit %d, stderr %q; want 0", code, stderr)
			}
			for f, want := range files {
				if got, err := os.ReadFile(filepath.Join(dir, "app", f)); err != nil || string(got) != want {
					t.Errorf("app/%s = %q, %v; want %q", f, got, err, want)
				}
			}
			resp, err := srv.Client().Get(srv.URL + "/p/.htpasswd")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Errorf("GET /p/.htpasswd = %d, want 404", resp.StatusCode)
			}
		})
	}
}
