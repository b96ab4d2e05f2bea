package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ota-agent/ota-agent/serve"
)

// keygen -> publish --sign-key --current -> update --public-keys, through
// the command line; an update with another key is refused (exit 1).
func TestPublishCommand(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"keygen", "--unencrypted", "--secret-key", sec, "--public-key", pub}, &out, &errb); code != 0 {
		t.Fatalf("keygen = %d: %s", code, errb.String())
	}
	key := strings.TrimSpace(strings.TrimPrefix(out.String(), "public key (for public_keys): "))
	src, root := filepath.Join(dir, "src"), filepath.Join(dir, "www")
	os.MkdirAll(filepath.Join(src, "lib"), 0o755)
	os.WriteFile(filepath.Join(src, "main.py"), []byte("print(1)\n"), 0o644)
	os.WriteFile(filepath.Join(src, "lib", "util.py"), []byte("X = 1\n"), 0o644)
	out.Reset()
	args := []string{"publish", src, "--root", root, "--project", "sample", "--version", "v1", "--sign-key", sec, "--current"}
	if code := run(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("publish = %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "sequence 1, signed, current") {
		t.Errorf("publish said %q", out.String())
	}
	h, err := serve.Handler(root, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	appDir := filepath.Join(dir, "app")
	update := func(key string) int {
		return run(context.Background(), []string{"update", "--host", srv.URL, "--project", "sample", "--app-dir", appDir,
			"--state-dir", filepath.Join(dir, "state"), "--runtime-dir", filepath.Join(dir, "run"), "--public-keys", key}, &out, &errb)
	}
	// Another key pair's public key: the signature does not verify.
	other := filepath.Join(dir, "o")
	run(context.Background(), []string{"keygen", "--unencrypted", "--secret-key", other + ".key", "--public-key", other + ".pub"}, &out, &errb)
	otherPub, _ := os.ReadFile(other + ".pub")
	lines := strings.Split(strings.TrimSpace(string(otherPub)), "\n")
	if code := update(lines[len(lines)-1]); code != 1 {
		t.Fatalf("update with another key = %d, want 1: %s", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(appDir, "main.py")); err == nil {
		t.Fatal("update with another key installed main.py")
	}
	if code := update(key); code != 0 {
		t.Fatalf("update = %d: %s", code, errb.String())
	}
	if b, _ := os.ReadFile(filepath.Join(appDir, "lib", "util.py")); string(b) != "X = 1\n" {
		t.Fatalf("lib/util.py = %q", b)
	}
}
