package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ota-agent/ota-agent/metrics"
)

// TestMetricsTextfile: with metrics_textfile set, update and check record
// each app's check in the Prometheus textfile: the install (version,
// update, bytes), then a failed check.
func TestMetricsTextfile(t *testing.T) {
	dir := t.TempDir()
	release := filepath.Join(dir, "srv", "p")
	if err := os.MkdirAll(release, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(dir, "srv"))))
	defer srv.Close()
	for name, body := range map[string]string{"version": "v1\n", "v1_a.txt": "hello\n"} {
		if err := os.WriteFile(filepath.Join(release, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prom := filepath.Join(dir, "textfile", "ota_agent.prom")
	if err := os.Mkdir(filepath.Dir(prom), 0o755); err != nil {
		t.Fatal(err)
	}
	config := func(host string) string {
		return writeConfig(t, `metrics_textfile = "`+prom+`"`, `runtime_dir = "`+filepath.Join(dir, "run")+`"`,
			"[[app]]", `name = "p"`, `host = "`+host+`"`, `project = "p"`, `files = ["a.txt"]`,
			`app_dir = "`+filepath.Join(dir, "app")+`"`, `state_dir = "`+filepath.Join(dir, "state")+`"`)
	}
	if err := os.Mkdir(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"update", "--config", config(srv.URL)}, &out, &errb); code != ExitOK {
		t.Fatalf("update = %d\n%s", code, errb.String())
	}
	if code := run(context.Background(), []string{"check", "--config", config("http://127.0.0.1:1")}, &out, &errb); code != ExitTempFail {
		t.Fatalf("check of an unreachable server = %d, want %d\n%s", code, ExitTempFail, errb.String())
	}
	f, err := os.Open(prom)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	apps, err := metrics.Parse(f)
	if err != nil || len(apps) != 1 {
		t.Fatalf("metrics.Parse(%s) = %+v, %v; want one app", prom, apps, err)
	}
	a := apps[0]
	if a.Name != "p" || a.Version != "v1" || a.Updates != 1 || a.Failures != 1 || a.Bytes != uint64(len("hello\n")+len("v1\n")) ||
		a.LastSuccess.IsZero() || !a.LastCheck.After(a.LastSuccess) && !a.LastCheck.Equal(a.LastSuccess) {
		b, _ := os.ReadFile(prom)
		t.Errorf("metrics after an install and a failed check: %+v\n%s", a, b)
	}
	if b, _ := os.ReadFile(prom); !strings.Contains(string(b), `ota_agent_info{app="p",version="v1"} 1`) {
		t.Errorf("no info sample with the installed version:\n%s", b)
	}
}
