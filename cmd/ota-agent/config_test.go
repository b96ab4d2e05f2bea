package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/store"
)

// writeConfig writes lines as config.toml in a temp dir: line n of the file
// is lines[n-1], so tests can state line numbers plainly.
func writeConfig(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigErrors(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	tests := []struct {
		name    string
		lines   []string
		app     string
		key     string
		line    int
		msgPart string
	}{
		{"unknown global key", []string{
			`state_dir = "/var/lib/ota"`,
			`intreval = "5m"`,
			`[[app]]`,
			`project = "web"`,
		}, "", "intreval", 2, `unknown key (did you mean "interval"?)`},
		{"app key at top level", []string{
			`host = "https://h"`,
			`[[app]]`,
			`project = "web"`,
		}, "", "host", 1, "belongs in an [[app]] table"},
		{"unknown key in second app", []string{
			`[[app]]`,
			`name = "a"`,
			`host = "https://h"`,
			`project = "a"`,
			`app_dir = "/opt/a"`,
			``,
			`[[app]]`,
			`name = "b"`,
			`hots = "https://h"`,
		}, "b", "hots", 9, `unknown key (did you mean "host"?)`},
		{"unknown key in an unnamed app", []string{
			`[[app]]`,
			`project = "a"`,
			`[[app]]`,
			`colour = "red"`,
		}, "#2", "colour", 4, "unknown key"},
		{"boot_deadline in an app", []string{
			`[[app]]`,
			`project = "a"`,
			`boot_deadline = "1m"`,
		}, "a", "boot_deadline", 3, "global"},
		{"bad global duration", []string{
			`# comment`,
			``,
			`interval = "fortnightly"`,
			`[[app]]`,
			`project = "web"`,
		}, "", "interval", 3, `"fortnightly" is not a duration`},
		{"1ns global interval", []string{
			`interval = "1ns"`,
			`[[app]]`,
		}, "", "interval", 1, "1ns is below the minimum of 1s"},
		{"1ns app interval", []string{
			`[[app]]`,
			`project = "web"`,
			`interval = "1ns"`,
		}, "web", "interval", 3, "1ns is below the minimum of 1s"},
		{"zero app interval", []string{
			`[[app]]`,
			`project = "web"`,
			`interval = "0s"`,
		}, "web", "interval", 3, "0s is below the minimum of 1s"},
		{"bad min_rate", []string{
			`[[app]]`,
			`project = "web"`,
			`min_rate = "slow"`,
		}, "web", "min_rate", 3, `"slow" is not a size`},
		{"min_rate as a float", []string{
			`[[app]]`,
			`project = "web"`,
			`min_rate = 1.5`,
		}, "web", "min_rate", 3, `want an integer number of bytes or a string like "1KiB"`},
		{"negative min_rate", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`min_rate = -1`,
		}, "web", "min_rate", 5, "negative"},
		{"short min_rate_window", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`min_rate_window = "500ms"`,
		}, "web", "min_rate_window", 5, "500ms is below the minimum of 1s"},
		{"zero boot deadline", []string{
			`boot_deadline = "0s"`,
			`[[app]]`,
		}, "", "boot_deadline", 1, "not positive"},
		{"relative global state_dir", []string{
			`state_dir = "var/lib"`,
			`[[app]]`,
		}, "", "state_dir", 1, "absolute"},
		{"bad app duration", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`timeout = "5"`,
		}, "web", "timeout", 4, `"5" is not a duration like "5s"`},
		{"duration as a number", []string{
			`[[app]]`,
			`project = "web"`,
			`timeout = 5`,
		}, "web", "timeout", 3, `wrong type: got integer, want a duration string like "5s"`},
		{"zero timeout", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`timeout = "0s"`,
		}, "web", "timeout", 5, "not positive"},
		{"files as a string", []string{
			`[[app]]`,
			`project = "web"`,
			`files = "main.py"`,
		}, "web", "files", 3, "want an array of strings"},
		{"bad install", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`install = "copy"`,
		}, "web", "install", 5, `"copy"`},
		{"bad reset", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`reset = "restart"`,
			`unit = "web.service"`,
		}, "web", "reset", 5, `"restart"`},
		{"soft reset without unit", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`reset = "soft"`,
		}, "web", "reset", 5, "needs unit"},
		{"missing host", []string{
			`[[app]]`,
			`project = "web"`,
			`app_dir = "/opt/web"`,
		}, "web", "host", 1, "missing"},
		{"unsafe name", []string{
			`[[app]]`,
			`project = "fleet/web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
		}, "#1", "name", 1, "not a safe name"},
		{"file climbs out", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`files = ["main.py",`,
			`  "../x"]`,
		}, "web", "files", 5, `"../x"`},
		{"absolute file", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`files = ["/etc/x"]`,
		}, "web", "files", 5, `"/etc/x"`},
		{"duplicate app name", []string{
			`[[app]]`,
			`name = "web"`,
			`host = "https://h"`,
			`project = "web"`,
			`app_dir = "/opt/a"`,
			`[[app]]`,
			`name = "web"`,
			`host = "https://h"`,
			`project = "web2"`,
			`app_dir = "/opt/b"`,
		}, "web", "name", 7, `two apps are named "web"`},
		{"two apps with one app_dir", []string{
			`[[app]]`,
			`host = "https://h"`,
			`project = "a"`,
			`app_dir = "/opt/app"`,
			`[[app]]`,
			`host = "https://h"`,
			`project = "b"`,
			`app_dir = "/opt/app/"`,
		}, "b", "app_dir", 8, `the app_dir of app "a"`},
		{"state inside app_dir", []string{
			`[[app]]`,
			`host = "https://h"`,
			`project = "a"`,
			`app_dir = "/opt/app"`,
			`state_dir = "/opt/app/.ota"`,
		}, "a", "state_dir", 5, "lies inside the app_dir"},
		{"user without password", []string{
			`[[app]]`,
			`host = "https://h"`,
			`project = "web"`,
			`app_dir = "/opt/web"`,
			`user = "fleet"`,
		}, "web", "user", 5, "user is set but no password (password, password_file or $CREDENTIALS_DIRECTORY/web.password)"},
		{"password without user", []string{
			`[[app]]`,
			`host = "https://h"`,
			`project = "web"`,
			`app_dir = "/opt/web"`,
			`password = "hunter2"`,
		}, "web", "password", 5, "password is set but no user"},
		{"basic auth over http", []string{
			`[[app]]`,
			`host = "http://h"`,
			`project = "web"`,
			`app_dir = "/opt/web"`,
			`user = "fleet"`,
			`password = "hunter2"`,
		}, "web", "host", 2, "allow_insecure_auth"},
		{"password and password_file", []string{
			`[[app]]`,
			`host = "https://h"`,
			`project = "web"`,
			`app_dir = "/opt/web"`,
			`user = "fleet"`,
			`password = "hunter2"`,
			`password_file = "/etc/ota-agent/web.password"`,
		}, "web", "password_file", 7, "both set"},
		{"missing password_file", []string{
			`[[app]]`,
			`project = "web"`,
			`user = "fleet"`,
			`password_file = "/nonexistent/web.password"`,
		}, "web", "password_file", 4, "/nonexistent/web.password"},
		{"bad size", []string{
			`[[app]]`,
			`project = "web"`,
			`max_file_size = "lots"`,
		}, "web", "max_file_size", 3, `"lots" is not a size`},
		{"size as a float", []string{
			`[[app]]`,
			`project = "web"`,
			`max_file_size = 1.5`,
		}, "web", "max_file_size", 3, "integer number of bytes"},
		{"zero size", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`max_file_size = 0`,
		}, "web", "max_file_size", 5, "not positive"},
		{"zero keep_releases", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h"`,
			`app_dir = "/opt/web"`,
			`keep_releases = 0`,
		}, "web", "keep_releases", 5, "less than 1"},
		{"key set twice", []string{
			`[[app]]`,
			`project = "web"`,
			`project = "web2"`,
		}, "web", "project", 3, "already defined"},
		{"no apps", []string{
			`state_dir = "/var/lib/ota-agent"`,
		}, "", "", 0, "no [[app]] table"},
		{"unparseable", []string{
			`[[app]]`,
			`project = "web"`,
			`host = "https://h`,
		}, "", "", 3, "not valid TOML"},
		{"unclosed table", []string{
			`interval = "5m"`,
			`[[app]`,
		}, "", "", 2, "not valid TOML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.lines...)
			cfg, err := loadConfig(path)
			var ce *agent.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("loadConfig(...) = %+v, %v, want a *agent.ConfigError", cfg, err)
			}
			if ce.App != tt.app || ce.Key != tt.key || ce.Line != tt.line || !strings.Contains(ce.Msg, tt.msgPart) {
				t.Errorf("loadConfig(...) = %v\n(app %q key %q line %d), want app %q key %q line %d and %q",
					err, ce.App, ce.Key, ce.Line, tt.app, tt.key, tt.line, tt.msgPart)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("loadConfig(...) = %v, shows the password", err)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	_, err := loadConfig(path)
	var ce *agent.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--host") {
		t.Errorf("loadConfig(%q) = %v, want a ConfigError naming the file and the flags", path, err)
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	path := writeConfig(t,
		`[[app]]`,
		`host = "https://ota.example.com"`,
		`project = "web"`,
		`files = ["main.py", "lib/util.py"]`,
		`app_dir = "/opt/web"`,
		`unit = "web.service"`,
	)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("loadConfig(...) = %v, want nil", err)
	}
	want := &Config{
		StateRoot: agent.DefaultStateRoot, Interval: 15 * time.Minute, BootDeadline: 2 * time.Minute, RuntimeDir: store.DefaultRuntimeDir, RebootGrace: 90 * time.Second,
		Apps: []agent.App{{
			Name: "web", Host: "https://ota.example.com", Project: "web", Files: []string{"main.py", "lib/util.py"},
			UseVersionPrefix: true, AppDir: "/opt/web", StateRoot: agent.DefaultStateRoot,
			Install: store.InPlace, Reset: agent.ResetSoft, Unit: "web.service", SystemdBus: "system",
			HardReset: "reboot", Timeout: 5 * time.Second, MaxFileSize: agent.DefaultMaxFileSize,
			KeepReleases: agent.DefaultKeepReleases, MinRate: agent.DefaultMinRate, MinRateWindow: time.Minute,
			Trial: agent.DefaultTrial, StartTimeout: agent.DefaultStartTimeout, HealthTimeout: agent.DefaultHealthTimeout,
			HealthGrace: agent.DefaultHealthGrace, OnFailure: agent.OnFailureRollback, MaxBootAttempts: agent.DefaultMaxBootAttempts,
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("loadConfig(...) =\n%+v, want\n%+v", cfg, want)
	}
}

func TestLoadConfigEverything(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "b.password"), []byte("s3cret \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.toml")
	doc := `
state_dir = "/data/ota/"
interval = "1h"
boot_deadline = "30s"

[[app]]
name = "a"
host = "http://10.0.0.2:8000/fleet"
project = "fleet/a"
app_dir = "/opt/a"
use_version_prefix = false
install = "symlink"
reset = "hard"
hard_reset = "watchdog"
systemd_bus = "user"
timeout = "10s"
user = "dev"
password = "hunter2"
allow_insecure_auth = true
max_file_size = "512MiB"
keep_releases = 3
interval = "5m"
min_rate = "2KiB"
min_rate_window = "2m"

[[app]]
name = "b"
host = "https://h"
project = "b"
app_dir = "/opt/b"
state_dir = "/var/lib/b-state"
user = "dev"
password_file = "b.password"
ca_file = "ca.pem"
max_file_size = 1000
min_rate = 0
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("loadConfig(...) = %v, want nil", err)
	}
	if cfg.StateRoot != "/data/ota" || cfg.Interval != time.Hour || cfg.BootDeadline != 30*time.Second || len(cfg.Apps) != 2 {
		t.Fatalf("loadConfig(...) = %+v, want state /data/ota, interval 1h, boot deadline 30s, 2 apps", cfg)
	}
	a, b := cfg.Apps[0], cfg.Apps[1]
	wantA := agent.App{
		Name: "a", Host: "http://10.0.0.2:8000/fleet", Project: "fleet/a", AppDir: "/opt/a", StateRoot: "/data/ota",
		Install: store.Symlink, Reset: agent.ResetHard, HardReset: "watchdog", SystemdBus: "user",
		Timeout: 10 * time.Second, User: "dev", Password: "hunter2", AllowInsecureAuth: true,
		MaxFileSize: 512 << 20, KeepReleases: 3, Interval: 5 * time.Minute, MinRate: 2048, MinRateWindow: 2 * time.Minute,
		Trial: agent.DefaultTrial, StartTimeout: agent.DefaultStartTimeout, HealthTimeout: agent.DefaultHealthTimeout,
		HealthGrace: agent.DefaultHealthGrace, OnFailure: agent.OnFailureRollback, MaxBootAttempts: agent.DefaultMaxBootAttempts,
	}
	if !reflect.DeepEqual(a, wantA) {
		t.Errorf("loadConfig(...) app a =\n%+v, want\n%+v", a, wantA)
	}
	if b.StateRoot != "/var/lib/b-state" || b.StateDir() != "/var/lib/b-state/b" || !b.UseVersionPrefix {
		t.Errorf("loadConfig(...) app b = %+v, want its own state_dir and version prefix", b)
	}
	if b.Password != "s3cret" {
		t.Errorf("loadConfig(...) app b password = %q, want the file's, trimmed", b.Password)
	}
	if b.CAFile != filepath.Join(dir, "ca.pem") || b.MaxFileSize != 1000 || b.Interval != 0 {
		t.Errorf("loadConfig(...) app b = %+v, want ca_file beside the config, max_file_size 1000, no own interval", b)
	}
	if b.MinRate != 0 || b.MinRateWindow != agent.DefaultMinRateWindow {
		t.Errorf("loadConfig(...) app b = %+v, want min_rate 0 (off) and the default window", b)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("loadConfig(...) of a 0600 file = warnings %q, want none", cfg.Warnings)
	}
}

func TestLoadConfigInlineApps(t *testing.T) {
	path := writeConfig(t,
		`app = [`,
		`  {host = "https://h", project = "a", app_dir = "/opt/a"},`,
		`  {host = "https://h", project = "b", app_dir = "/opt/b", bogus = 1},`,
		`]`,
	)
	_, err := loadConfig(path)
	var ce *agent.ConfigError
	if !errors.As(err, &ce) || ce.App != "b" || ce.Key != "bogus" || ce.Line != 3 {
		t.Errorf("loadConfig(...) = %v, want app b, key bogus, line 3", err)
	}
}

func TestLoadConfigCredentialsDirectory(t *testing.T) {
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "web.password"), []byte("from-systemd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	app := func(extra ...string) []string {
		return append([]string{`[[app]]`, `host = "https://h"`, `project = "web"`, `app_dir = "/opt/web"`}, extra...)
	}

	cfg, err := loadConfig(writeConfig(t, app(`user = "fleet"`)...))
	if err != nil || cfg.Apps[0].Password != "from-systemd" {
		t.Errorf("loadConfig(...) = %v, want the password from $CREDENTIALS_DIRECTORY/web.password", err)
	}
	cfg, err = loadConfig(writeConfig(t, app(`user = "fleet"`, `password = "own"`)...))
	if err != nil || cfg.Apps[0].Password != "own" {
		t.Errorf("loadConfig(...) = %v, want the configured password to win", err)
	}
	_, err = loadConfig(writeConfig(t, app()...))
	var ce *agent.ConfigError
	if !errors.As(err, &ce) || ce.Key != "user" || !strings.Contains(ce.Msg, "web.password") || strings.Contains(err.Error(), "from-systemd") {
		t.Errorf("loadConfig(...) = %v, want a user error naming the credential file", err)
	}

	t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir()) // no web.password there
	_, err = loadConfig(writeConfig(t, app(`user = "fleet"`)...))
	if !errors.As(err, &ce) || ce.Key != "user" || !strings.Contains(ce.Msg, "no password") {
		t.Errorf("loadConfig(...) = %v, want user is set but no password", err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20},
		{"100K", 100 << 10},
		{"100KiB", 100 << 10},
		{"100KB", 100e3},
		{"512MiB", 512 << 20},
		{"512 MiB", 512 << 20},
		{"2GB", 2e9},
		{"2G", 2 << 30},
		{"1.5GiB", 3 << 29},
		{"1T", 1 << 40},
		{"10b", 10},
	}
	for _, tt := range tests {
		if got, err := parseSize(tt.in); err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "MiB", "12 parsecs", "-5", "1.2.3M", "99999999999999999999", "10000000TB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, nil, want an error", in, got)
		}
	}
}

func parseAppFlags(t *testing.T, args ...string) *appFlags {
	t.Helper()
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f appFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("Parse(%q) = %v, want nil", args, err)
	}
	return &f
}

func TestAppFlags(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	f := parseAppFlags(t, "--host", "https://ota.example.com", "--project", "web", "--files", "main.py, lib/util.py,",
		"--app-dir", "/opt/web", "--unit", "web.service")
	if !f.any() {
		t.Errorf("any() = false, want true")
	}
	a, err := f.app()
	want := agent.App{
		Name: "web", Host: "https://ota.example.com", Project: "web", Files: []string{"main.py", "lib/util.py"},
		UseVersionPrefix: true, AppDir: "/opt/web", StateRoot: agent.DefaultStateRoot,
		Install: store.InPlace, Reset: agent.ResetSoft, Unit: "web.service", SystemdBus: "system",
		HardReset: "reboot", Timeout: 5 * time.Second, MaxFileSize: agent.DefaultMaxFileSize,
		KeepReleases: agent.DefaultKeepReleases, MinRate: agent.DefaultMinRate, MinRateWindow: agent.DefaultMinRateWindow,
		Trial: agent.DefaultTrial, StartTimeout: agent.DefaultStartTimeout, HealthTimeout: agent.DefaultHealthTimeout,
		HealthGrace: agent.DefaultHealthGrace, OnFailure: agent.OnFailureRollback, MaxBootAttempts: agent.DefaultMaxBootAttempts,
	}
	if err != nil || !reflect.DeepEqual(a, want) {
		t.Errorf("app() = %+v, %v, want\n%+v", a, err, want)
	}

	f = parseAppFlags(t, "--host", "http://h:8000", "--project", "p", "--app-dir", "/opt/p", "--name", "n",
		"--state-dir", "/data", "--no-version-prefix", "--install", "symlink", "--reset", "hard",
		"--hard-reset", "watchdog", "--systemd-bus", "user", "--timeout", "30s", "--user", "u",
		"--password-file", pwFile, "--allow-insecure-auth", "--ca-file", "/etc/ca.pem",
		"--max-file-size", "2GB", "--keep-releases", "4", "--min-rate", "512", "--min-rate-window", "90s")
	a, err = f.app()
	want = agent.App{
		Name: "n", Host: "http://h:8000", Project: "p", AppDir: "/opt/p", StateRoot: "/data",
		Install: store.Symlink, Reset: agent.ResetHard, HardReset: "watchdog", SystemdBus: "user",
		Timeout: 30 * time.Second, User: "u", Password: "s3cret", AllowInsecureAuth: true, CAFile: "/etc/ca.pem",
		MaxFileSize: 2e9, KeepReleases: 4, MinRate: 512, MinRateWindow: 90 * time.Second,
		Trial: agent.DefaultTrial, StartTimeout: agent.DefaultStartTimeout, HealthTimeout: agent.DefaultHealthTimeout,
		HealthGrace: agent.DefaultHealthGrace, OnFailure: agent.OnFailureRollback, MaxBootAttempts: agent.DefaultMaxBootAttempts,
	}
	if err != nil || !reflect.DeepEqual(a, want) {
		t.Errorf("app() = %+v, %v, want\n%+v", a, err, want)
	}

	if f := parseAppFlags(t); f.any() {
		t.Errorf("any() with no flags = true, want false")
	}
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	var other bool
	fs.BoolVar(&other, "verbose", false, "")
	var g appFlags
	g.register(fs)
	if err := fs.Parse([]string{"--verbose"}); err != nil || g.any() {
		t.Errorf("any() with only --verbose = %v (%v), want false", g.any(), err)
	}
}

func TestAppFlagsErrors(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	base := []string{"--host", "https://h", "--project", "web", "--app-dir", "/opt/web"}
	tests := []struct {
		name    string
		args    []string
		key     string
		msgPart string
	}{
		{"no host", []string{"--project", "web", "--app-dir", "/opt/web"}, "--host", "missing"},
		{"no app dir", []string{"--host", "https://h", "--project", "web"}, "--app-dir", "missing"},
		{"bad timeout", append(base, "--timeout", "5"), "--timeout", "not a duration"},
		{"zero timeout", append(base, "--timeout", "0s"), "--timeout", "not positive"},
		{"bad size", append(base, "--max-file-size", "big"), "--max-file-size", "not a size"},
		{"zero keep", append(base, "--keep-releases", "0"), "--keep-releases", "less than 1"},
		{"bad install", append(base, "--install", "copy"), "--install", `"copy"`},
		{"bad file", append(base, "--files", "a.py,../x"), "--files", `"../x"`},
		{"user only", append(base, "--user", "u"), "--user", "(--password-file or $CREDENTIALS_DIRECTORY/web.password)"},
		{"missing password file", append(base, "--user", "u", "--password-file", "/nonexistent/pw"), "--password-file", "/nonexistent/pw"},
		{"basic auth over http", []string{"--host", "http://h", "--project", "web", "--app-dir", "/opt/web",
			"--user", "u", "--password-file", os.DevNull}, "--password-file", "empty"},
		{"soft reset without unit", append(base, "--reset", "soft"), "--reset", "needs --unit"},
		{"bad min rate", append(base, "--min-rate", "fast"), "--min-rate", "not a size"},
		{"short min rate window", append(base, "--min-rate-window", "10ms"), "--min-rate-window", "below the minimum of 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseAppFlags(t, tt.args...).app()
			var ce *agent.ConfigError
			if !errors.As(err, &ce) || ce.Key != tt.key || !strings.Contains(ce.Msg, tt.msgPart) {
				t.Errorf("app() = %v, want key %q and a message with %q", err, tt.key, tt.msgPart)
			}
		})
	}

	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--host", "http://h", "--project", "web", "--app-dir", "/opt/web", "--user", "u", "--password-file", pwFile}
	_, err := parseAppFlags(t, args...).app()
	var ce *agent.ConfigError
	if !errors.As(err, &ce) || ce.Key != "--host" || !strings.Contains(ce.Msg, "--allow-insecure-auth") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("app() = %v, want Basic auth over http refused, naming --allow-insecure-auth", err)
	}
	if _, err := parseAppFlags(t, append(args, "--allow-insecure-auth")...).app(); err != nil {
		t.Errorf("app() with --allow-insecure-auth = %v, want nil", err)
	}
}

func TestAppFlagsCredentialsDirectory(t *testing.T) {
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "web.password"), []byte("from-systemd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	a, err := parseAppFlags(t, "--host", "https://h", "--project", "web", "--app-dir", "/opt/web", "--user", "u").app()
	if err != nil || a.Password != "from-systemd" {
		t.Errorf("app() = %v, want the password from $CREDENTIALS_DIRECTORY/web.password", err)
	}
}

func TestSelectApps(t *testing.T) {
	cfg := &Config{Apps: []agent.App{{Name: "a"}, {Name: "b"}, {Name: "c"}}}
	names := func(apps []agent.App) []string {
		var n []string
		for _, a := range apps {
			n = append(n, a.Name)
		}
		return n
	}
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"a", "b", "c"}},
		{[]string{"c", "a"}, []string{"c", "a"}},
		{[]string{"b", "b"}, []string{"b"}},
	}
	for _, tt := range tests {
		got, err := selectApps(cfg, tt.args)
		if err != nil || !reflect.DeepEqual(names(got), tt.want) {
			t.Errorf("selectApps(%q) = %q, %v, want %q", tt.args, names(got), err, tt.want)
		}
	}
	_, err := selectApps(cfg, []string{"a", "x"})
	var ce *agent.ConfigError
	if !errors.As(err, &ce) || ce.Msg != "no app named x (configured: a, b, c)" {
		t.Errorf("selectApps(a, x) = %v, want no app named x (configured: a, b, c)", err)
	}
}
