package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// status --json keeps the shape the README documents.
func TestStatusJSONShape(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	args := appArgs(srv.URL, dir)
	code, out, _ := runCLI(t, append([]string{"status", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("status --json before any install = exit %d", code)
	}
	var before struct {
		Apps []map[string]any `json:"apps"`
	}
	if err := json.Unmarshal([]byte(out), &before); err != nil || len(before.Apps) != 1 {
		t.Fatalf("status --json = %q (%v), want one app", out, err)
	}
	if a := before.Apps[0]; a["version"] != "" || a["installed_at"] != nil || a["last_check"] != nil || a["pending"] != nil {
		t.Errorf("status before install = %v, want version \"\" and nulls", a)
	}

	runCLI(t, append([]string{"update"}, args...)...)
	srv2 := cliServer(t, "v2", nil)
	args2 := appArgs(srv2.URL, dir)
	if code, _, stderr := runCLI(t, append([]string{"update"}, args2...)...); code != 0 {
		t.Fatalf("update to v2 = exit %d: %s", code, stderr)
	}
	code, out, _ = runCLI(t, append([]string{"status", "--json"}, args2...)...)
	if code != 0 {
		t.Fatalf("status --json = exit %d", code)
	}
	var got struct {
		Apps []map[string]any `json:"apps"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Apps) != 1 {
		t.Fatalf("status --json = %q (%v), want one app", out, err)
	}
	a := got.Apps[0]
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := "app_dir,bad_versions,files,install,installed_at,last_check,last_rollback,name,pending,previous,releases,state_dir,trial,version"
	if strings.Join(keys, ",") != want {
		t.Errorf("status keys = %v, want %s", keys, want)
	}
	if a["name"] != "p" || a["version"] != "v2" || a["previous"] != "v1" || a["files"] != 2.0 ||
		a["install"] != "in-place" || a["app_dir"] != filepath.Join(dir, "app") || a["pending"] != nil {
		t.Errorf("status = %v, want p at v2 from v1 with 2 files", a)
	}
	if r, _ := a["releases"].([]any); len(r) != 1 || r[0] != "v1" {
		t.Errorf("releases = %v, want [v1]", a["releases"])
	}
	last, _ := a["last_check"].(map[string]any)
	if last["outcome"] != "updated" || last["remote"] != "v2" || last["at"] == nil {
		t.Errorf("last_check = %v, want outcome updated, remote v2", last)
	}

	// The human form says the same.
	_, text, _ := runCLI(t, append([]string{"status"}, args2...)...)
	for _, w := range []string{"p: v2, installed", "last check", "updated (server: v2)", "kept for rollback: v1"} {
		if !strings.Contains(text, w) {
			t.Errorf("status = %q, want it to say %q", text, w)
		}
	}
}

// One app's unreadable state.json does not hide the others: status shows
// each, the broken one with its error, and exits 1. A switch whose undo
// failed shows why.
func TestStatusShowsEveryApp(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t,
		`state_dir = "`+filepath.Join(dir, "state")+`"`,
		`runtime_dir = "`+filepath.Join(dir, "run")+`"`,
		`[[app]]`, `name = "broken"`, `host = "http://127.0.0.1:1"`, `project = "p"`, `files = ["a.py"]`,
		`app_dir = "`+filepath.Join(dir, "broken")+`"`,
		`[[app]]`, `name = "fine"`, `host = "http://127.0.0.1:1"`, `project = "p"`, `files = ["a.py"]`,
		`app_dir = "`+filepath.Join(dir, "fine")+`"`)
	for _, app := range []string{"broken", "fine"} {
		if err := os.MkdirAll(filepath.Join(dir, "state", app), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "state", "broken", "state.json"), []byte(`{"schema":1,"version":"../x"}`), 0o644))
	must(os.WriteFile(filepath.Join(dir, "state", "fine", "journal"), []byte(
		`{"schema":1,"mode":"in-place","from":"v1","to":"v2","backup":"v1","state":{"version":"v2"},"old":{"version":"v1"},"failed":"switch to v2: a.py: disk on fire"}`), 0o600))
	code, out, _ := runCLI(t, "status", "--config", cfg)
	if code != ExitFailed {
		t.Errorf("status = exit %d, want 1", code)
	}
	for _, w := range []string{"broken: corrupt state", "fine: nothing installed yet", "interrupted switch v1 -> v2", "last attempt failed: switch to v2: a.py: disk on fire"} {
		if !strings.Contains(out, w) {
			t.Errorf("status = %q, want it to say %q", out, w)
		}
	}
}
