package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/store"
)

func dirApp(name, appDir, stateRoot string) App {
	a := App{Name: name, Host: "http://127.0.0.1:1", Project: name, Files: []string{"main.py"},
		AppDir: appDir, StateRoot: stateRoot, UseVersionPrefix: true}
	a.ApplyDefaults()
	return a
}

// An app_dir is compared by where it really is: a symlink to a system
// directory, to another app's dir or into the state dir is refused, and so
// is a bind mount of another app's dir.
func TestValidateAppsAliases(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	for _, d := range []string{"a", "state", "b-real"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	toRoot := link("/", "to-root")
	toUsr := link("/usr", "to-usr")
	toA := link(filepath.Join(dir, "a"), "to-a")
	toState := link(state, "to-state")
	tests := []struct {
		name    string
		apps    []App
		wantKey string
		want    string // "" if valid
	}{
		{"a symlink to /", []App{dirApp("x", toRoot, state)}, "app_dir", "is / (through " + toRoot + ")"},
		{"a symlink to /usr", []App{dirApp("x", toUsr, state)}, "app_dir", "is /usr"},
		{"/etc itself", []App{dirApp("x", "/etc", state)}, "app_dir", "is /etc"},
		{"another app's dir through a symlink", []App{dirApp("a", filepath.Join(dir, "a"), state), dirApp("b", toA, state)},
			"app_dir", "is also the app_dir of app \"a\""},
		{"inside another app's dir through a symlink", []App{dirApp("a", filepath.Join(dir, "a"), state), dirApp("b", filepath.Join(toA, "sub"), state)},
			"app_dir", "lies inside the app_dir of app \"a\""},
		{"the state dir through a symlink", []App{dirApp("a", filepath.Join(toState, "a"), state)},
			"state_dir", "is also the app_dir of this app"},
		{"two apps in separate dirs", []App{dirApp("a", filepath.Join(dir, "a"), state), dirApp("b", filepath.Join(dir, "b-real"), state)}, "", ""},
		// A symlink-mode app_dir is the link itself, not what it points to.
		{"a symlink-mode link into the state dir", []App{func() App {
			a := dirApp("s", link(filepath.Join(state, "s", "releases", "v1"), "sym-app"), state)
			a.Install = store.Symlink
			return a
		}()}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateApps(tt.apps)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidateApps = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tt.wantKey || !strings.Contains(ce.Msg, tt.want) {
				t.Fatalf("ValidateApps = %v, want a ConfigError on %s saying %q", err, tt.wantKey, tt.want)
			}
		})
	}
}

// A bind mount is an alias no path comparison sees: the device and inode do.
func TestValidateAppsBindMountAlias(t *testing.T) {
	testenv.Require(t, "root, for a bind mount", os.Geteuid() == 0)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(a, b, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(b, unix.MNT_DETACH) })
	err := ValidateApps([]App{dirApp("a", a, filepath.Join(dir, "state")), dirApp("b", b, filepath.Join(dir, "state"))})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Key != "app_dir" || !strings.Contains(ce.Msg, "is also the app_dir of app \"a\"") {
		t.Fatalf("ValidateApps(b bind-mounted on a) = %v, want a ConfigError: b is also a's app_dir", err)
	}
}
