package publish_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/publish"
	"github.com/ota-agent/ota-agent/serve"
	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
)

func writeTree(t *testing.T, dir string, files map[string]string, modes map[string]os.FileMode) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		mode := modes[p]
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(full, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(full, mode)
	}
}

func readTree(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	return out
}

// A key pair from Keygen, the secret key encrypted; ReadKey asks for the
// password only for an encrypted key.
func newKey(t *testing.T) (publish.Options, string) {
	t.Helper()
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "ota.key"), filepath.Join(dir, "ota.pub")
	pk, err := publish.Keygen(sec, pub, "correct horse")
	if err != nil {
		t.Fatalf("Keygen = %v", err)
	}
	if _, err := publish.Keygen(sec, pub, ""); err == nil {
		t.Fatal("Keygen over an existing secret key = nil, want an error")
	}
	if _, err := publish.ReadKey(sec, func() (string, error) { return "wrong", nil }); err == nil {
		t.Fatal("ReadKey(wrong password) = nil, want an error")
	}
	k, err := publish.ReadKey(sec, func() (string, error) { return "correct horse", nil })
	if err != nil {
		t.Fatalf("ReadKey = %v", err)
	}
	return publish.Options{Key: &k}, pk.String()
}

// publish -> serve -> update and publish -> nginx -> update, in both
// layouts, signed: the first release, then one that changes one file,
// drops one and adds one; the agent downloads only what changed, and
// minisign -V accepts what publish signed. A micropython-ota style client
// (a files list, no manifest asked for) reads the same tree.
func TestRoundTrip(t *testing.T) {
	_, nginxErr := exec.LookPath(testenv.NginxBinary)
	// Decrypting a minisign key takes scrypt with 1 GiB: once for all.
	opts, pub := newKey(t)
	for _, server := range []string{"serve", "nginx"} {
		for _, prefix := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/prefix=%v", server, prefix), func(t *testing.T) {
				root := t.TempDir()
				var url string
				if server == "serve" {
					h, err := serve.Handler(root, serve.Options{})
					if err != nil {
						t.Fatal(err)
					}
					srv := httptest.NewServer(h)
					t.Cleanup(srv.Close)
					url = srv.URL
				} else {
					testenv.Require(t, "nginx", nginxErr == nil)
					url = testenv.StartNginx(t, testenv.NginxOptions{Root: root})
				}
				roundTrip(t, opts, pub, root, url, prefix)
			})
		}
	}
}

func roundTrip(t *testing.T, opts publish.Options, pub, root, url string, prefix bool) {
	opts.Root, opts.Project, opts.Prefix, opts.Current = root, "fleet/sample", prefix, true
	src := t.TempDir()
	v1 := map[string]string{"main.py": "print(1)\n", "bin/run": "#!/bin/sh\nexec python3 main.py\n", "lib/.env": "X=1\n", "old.py": "old\n"}
	writeTree(t, src, v1, map[string]os.FileMode{"bin/run": 0o755})
	opts.Src, opts.Version = src, "v1"
	m, err := publish.Publish(opts)
	if err != nil || m.Sequence != 1 || len(m.Files) != 4 {
		t.Fatalf("Publish(v1) = %+v, %v", m, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "fleet/sample/version")); string(b) != "v1\n" {
		t.Fatalf("version = %q", b)
	}
	manifest := filepath.Join(root, "fleet/sample", "v1_manifest.json")
	if !prefix {
		manifest = filepath.Join(root, "fleet/sample", "v1/manifest.json")
	}
	if bin, err := exec.LookPath("minisign"); err == nil || os.Getenv("CI") == "true" {
		testenv.Require(t, "minisign", err == nil)
		pubFile := filepath.Join(t.TempDir(), "k.pub")
		os.WriteFile(pubFile, []byte("untrusted comment: k\n"+pub+"\n"), 0o644)
		out, err := exec.Command(bin, "-V", "-p", pubFile, "-m", manifest).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "project=fleet/sample version=v1 sequence=1") {
			t.Fatalf("minisign -V: %v\n%s", err, out)
		}
	}

	appDir := filepath.Join(t.TempDir(), "app")
	app := agent.App{Host: url, Project: "fleet/sample", Name: "sample", UseVersionPrefix: prefix, AppDir: appDir,
		StateRoot: filepath.Join(t.TempDir(), "state"), PublicKeys: []string{pub}}
	app.ApplyDefaults()
	update := func(want map[string]string) agent.Result {
		t.Helper()
		if err := app.Validate(); err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(app, agent.Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := a.Update(context.Background())
		if err != nil {
			t.Fatalf("Update() = %v", err)
		}
		if got := readTree(t, appDir); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("app = %v, want %v", got, want)
		}
		return res
	}
	update(v1)
	if fi, _ := os.Stat(filepath.Join(appDir, "bin/run")); fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/run mode = %v, want 0755", fi.Mode().Perm())
	}

	v2 := map[string]string{"main.py": "print(2)\n", "bin/run": v1["bin/run"], "lib/.env": v1["lib/.env"], "new.py": "new\n"}
	src2 := t.TempDir()
	writeTree(t, src2, v2, map[string]os.FileMode{"bin/run": 0o755})
	opts.Src, opts.Version = src2, "v2"
	if m, err = publish.Publish(opts); err != nil || m.Sequence != 2 {
		t.Fatalf("Publish(v2) = %+v, %v", m, err)
	}
	res := update(v2)
	// version, manifest, signature, and the two files that changed.
	if res.Requests != 5 {
		t.Errorf("update to v2: %d requests, want 5", res.Requests)
	}
	// The operator's rollback: v1 again, a new sequence.
	opts.Src, opts.Version = src, "v1"
	if m, err = publish.Publish(opts); err != nil || m.Sequence != 3 {
		t.Fatalf("Publish(v1 again) = %+v, %v", m, err)
	}
	update(v1)
	if st, _ := store.ReadState(app.StateDir()); st.Sequence != 3 {
		t.Errorf("sequence = %d, want 3", st.Sequence)
	}

	// micropython-ota's way: the files by name, no manifest asked for.
	for p, body := range v1 {
		u := url + "/fleet/sample/v1_" + p
		if !prefix {
			u = url + "/fleet/sample/v1/" + p
		}
		if got := get(t, u); got != body {
			t.Errorf("GET %s = %q, want %q", u, got, body)
		}
	}
}

func get(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

func TestPublishRefuses(t *testing.T) {
	for name, setup := range map[string]func(dir string){
		"setuid": func(dir string) {
			writeTree(t, dir, map[string]string{"a": "x"}, nil)
			os.Chmod(filepath.Join(dir, "a"), 0o755|os.ModeSetuid)
		},
		"symlink":  func(dir string) { os.Symlink("/etc/passwd", filepath.Join(dir, "a")) },
		"manifest": func(dir string) { writeTree(t, dir, map[string]string{wire.ManifestName: "{}"}, nil) },
		"empty":    func(string) {},
	} {
		src, root := t.TempDir(), t.TempDir()
		setup(src)
		if _, err := publish.Publish(publish.Options{Src: src, Root: root, Project: "p", Version: "v1", Prefix: true, Current: true}); err == nil {
			t.Errorf("Publish(%s) = nil, want an error", name)
		}
		if _, err := os.Stat(filepath.Join(root, "p", "version")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Publish(%s) wrote version", name)
		}
	}
	for _, bad := range []publish.Options{{Version: "../x", Project: "p"}, {Version: "v1", Project: "../p"}, {Version: "v1", Project: ".git"}} {
		bad.Src, bad.Root = t.TempDir(), t.TempDir()
		if _, err := publish.Publish(bad); err == nil {
			t.Errorf("Publish(%+v) = nil, want an error", bad)
		}
	}
}
