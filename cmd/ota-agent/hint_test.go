package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/reset"
)

// A server certificate from a CA the board does not know names ca_file.
func TestHintUnknownCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "v1") }))
	defer srv.Close()
	code, _, stderr := runCLI(t, append([]string{"check"}, appArgs(srv.URL, t.TempDir())...)...)
	if code != ExitFailed || !strings.Contains(stderr, "set ca_file (--ca-file)") {
		t.Errorf("check against an unknown CA = %d, %q; want 1 naming ca_file", code, stderr)
	}
}

// check verifies each app's unit and bus at start: exit 2 with the fix.
func TestHintNoBus(t *testing.T) {
	tests := []struct {
		name, bus string
		env       map[string]string
		want      []string
	}{
		{"no system bus", "system", map[string]string{"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/system_bus_socket"},
			[]string{"app p: unit: ", "systemd running", `reset = "none"`}},
		{"no session bus", "user", map[string]string{"DBUS_SESSION_BUS_ADDRESS": "", "XDG_RUNTIME_DIR": t.TempDir()},
			[]string{"no session bus", `systemd_bus = "user" needs the user's systemd manager`, "XDG_RUNTIME_DIR="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			srv := cliServer(t, "v1", nil)
			dir := t.TempDir()
			args := append(appArgs(srv.URL, dir), "--unit", "app.service", "--systemd-bus", tt.bus)
			code, _, stderr := runCLI(t, append([]string{"check"}, args...)...)
			stderr = strings.ReplaceAll(stderr, `\"`, `"`) // JSON lines
			if code != ExitUsage {
				t.Errorf("check = %d, want 2: %s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("check: stderr %q lacks %q", stderr, w)
				}
			}
			if strings.Contains(stderr, "dbus-launch") {
				t.Errorf("check: stderr %q speaks of dbus-launch", stderr)
			}
			// The daemon says it at start and keeps running.
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			g := &globals{stdout: &out, stderr: &errb}
			err := g.dispatch(ctx, append([]string{"run", "--interval", "1h"}, args...))
			if err != nil || !strings.Contains(strings.ReplaceAll(errb.String(), `\"`, `"`), tt.want[1]) {
				t.Errorf("run = %v, stderr %q; want nil after the signal and the fix logged at start", err, errb.String())
			}
		})
	}
}

func TestHintUnitNotFound(t *testing.T) {
	err := explain(fmt.Errorf("check x.service (system bus): %w", reset.ErrUnitNotFound))
	if !strings.Contains(err.Error(), "systemctl list-unit-files") {
		t.Errorf("explain(unit not found) = %q, want the fix", err)
	}
}
