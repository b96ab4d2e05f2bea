package main

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Flags go anywhere, as --flag value or --flag=value; --wait takes a
// duration after it only when one follows.
func TestParseArgs(t *testing.T) {
	tests := []struct {
		args   []string
		pos    []string
		config string
		wait   time.Duration
		err    string
	}{
		{args: []string{"myapp", "--config", "c.toml"}, pos: []string{"myapp"}, config: "c.toml"},
		{args: []string{"--config=c.toml", "myapp", "other"}, pos: []string{"myapp", "other"}, config: "c.toml"},
		{args: []string{"-config", "c.toml", "myapp"}, pos: []string{"myapp"}, config: "c.toml"},
		{args: []string{"--wait", "30s"}, wait: 30 * time.Second},
		{args: []string{"--wait=1m", "myapp"}, pos: []string{"myapp"}, wait: time.Minute},
		{args: []string{"--wait", "myapp"}, pos: []string{"myapp"}, wait: 365 * 24 * time.Hour},
		{args: []string{"myapp", "--wait"}, pos: []string{"myapp"}, wait: 365 * 24 * time.Hour},
		{args: []string{"--", "--config", "x"}, pos: []string{"--config", "x"}},
		{args: []string{"-"}, pos: []string{"-"}},
		{args: []string{"myapp", "--config"}, err: "--config needs a value"},
		{args: []string{"--nope"}, err: "unknown flag --nope"},
		{args: []string{"--keep-releases", "many"}, err: `--keep-releases "many"`},
		{args: []string{"myapp", "-h"}, err: errHelp.Error()},
		{args: []string{"--help", "--nope"}, err: errHelp.Error()},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("update", flag.ContinueOnError)
		o := &updateOptions{apps: newAppsCmd(fs)}
		fs.Var(&o.wait, "wait", "")
		pos, err := parseArgs(fs, tt.args)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseArgs(%q) = %v, want an error with %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(pos, tt.pos) || o.apps.c.config != orDefault(tt.config, defaultConfigPath) || o.wait.d != tt.wait {
			t.Errorf("parseArgs(%q) = %q, %v; config %q, wait %v; want %q, config %q, wait %v",
				tt.args, pos, err, o.apps.c.config, o.wait.d, tt.pos, tt.config, tt.wait)
		}
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Every command has a help page, the same from -h, --help and help CMD,
// with --flags, the exit codes, and only the app flags that matter.
func TestHelpEveryCommand(t *testing.T) {
	singleDash := regexp.MustCompile(`(?m)^\s+-[a-z]`)
	for _, c := range commandTable() {
		var pages []string
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			code, out, stderr := runCLI(t, args...)
			if code != ExitOK || stderr != "" {
				t.Errorf("ota-agent %q = exit %d, stderr %q; want 0 and nothing", args, code, stderr)
			}
			pages = append(pages, out)
		}
		if pages[0] != pages[1] || pages[0] != pages[2] {
			t.Errorf("%s: -h, --help and help %s differ", c.name, c.name)
		}
		page := pages[0]
		for _, want := range []string{"usage: ota-agent " + c.name, "exit codes:\n  0 ", c.about[:20]} {
			if !strings.Contains(page, want) {
				t.Errorf("%s --help lacks %q:\n%s", c.name, want, page)
			}
		}
		if singleDash.MatchString(page) {
			t.Errorf("%s --help lists a single-dash flag:\n%s", c.name, page)
		}
		if strings.Contains(page, "exit codes:\n") && c.name == "check" && !strings.Contains(page, "100 ") {
			t.Errorf("check --help does not list exit 100")
		}
	}
	_, status, _ := runCLI(t, "status", "--help")
	_, update, _ := runCLI(t, "update", "--help")
	for _, f := range []string{"--trial ", "--min-rate ", "--health-url "} {
		if strings.Contains(status, f) || !strings.Contains(update, f) {
			t.Errorf("%s: in status --help %v, in update --help %v; want only in update's", f, strings.Contains(status, f), strings.Contains(update, f))
		}
	}
	for _, f := range []string{"--app-dir DIR", "--state-dir DIR", "--config FILE", "--json"} {
		if !strings.Contains(status, f) {
			t.Errorf("status --help lacks %q", f)
		}
	}
}

func TestTopLevel(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"--version"}, ExitOK, "ota-agent " + Version + "\n", ""},
		{[]string{"version"}, ExitOK, "ota-agent " + Version + "\n", ""},
		{[]string{"--help"}, ExitOK, "commands:\n  update ", ""},
		{[]string{"-h"}, ExitOK, "commands:\n  update ", ""},
		{[]string{"help"}, ExitOK, "commands:\n  update ", ""},
		{[]string{}, ExitUsage, "", "commands:\n  update "},
		{[]string{"nope"}, ExitUsage, "", `unknown command "nope"; run 'ota-agent --help'`},
		{[]string{"help", "nope"}, ExitUsage, "", `unknown command "nope"`},
	}
	for _, tt := range tests {
		code, out, stderr := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(stderr, tt.err) || (tt.out == "" && out != "") {
			t.Errorf("ota-agent %q = %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out, stderr, tt.code, tt.out, tt.err)
		}
	}
}

// An unknown flag is one line on stderr naming it and --help, exit 2.
func TestUnknownFlag(t *testing.T) {
	for _, c := range commandTable() {
		code, out, stderr := runCLI(t, c.name, "x", "--no-such-flag", "y")
		want := "--no-such-flag; run 'ota-agent " + c.name + " --help'"
		if code != ExitUsage || out != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
			t.Errorf("ota-agent %s --no-such-flag = %d, stdout %q, stderr %q; want 2, one line with %q", c.name, code, out, stderr, want)
		}
	}
}

// check with its app name first and flags after it: the flags are flags.
func TestFlagsAfterAppName(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	args := appArgs(srv.URL, dir)
	if code, _, stderr := runCLI(t, append([]string{"update"}, args...)...); code != 0 {
		t.Fatalf("update = %d: %s", code, stderr)
	}
	cfg := appConfigFile(t, dir, srv.URL)
	code, out, stderr := runCLI(t, "check", "p", "--config", cfg, "--runtime-dir", dir+"/run")
	if code != ExitOK || !strings.Contains(out, "p: up to date (v1)") {
		t.Errorf("check p --config = %d, %q, %q; want 0, up to date", code, out, stderr)
	}
}

// appConfigFile writes a config file with the app of appArgs(host, dir).
func appConfigFile(t *testing.T, dir, host string) string {
	t.Helper()
	path := dir + "/c.toml"
	body := "[[app]]\nhost = \"" + host + "\"\nproject = \"p\"\nfiles = [\"a.py\", \"lib/b.py\"]\napp_dir = \"" + dir + "/app\"\nstate_dir = \"" + dir + "/state\"\ntimeout = \"1s\"\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Every app flag overrides a key of [[app]]: its name with "_" for "-".
func TestEveryAppFlagHasAKey(t *testing.T) {
	for name := range appFlagNames {
		key := strings.ReplaceAll(name, "-", "_")
		if name == "no-version-prefix" {
			key = "use_version_prefix"
		}
		if !slices.Contains(appKeys, key) {
			t.Errorf("--%s: no app key %q to override", name, key)
		}
	}
}

// With a config file, an app flag overrides its key in the configured
// apps; --host or --project without --config is one app from flags alone.
func TestFlagsOverrideConfig(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	// The file names a server that is not there; --host overrides it.
	cfg := appConfigFile(t, dir, "http://127.0.0.1:1")
	other := filepath.Join(dir, "other-state")
	run := []string{"--config", cfg, "--runtime-dir", filepath.Join(dir, "run")}
	if code, _, stderr := runCLI(t, append([]string{"update", "--host", srv.URL, "--state-dir", other}, run...)...); code != ExitOK {
		t.Fatalf("update --config --host --state-dir = %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(other, "p", "state.json")); err != nil {
		t.Errorf("--state-dir over the config's state_dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "p", "state.json")); err == nil {
		t.Errorf("the config's state_dir was used despite --state-dir")
	}
	code, out, _ := runCLI(t, append([]string{"status", "p", "--state-dir", other}, run...)...)
	if code != ExitOK || !strings.Contains(out, "p: v1, installed") {
		t.Errorf("status --state-dir = %d, %q; want v1 installed", code, out)
	}
	// Without --host the file's unreachable server is used: exit 75.
	if code, _, _ := runCLI(t, append([]string{"check", "--state-dir", other}, run...)...); code != ExitTempFail {
		t.Errorf("check with the file's host = %d, want 75", code)
	}
	// A flag's bad value is refused, naming the key.
	if code, _, stderr := runCLI(t, append([]string{"check", "--timeout", "soon"}, run...)...); code != ExitUsage || !strings.Contains(stderr, "timeout") {
		t.Errorf("check --timeout soon = %d, %q; want 2 naming timeout", code, stderr)
	}
	// --host without --config: one app from flags, no file read.
	if code, _, stderr := runCLI(t, append([]string{"check"}, appArgs(srv.URL, dir)...)...); code != ExitUpdateAvail {
		t.Errorf("check from flags = %d, want 100 (nothing installed in %s): %s", code, dir, stderr)
	}
}
