package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckTag(t *testing.T) {
	good := []string{"v1.0.1", "1", "v1.0.0+build.7", "release_2024-01-01", strings.Repeat("a", MaxTagLen)}
	for _, tag := range good {
		if err := CheckTag(tag); err != nil {
			t.Errorf("CheckTag(%q) = %v, want nil", tag, err)
		}
	}
	bad := []string{"", "../x", "v1/../..", "v1/x", ".hidden", "-v1", "_v1", "v1\n", "v1\x00", "v1 2",
		strings.Repeat("a", MaxTagLen+1), "<html><body>Login</body></html>", "v1\\x", "..", "."}
	for _, tag := range bad {
		if err := CheckTag(tag); !errors.Is(err, ErrBadTag) {
			t.Errorf("CheckTag(%q) = %v, want ErrBadTag", tag, err)
		}
	}
}

func TestCheckPath(t *testing.T) {
	good := []string{"main.py", "lib/util.py", "a/b/c.txt", "..hidden", "x..y"}
	for _, p := range good {
		if err := CheckPath(p); err != nil {
			t.Errorf("CheckPath(%q) = %v, want nil", p, err)
		}
	}
	bad := []string{"", ".", "/etc/passwd", "../x", "lib/../../x", "a/./b", "a//b", "a/", "..", "a\\b", "a\nb"}
	for _, p := range bad {
		if err := CheckPath(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("CheckPath(%q) = %v, want ErrBadPath", p, err)
		}
	}
}

func TestLayoutURLs(t *testing.T) {
	tests := []struct {
		l             Layout
		version, file string
	}{
		{Layout{"http://h", "sample", true}, "http://h/sample/version", "http://h/sample/v1.0.1_lib/util.py"},
		{Layout{"http://h/", "sample", false}, "http://h/sample/version", "http://h/sample/v1.0.1/lib/util.py"},
		{Layout{"https://h/base", "fleet/sample", true}, "https://h/base/fleet/sample/version", "https://h/base/fleet/sample/v1.0.1_lib/util.py"},
		{Layout{"http://h", "my project", true}, "http://h/my%20project/version", "http://h/my%20project/v1.0.1_lib/util.py"},
	}
	for _, tt := range tests {
		if got := tt.l.VersionURL(); got != tt.version {
			t.Errorf("%+v.VersionURL() = %q, want %q", tt.l, got, tt.version)
		}
		if got := tt.l.FileURL("v1.0.1", "lib/util.py"); got != tt.file {
			t.Errorf("%+v.FileURL() = %q, want %q", tt.l, got, tt.file)
		}
	}
}

func TestCheckRequestPath(t *testing.T) {
	for _, tt := range []struct {
		path string
		ok   bool
	}{
		{"p/version", true},
		{"p/v1_main.py", true},
		{"p/v1/lib/util.py", true},
		{"p/v1_.env", true},      // a release file ".env", prefix layout
		{"p/v1/.env", true},      // the same, subdirectory layout
		{"p/v1_lib/.env", true},  // "lib/.env"
		{"p/v1/lib/.env", true},  // "lib/.env"
		{"fleet/web/v1/x", true}, // a project of two segments
		{".git/config", false},
		{"p/.git/config", false},
		{"p/.htpasswd", false},
		{".env", false},
		{"p/v1/../x", false},
		{"p//x", false},
		{"p/x/", false},
		{"/p/x", false},
		{"p/a\\b", false},
	} {
		err := CheckRequestPath(tt.path)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrBadPath) {
			t.Errorf("CheckRequestPath(%q) = %v, want ok %v", tt.path, err, tt.ok)
		}
		// Every release file the agent accepts is a path the server serves.
		if file, ok := strings.CutPrefix(tt.path, "p/v1/"); ok && CheckPath(file) == nil && err != nil {
			t.Errorf("CheckPath(%q) = nil but CheckRequestPath(%q) = %v", file, tt.path, err)
		}
	}
}
