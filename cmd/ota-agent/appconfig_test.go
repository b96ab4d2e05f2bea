package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ota-agent/ota-agent/agent"
)

// The config file and the flags go through one builder: the same app said
// either way is the same agent.App, and the same mistake is the same error,
// named by key in the one and by flag in the other.
func TestFileAndFlagsAgree(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{`host = "https://ota.example.com"`, `project = "web"`, `app_dir = "/opt/web"`}
	baseFlags := []string{"--host", "https://ota.example.com", "--project", "web", "--app-dir", "/opt/web"}
	tests := []struct {
		name  string
		lines []string // the [[app]] table's keys besides base
		flags []string // the flags besides baseFlags
	}{
		{"defaults", nil, nil},
		{"soft reset", []string{`unit = "web.service"`, `files = ["main.py", "lib/util.py"]`},
			[]string{"--unit", "web.service", "--files", "main.py,lib/util.py"}},
		{"everything", []string{
			`name = "n"`, `use_version_prefix = false`, `state_dir = "/data"`, `install = "symlink"`,
			`reset = "hard"`, `hard_reset = "watchdog"`, `watchdog_device = "/dev/watchdog1"`,
			`systemd_bus = "user"`, `timeout = "30s"`, `user = "u"`, `password_file = "` + pwFile + `"`,
			`ca_file = "/etc/ca.pem"`, `max_file_size = "2GB"`, `keep_releases = 4`,
			`min_rate = 512`, `min_rate_window = "90s"`,
		}, []string{
			"--name", "n", "--no-version-prefix", "--state-dir", "/data", "--install", "symlink",
			"--reset", "hard", "--hard-reset", "watchdog", "--watchdog-device", "/dev/watchdog1",
			"--systemd-bus", "user", "--timeout", "30s", "--user", "u", "--password-file", pwFile,
			"--ca-file", "/etc/ca.pem", "--max-file-size", "2GB", "--keep-releases", "4",
			"--min-rate", "512", "--min-rate-window", "90s",
		}},
		{"basic auth over http allowed", []string{`host = "http://h"`, `user = "u"`, `password_file = "` + pwFile + `"`, `allow_insecure_auth = true`},
			[]string{"--host", "http://h", "--user", "u", "--password-file", pwFile, "--allow-insecure-auth"}},
		{"min rate off", []string{`min_rate = "0"`}, []string{"--min-rate", "0"}},
		{"empty timeout is the default", []string{`timeout = ""`}, []string{"--timeout", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := append([]string{"[[app]]"}, tt.lines...)
			for _, l := range base { // unless the case sets the key itself
				key, _, _ := strings.Cut(l, " = ")
				if !slices.ContainsFunc(tt.lines, func(m string) bool { return strings.HasPrefix(m, key+" = ") }) {
					lines = append(lines, l)
				}
			}
			cfg, err := loadConfig(writeConfig(t, lines...))
			if err != nil {
				t.Fatalf("loadConfig(%q) = %v", lines, err)
			}
			args := append(append([]string(nil), baseFlags...), tt.flags...) // the last of a flag given twice wins
			a, err := parseAppFlags(t, args...).app()
			if err != nil {
				t.Fatalf("app() from %q = %v", args, err)
			}
			if !reflect.DeepEqual(a, cfg.Apps[0]) {
				t.Errorf("from flags %q:\n%+v\nfrom the file %q:\n%+v", args, a, lines, cfg.Apps[0])
			}
		})
	}

	mistakes := []struct {
		name      string
		line      string
		flags     []string
		key, flag string
	}{
		{"bad timeout", `timeout = "5"`, []string{"--timeout", "5"}, "timeout", "--timeout"},
		{"zero timeout", `timeout = "0s"`, []string{"--timeout", "0s"}, "timeout", "--timeout"},
		{"bad size", `max_file_size = "big"`, []string{"--max-file-size", "big"}, "max_file_size", "--max-file-size"},
		{"zero keep", `keep_releases = 0`, []string{"--keep-releases", "0"}, "keep_releases", "--keep-releases"},
		{"bad install", `install = "copy"`, []string{"--install", "copy"}, "install", "--install"},
		{"bad bus", `systemd_bus = "session"`, []string{"--systemd-bus", "session"}, "systemd_bus", "--systemd-bus"},
		{"bad hard reset", `hard_reset = "halt"`, []string{"--hard-reset", "halt"}, "hard_reset", "--hard-reset"},
		{"bare unit", `unit = "web"`, []string{"--unit", "web"}, "unit", "--unit"},
		{"bad file", `files = ["a.py", "../x"]`, []string{"--files", "a.py,../x"}, "files", "--files"},
		{"short min rate window", `min_rate_window = "10ms"`, []string{"--min-rate-window", "10ms"}, "min_rate_window", "--min-rate-window"},
	}
	for _, tt := range mistakes {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, append([]string{"[[app]]", tt.line}, base...)...))
			var fileErr, flagErr *agent.ConfigError
			if !errors.As(err, &fileErr) || fileErr.Key != tt.key {
				t.Fatalf("loadConfig with %s = %v, want a ConfigError for %s", tt.line, err, tt.key)
			}
			_, err = parseAppFlags(t, append(append([]string(nil), baseFlags...), tt.flags...)...).app()
			if !errors.As(err, &flagErr) || flagErr.Key != tt.flag {
				t.Fatalf("app() with %q = %v, want a ConfigError for %s", tt.flags, err, tt.flag)
			}
			if fileErr.Msg != flagErr.Msg {
				t.Errorf("the file says %q, the flags %q; want the same", fileErr.Msg, flagErr.Msg)
			}
		})
	}
}
