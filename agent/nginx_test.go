package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// The agent against what users deploy: a real nginx with auth_basic over
// TLS from a throwaway CA, in both server layouts.
func TestNginxCompatibility(t *testing.T) {
	_, err := exec.LookPath(testenv.NginxBinary)
	testenv.Require(t, "nginx", err == nil)
	tlsFiles := testenv.NewTLS(t)
	for _, prefix := range []bool{true, false} {
		name := map[bool]string{true: "prefix", false: "subdir"}[prefix]
		t.Run(name, func(t *testing.T) {
			www := t.TempDir()
			for v, files := range map[string]map[string]string{
				"v1.0.0": {"main.py": "print('v1.0.0 main')\n", "lib/util.py": "V = '1.0.0'\n"},
				"v1.0.1": {"main.py": "print('v1.0.1 main')\n", "lib/util.py": "V = '1.0.1'\n"},
			} {
				for f, body := range files {
					p := filepath.Join(www, "sample", v+"/"+f)
					if prefix {
						p = filepath.Join(www, "sample", v+"_"+f)
					}
					os.MkdirAll(filepath.Dir(p), 0o755)
					os.WriteFile(p, []byte(body), 0o644)
				}
			}
			os.WriteFile(filepath.Join(www, "sample", "version"), []byte("v1.0.1\n"), 0o644)
			url := testenv.StartNginx(t, testenv.NginxOptions{Root: www, TLS: &tlsFiles, User: "otauser", Password: "top secret"})

			e := newEnv(t, url)
			e.app.UseVersionPrefix = prefix
			e.app.User, e.app.Password = "otauser", "top secret"
			// Without the CA: a certificate failure, nothing installed.
			_, err := e.agent(t).Update(context.Background())
			if err == nil || errors.Is(err, ErrUnreachable) {
				t.Fatalf("Update() without ca_file = %v, want a certificate error", err)
			}
			if got := tree(t, e.appDir); len(got) != 0 {
				t.Fatalf("app dir = %v after a TLS failure, want empty", got)
			}
			e.app.CAFile = tlsFiles.CACert
			// A wrong password: refused, nothing installed.
			e.app.Password = "wrong"
			var se *StatusError
			if _, err := e.agent(t).Update(context.Background()); !errors.As(err, &se) || se.Code != 401 {
				t.Fatalf("Update() with a wrong password = %v, want 401", err)
			}
			e.app.Password = "top secret"
			if _, err := e.agent(t).Update(context.Background()); err != nil {
				t.Fatalf("Update() = %v", err)
			}
			wantApp(t, e, "v1.0.1")
			os.WriteFile(filepath.Join(www, "sample", "version"), []byte("v1.0.0"), 0o644)
			if _, err := e.agent(t).Update(context.Background()); err != nil {
				t.Fatalf("Update() to v1.0.0 = %v", err)
			}
			wantApp(t, e, "v1.0.0")
			res, err := e.agent(t).Update(context.Background())
			if err != nil || res.Updated || res.Requests != 1 {
				t.Fatalf("Update() when up to date = %+v, %v; want one request, no change", res, err)
			}
		})
	}
}
