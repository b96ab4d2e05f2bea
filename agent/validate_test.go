package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
)

// validApp returns an app that passes Validate, for tests to break one field.
func validApp() App {
	a := App{
		Name:             "web",
		Host:             "https://ota.example.com/fleet",
		Project:          "web",
		Files:            []string{"main.py", "lib/util.py"},
		UseVersionPrefix: true,
		AppDir:           "/opt/web",
		Unit:             "web.service",
	}
	a.ApplyDefaults()
	return a
}

func TestApplyDefaults(t *testing.T) {
	a := App{Project: "p", AppDir: "/opt/p/", Unit: "p.service"}
	a.ApplyDefaults()
	want := App{Name: "p", Project: "p", AppDir: "/opt/p", Unit: "p.service", Install: store.InPlace,
		Reset: ResetSoft, SystemdBus: reset.BusSystem, HardReset: reset.MethodReboot, Timeout: DefaultTimeout,
		MaxFileSize: DefaultMaxFileSize, KeepReleases: DefaultKeepReleases, StateRoot: DefaultStateRoot}
	if a.Name != want.Name || a.AppDir != want.AppDir || a.Install != want.Install || a.Reset != want.Reset ||
		a.SystemdBus != want.SystemdBus || a.HardReset != want.HardReset || a.Timeout != want.Timeout ||
		a.MaxFileSize != want.MaxFileSize || a.KeepReleases != want.KeepReleases || a.StateRoot != want.StateRoot {
		t.Errorf("ApplyDefaults() = %+v, want %+v", a, want)
	}

	b := App{Name: "n", Project: "p", Reset: ResetHard, Timeout: time.Second}
	b.ApplyDefaults()
	if b.Name != "n" || b.Reset != ResetHard || b.Timeout != time.Second {
		t.Errorf("ApplyDefaults() = %+v, want name n, reset hard, timeout 1s kept", b)
	}
	c := App{Project: "p"}
	c.ApplyDefaults()
	if c.Reset != ResetNone {
		t.Errorf("ApplyDefaults() without unit: reset = %q, want %q", c.Reset, ResetNone)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(a *App)
		key     string // "" means valid
		msgPart string
	}{
		{"valid", func(a *App) {}, "", ""},
		{"no files", func(a *App) { a.Files = nil }, "", ""},
		{"http without auth", func(a *App) { a.Host = "http://10.0.0.1:8000" }, "", ""},
		{"http with auth allowed", func(a *App) {
			a.Host, a.User, a.Password, a.AllowInsecureAuth = "http://h", "u", "secret", true
		}, "", ""},
		{"https with auth", func(a *App) { a.User, a.Password = "u", "secret" }, "", ""},
		{"ca_file with http", func(a *App) { a.Host, a.CAFile = "http://h", "/etc/ca.pem" }, "", ""},
		{"symlink", func(a *App) { a.Install = store.Symlink }, "", ""},
		{"hard reset by watchdog", func(a *App) { a.Reset, a.HardReset, a.Unit = ResetHard, reset.MethodWatchdog, "" }, "", ""},
		{"user bus", func(a *App) { a.SystemdBus = reset.BusUser }, "", ""},

		{"empty name", func(a *App) { a.Name = "" }, "name", "not a safe name"},
		{"name with slash", func(a *App) { a.Name = "fleet/web" }, "name", `"fleet/web"`},
		{"name with dot first", func(a *App) { a.Name = ".web" }, "name", "[A-Za-z0-9]"},
		{"no project", func(a *App) { a.Project = "" }, "project", "missing"},
		{"no host", func(a *App) { a.Host = "" }, "host", "missing"},
		{"ftp host", func(a *App) { a.Host = "ftp://h" }, "host", "http:// or https://"},
		{"host without scheme", func(a *App) { a.Host = "ota.example.com" }, "host", "http:// or https://"},
		{"host with query", func(a *App) { a.Host = "https://h/?x=1" }, "host", "query"},
		{"host with credentials", func(a *App) { a.Host = "https://u:hunter2@h" }, "host", "credentials"},
		{"no app_dir", func(a *App) { a.AppDir = "" }, "app_dir", "missing"},
		{"relative app_dir", func(a *App) { a.AppDir = "opt/web" }, "app_dir", "absolute"},
		{"root app_dir", func(a *App) { a.AppDir = "/" }, "app_dir", "must not be /"},
		{"relative state root", func(a *App) { a.StateRoot = "var/lib" }, "state_dir", "absolute"},
		{"file climbs out", func(a *App) { a.Files = []string{"main.py", "../x"} }, "files", `"../x"`},
		{"absolute file", func(a *App) { a.Files = []string{"/etc/x"} }, "files", `"/etc/x"`},
		{"duplicate file", func(a *App) { a.Files = []string{"a.py", "b.py", "a.py"} }, "files", `"a.py" is listed twice`},
		{"file and directory", func(a *App) { a.Files = []string{"lib", "lib/util.py"} }, "files", `"lib"`},
		{"bad install", func(a *App) { a.Install = "copy" }, "install", `"copy"`},
		{"bad reset", func(a *App) { a.Reset = "restart" }, "reset", `"restart"`},
		{"soft reset without unit", func(a *App) { a.Unit = "" }, "reset", "needs unit"},
		{"unit without suffix", func(a *App) { a.Unit = "web" }, "unit", `"web.service"`},
		{"unit with slash", func(a *App) { a.Unit = "../web.service" }, "unit", "not a unit name"},
		{"bad bus", func(a *App) { a.SystemdBus = "session" }, "systemd_bus", `"session"`},
		{"bad hard reset", func(a *App) { a.HardReset = "halt" }, "hard_reset", `"halt"`},
		{"zero timeout", func(a *App) { a.Timeout = 0 }, "timeout", "not positive"},
		{"negative timeout", func(a *App) { a.Timeout = -time.Second }, "timeout", "not positive"},
		{"zero max size", func(a *App) { a.MaxFileSize = 0 }, "max_file_size", "not positive"},
		{"zero keep", func(a *App) { a.KeepReleases = 0 }, "keep_releases", "less than 1"},
		{"negative interval", func(a *App) { a.Interval = -time.Minute }, "interval", "below the minimum of 1s"},
		{"1ns interval", func(a *App) { a.Interval = time.Nanosecond }, "interval", "1ns is below the minimum of 1s"},
		{"interval at the minimum", func(a *App) { a.Interval = MinInterval }, "", ""},
		{"min_rate off", func(a *App) { a.MinRate = 0 }, "", ""},
		{"negative min_rate", func(a *App) { a.MinRate = -1 }, "min_rate", "negative"},
		{"zero min_rate_window", func(a *App) { a.MinRateWindow = 0 }, "min_rate_window", "below the minimum of 1s"},
		{"short min_rate_window", func(a *App) { a.MinRateWindow = 100 * time.Millisecond }, "min_rate_window", "100ms"},
		{"user without password", func(a *App) { a.User = "u" }, "user",
			"user is set but no password (password, password_file or $CREDENTIALS_DIRECTORY/web.password)"},
		{"password without user", func(a *App) { a.Password = "secret" }, "password", "password is set but no user"},
		{"basic auth over http", func(a *App) { a.Host, a.User, a.Password = "http://h", "u", "secret" },
			"host", "allow_insecure_auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validApp()
			tt.change(&a)
			err := a.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate() = %v, want a *ConfigError for %s", err, tt.key)
			}
			if ce.Key != tt.key || !strings.Contains(ce.Msg, tt.msgPart) {
				t.Errorf("Validate() = %v (key %q), want key %q and a message with %q", err, ce.Key, tt.key, tt.msgPart)
			}
			for _, secret := range []string{"secret", "hunter2"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Validate() = %v, shows the password", err)
				}
			}
		})
	}
}

func TestValidateApps(t *testing.T) {
	app := func(name, appDir, stateRoot string) App {
		a := validApp()
		a.Name, a.Project, a.AppDir, a.StateRoot = name, name, appDir, stateRoot
		return a
	}
	const root = "/var/lib/ota-agent"
	tests := []struct {
		name    string
		apps    []App
		app     string // app named in the error; "" means valid
		key     string
		msgPart string
	}{
		{"none", nil, "", "", ""},
		{"two apps", []App{app("a", "/opt/a", root), app("b", "/opt/b", root)}, "", "", ""},
		{"siblings with a common prefix", []App{app("a", "/opt/a", root), app("b", "/opt/ab", root)}, "", "", ""},
		{"invalid app", []App{app("a", "/opt/a", root), app("b", "", root)}, "b", "app_dir", "missing"},
		{"duplicate name", []App{app("a", "/opt/a", root), app("a", "/opt/b", root)}, "a", "name", `two apps are named "a"`},
		{"shared app_dir", []App{app("a", "/opt/a", root), app("b", "/opt/a/", root)}, "b", "app_dir", `is also the app_dir of app "a"`},
		{"nested app_dir", []App{app("a", "/opt/a", root), app("b", "/opt/a/plugins", root)}, "b", "app_dir", `lies inside the app_dir of app "a"`},
		{"app_dir around another", []App{app("a", "/opt/a/plugins", root), app("b", "/opt/a", root)}, "b", "app_dir", `contains the app_dir of app "a"`},
		{"state inside own app_dir", []App{app("a", "/opt/a", "/opt/a/.ota")}, "a", "state_dir", "lies inside the app_dir of this app"},
		{"app_dir inside own state", []App{app("a", "/srv/ota/a/app", "/srv/ota")}, "a", "state_dir", "contains the app_dir of this app"},
		{"state inside another app_dir", []App{app("a", "/opt/a", root), app("b", "/opt/b", "/opt/a")}, "b", "state_dir", `app "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateApps(tt.apps)
			if tt.app == "" {
				if err != nil {
					t.Fatalf("ValidateApps() = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.App != tt.app || ce.Key != tt.key || !strings.Contains(ce.Msg, tt.msgPart) {
				t.Errorf("ValidateApps() = %v, want app %q key %q message with %q", err, tt.app, tt.key, tt.msgPart)
			}
		})
	}
}
