package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
)

func hexSHA(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// publisher puts signed releases of "sample" on a test server, in the
// prefix layout.
type publisher struct {
	srv  *server
	key  minisign.PrivateKey
	pub  minisign.PublicKey
	seq  uint64
	sigs map[string]string // tag -> the last signature published for it
	mans map[string]string // tag -> the last manifest published for it
}

func newPublisher(t *testing.T, srv *server) *publisher {
	pub, key, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &publisher{srv: srv, key: key, pub: pub, sigs: map[string]string{}, mans: map[string]string{}}
}

// manifest is the manifest of files (path -> body) for tag; modes default.
func (p *publisher) manifest(project, tag string, seq uint64, files map[string]string, modes map[string]string) []byte {
	m := &wire.Manifest{Format: 1, Project: project, Version: tag, Sequence: seq}
	for path, body := range files {
		m.Files = append(m.Files, wire.ManifestFile{Path: path, Size: int64(len(body)), SHA256: hexSHA(body), Mode: modes[path]})
	}
	b, err := m.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// publish writes tag's files, a manifest with the next sequence, its
// signature and version.
func (p *publisher) publish(tag string, files map[string]string) {
	p.seq++
	for path, body := range files {
		p.srv.set("/sample/"+tag+"_"+path, body)
	}
	man := p.manifest("sample", tag, p.seq, files, nil)
	p.put(tag, man, wire.SignManifest(p.key, man, "x"))
	p.srv.set("/sample/version", tag+"\n")
}

func (p *publisher) put(tag string, man, sig []byte) {
	p.mans[tag], p.sigs[tag] = string(man), string(sig)
	p.srv.set("/sample/"+tag+"_manifest.json", string(man))
	p.srv.set("/sample/"+tag+"_manifest.json.minisig", string(sig))
}

var (
	v1Files = map[string]string{"main.py": "print('v1.0.0 main')\n", "lib/util.py": "V = '1.0.0'\n"}
	v2Files = map[string]string{"main.py": "print('v1.0.1 main')\n", "lib/util.py": "V = '1.0.1'\n"}
)

// With a manifest the agent needs no files list, installs the manifest's
// files with their modes, and a 404 for the manifest keeps the seed's
// layout working.
func TestManifestInstallsWithoutFilesList(t *testing.T) {
	srv := newServer(t, map[string]string{})
	p := newPublisher(t, srv)
	files := map[string]string{"main.py": "print(1)\n", "bin/run": "#!/bin/sh\n"}
	p.seq++
	for path, body := range files {
		srv.set("/sample/v1_"+path, body)
	}
	srv.set("/sample/v1_manifest.json", string(p.manifest("sample", "v1", 1, files, map[string]string{"bin/run": "0755"})))
	srv.set("/sample/version", "v1")
	e := newEnv(t, srv.URL)
	e.app.Files = nil
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() = %v", err)
	}
	if got := tree(t, e.appDir); fmt.Sprint(got) != fmt.Sprint(files) {
		t.Fatalf("app = %v, want %v", got, files)
	}
	fi, _ := os.Stat(filepath.Join(e.appDir, "bin/run"))
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/run mode = %v, want 0755 from the manifest", fi.Mode().Perm())
	}
	// No manifest and no files list: nothing to install, a config error.
	srv2 := newServer(t, sample())
	e2 := newEnv(t, srv2.URL)
	e2.app.Files = nil
	var ce *ConfigError
	if _, err := e2.agent(t).Update(context.Background()); !errors.As(err, &ce) {
		t.Fatalf("Update() without manifest or files = %v, want a ConfigError", err)
	}
	// The seed's layout with a files list: the manifest's 404 is fine.
	e3 := newEnv(t, srv2.URL)
	if _, err := e3.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() without manifest = %v", err)
	}
	wantApp(t, e3, "v1.0.1")
}

// Every attack of issue 13 is refused before anything changes (exit 1:
// not a ConfigError, not ErrUnreachable), and the app dir and its state
// are left as they were.
func TestSignedManifestAttacks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		attack func(p *publisher, other *publisher)
		want   error
	}{
		{"tampered file", func(p, _ *publisher) { p.srv.set("/sample/v1.0.1_main.py", "import os; os.system('evil')\n") }, store.ErrMismatch},
		{"tampered manifest", func(p, _ *publisher) {
			man := strings.Replace(p.mans["v1.0.1"], `"sequence": 2`, `"sequence": 99`, 1)
			p.put("v1.0.1", []byte(man), []byte(p.sigs["v1.0.1"]))
		}, wire.ErrSignature},
		{"unknown key", func(p, other *publisher) {
			man := []byte(p.mans["v1.0.1"])
			p.put("v1.0.1", man, wire.SignManifest(other.key, man, "x"))
		}, wire.ErrSignature},
		{"missing signature", func(p, _ *publisher) { delete(p.srv.files, "/sample/v1.0.1_manifest.json.minisig") }, ErrUnsigned},
		{"missing manifest", func(p, _ *publisher) { delete(p.srv.files, "/sample/v1.0.1_manifest.json") }, ErrUnsigned},
		{"another tag's manifest", func(p, _ *publisher) {
			p.put("v1.0.1", []byte(p.mans["v1.0.0"]), []byte(p.sigs["v1.0.0"]))
		}, wire.ErrWrongRelease},
		{"another project's manifest", func(p, _ *publisher) {
			man := p.manifest("other", "v1.0.1", 10, v2Files, nil)
			p.put("v1.0.1", man, wire.SignManifest(p.key, man, "x"))
		}, wire.ErrWrongRelease},
		{"replayed older release", func(p, _ *publisher) {
			// v1.0.0 and its signed manifest (sequence 1), served again.
			p.srv.set("/sample/version", "v1.0.0")
		}, ErrReplay},
		{"oversized manifest", func(p, _ *publisher) {
			p.srv.set("/sample/v1.0.1_manifest.json", strings.Repeat(" ", wire.MaxManifestSize+1))
		}, wire.ErrManifest},
		{"oversized manifest, no length", func(p, _ *publisher) {
			p.srv.handle("/sample/v1.0.1_manifest.json", func(w http.ResponseWriter, r *http.Request) {
				w.(http.Flusher).Flush()
				for range wire.MaxManifestSize/(64<<10) + 2 {
					w.Write(make([]byte, 64<<10))
				}
			})
		}, wire.ErrManifest},
		{"unsafe path", func(p, _ *publisher) {
			man := strings.Replace(p.mans["v1.0.1"], `"lib/util.py"`, `"../../etc/cron.d/x"`, 1)
			p.put("v1.0.1", []byte(man), wire.SignManifest(p.key, []byte(man), "x"))
		}, wire.ErrManifest},
		{"setuid", func(p, _ *publisher) {
			man := p.manifest("sample", "v1.0.1", 10, v2Files, map[string]string{"main.py": "0755"})
			man = []byte(strings.Replace(string(man), `"0755"`, `"4755"`, 1))
			p.put("v1.0.1", man, wire.SignManifest(p.key, man, "x"))
		}, wire.ErrManifest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, map[string]string{})
			p, other, rotated := newPublisher(t, srv), newPublisher(t, srv), newPublisher(t, srv)
			p.publish("v1.0.0", v1Files)
			e := newEnv(t, srv.URL)
			// Two trusted keys (a rotation); other's is not one of them.
			e.app.PublicKeys = []string{rotated.pub.String(), p.pub.String()}
			if _, err := e.agent(t).Update(context.Background()); err != nil {
				t.Fatalf("Update() to v1.0.0 = %v", err)
			}
			wantApp(t, e, "v1.0.0")
			// The current release must be replayed from an old install, so
			// that attack starts from a newer one.
			p.publish("v1.0.1", v2Files)
			if tc.name == "replayed older release" {
				if _, err := e.agent(t).Update(context.Background()); err != nil {
					t.Fatalf("Update() to v1.0.1 = %v", err)
				}
			}
			before := tree(t, e.app.StateDir())
			delete(before, "staging/.ota-index")
			tc.attack(p, other)
			_, err := e.agent(t).Update(context.Background())
			var ce *ConfigError
			if !errors.Is(err, tc.want) || errors.Is(err, ErrUnreachable) || errors.As(err, &ce) {
				t.Fatalf("Update() = %v, want %v (exit 1)", err, tc.want)
			}
			if tc.name == "replayed older release" {
				wantApp(t, e, "v1.0.1")
			} else {
				wantApp(t, e, "v1.0.0")
			}
			if st, _ := store.ReadState(e.app.StateDir()); st.Sequence == 0 || st.Sequence > 2 {
				t.Errorf("sequence = %d after a refusal", st.Sequence)
			}
		})
	}
}

// An operator's rollback: the old tag published again, with a new
// sequence, installs; an equal sequence for another tag does not.
func TestSignedRollbackAndReplay(t *testing.T) {
	srv := newServer(t, map[string]string{})
	p := newPublisher(t, srv)
	p.publish("v1.0.0", v1Files)
	p.publish("v1.0.1", v2Files)
	e := newEnv(t, srv.URL)
	e.app.Files = nil
	e.app.PublicKeys = []string{p.pub.String()}
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantApp(t, e, "v1.0.1")
	// The same sequence (2) for another tag is a replay too.
	man := p.manifest("sample", "v1.0.0", 2, v1Files, nil)
	p.put("v1.0.0", man, wire.SignManifest(p.key, man, "x"))
	srv.set("/sample/version", "v1.0.0")
	if _, err := e.agent(t).Update(context.Background()); !errors.Is(err, ErrReplay) {
		t.Fatalf("Update() with an equal sequence for another tag = %v, want ErrReplay", err)
	}
	p.seq = 2
	p.publish("v1.0.0", v1Files) // sequence 3
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() to the re-published v1.0.0 = %v", err)
	}
	wantApp(t, e, "v1.0.0")
	if st, _ := store.ReadState(e.app.StateDir()); st.Sequence != 3 {
		t.Errorf("sequence = %d, want 3", st.Sequence)
	}
}

// Only changed files travel: one file of the release changed, one request
// for it besides version and the manifest.
func TestManifestDownloadsOnlyChangedFiles(t *testing.T) {
	srv := newServer(t, map[string]string{})
	p := newPublisher(t, srv)
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("lib/m%02d.py", i)] = strings.Repeat(fmt.Sprint(i), 1000)
	}
	p.publish("v1", files)
	e := newEnv(t, srv.URL)
	e.app.Files = nil
	e.app.PublicKeys = []string{p.pub.String()}
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	files["lib/m07.py"] = "changed"
	files["lib/renamed.py"] = files["lib/m03.py"]
	delete(files, "lib/m03.py")
	p.publish("v2", files)
	n := len(srv.requests())
	res, err := e.agent(t).Update(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range srv.requests()[n:] {
		got = append(got, r.URL.Path)
	}
	want := []string{"/sample/version", "/sample/v2_manifest.json", "/sample/v2_manifest.json.minisig", "/sample/v2_lib/m07.py"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests = %v, want %v", got, want)
	}
	if res.Requests != 4 {
		t.Errorf("Result.Requests = %d, want 4", res.Requests)
	}
	if app := tree(t, e.appDir); fmt.Sprint(app) != fmt.Sprint(files) {
		t.Fatalf("app = %v, want %v", app, files)
	}
}
