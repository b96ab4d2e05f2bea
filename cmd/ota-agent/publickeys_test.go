package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"

	"aead.dev/minisign"
	"github.com/ota-agent/ota-agent/agent"
)

// public_keys: global as the default of every app, an app's own list
// instead of it, and --public-keys for one app from flags; a key that is
// not one is a configuration error naming the key.
func TestPublicKeysConfig(t *testing.T) {
	k1, _, _ := minisign.GenerateKey(rand.Reader)
	k2, _, _ := minisign.GenerateKey(rand.Reader)
	path := writeConfig(t,
		fmt.Sprintf("public_keys = [%q]", k1.String()),
		`[[app]]`, `name = "a"`, `host = "https://h"`, `project = "a"`, `app_dir = "/opt/a"`,
		`[[app]]`, `name = "b"`, `host = "https://h"`, `project = "b"`, `app_dir = "/opt/b"`,
		fmt.Sprintf("public_keys = [%q, %q]", k2.String(), k1.String()),
	)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("loadConfig = %v", err)
	}
	if got := cfg.Apps[0].PublicKeys; !slices.Equal(got, []string{k1.String()}) {
		t.Errorf("app a public_keys = %v, want the global one", got)
	}
	if got := cfg.Apps[1].PublicKeys; !slices.Equal(got, []string{k2.String(), k1.String()}) {
		t.Errorf("app b public_keys = %v, want its own", got)
	}
	bad := writeConfig(t, `[[app]]`, `host = "https://h"`, `project = "a"`, `app_dir = "/opt/a"`, `public_keys = ["RWQnot a key"]`)
	var ce *agent.ConfigError
	if _, err := loadConfig(bad); !errors.As(err, &ce) || ce.Key != "public_keys" {
		t.Errorf("loadConfig(bad key) = %v, want a ConfigError for public_keys", err)
	}
	a, err := parseAppFlags(t, "--host", "https://h", "--project", "p", "--app-dir", "/opt/p",
		"--public-keys", k1.String()+","+k2.String()).app()
	if err != nil || !slices.Equal(a.PublicKeys, []string{k1.String(), k2.String()}) {
		t.Errorf("--public-keys: %v, %v", a.PublicKeys, err)
	}
}
