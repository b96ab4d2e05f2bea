package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// check --json and update --json print the documented shape: one object
// per app with app, from, to, outcome and error.
func TestResultsJSON(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	down := cliServer(t, "v1", map[string]int{"/p/version": 503})
	tests := []struct {
		args []string
		code int
		want appResult
	}{
		{[]string{"check"}, ExitUpdateAvail, appResult{App: "p", From: "", To: "v1", Outcome: "update-available"}},
		{[]string{"update"}, ExitOK, appResult{App: "p", From: "", To: "v1", Outcome: "updated"}},
		{[]string{"update"}, ExitOK, appResult{App: "p", From: "v1", To: "v1", Outcome: "up-to-date"}},
		{[]string{"check"}, ExitOK, appResult{App: "p", From: "v1", To: "v1", Outcome: "up-to-date"}},
		{[]string{"check", "--host", down.URL}, ExitTempFail, appResult{App: "p", From: "v1", Outcome: "unreachable"}},
	}
	for _, tt := range tests {
		args := append(append(append([]string{}, tt.args...), appArgs(srv.URL, dir)...), "--json")
		if len(tt.args) > 1 { // a second --host wins
			args = append(args, tt.args[1:]...)
		}
		code, out, stderr := runCLI(t, args...)
		var got struct {
			Apps []map[string]any `json:"apps"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Apps) != 1 || code != tt.code {
			t.Fatalf("%q = %d, %q (%v), stderr %q; want %d and one app", tt.args, code, out, err, stderr, tt.code)
		}
		var keys []string
		for k := range got.Apps[0] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if want := []string{"app", "error", "from", "outcome", "to"}; !reflect.DeepEqual(keys, want) {
			t.Errorf("%q: keys %v, want %v", tt.args, keys, want)
		}
		var r appResult
		json.Unmarshal([]byte(mustJSON(got.Apps[0])), &r)
		if tt.want.Outcome == "unreachable" {
			if !strings.Contains(r.Error, "503") {
				t.Errorf("%q: error %q, want the 503", tt.args, r.Error)
			}
			r.Error = ""
		}
		if r != tt.want {
			t.Errorf("%q: %+v, want %+v", tt.args, r, tt.want)
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// --log-format text is readable lines even on a pipe; durations carry units.
func TestLogFormat(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	code, _, stderr := runCLI(t, append([]string{"update", "--log-format", "text"}, appArgs(srv.URL, dir)...)...)
	if code != ExitOK || strings.HasPrefix(stderr, "{") || !strings.Contains(stderr, "installed") {
		t.Errorf("update --log-format text = %d, %q; want text lines", code, stderr)
	}
	code, _, stderr = runCLI(t, append([]string{"update", "--log-format", "json", "--log-level", "debug"}, appArgs(srv.URL, dir)...)...)
	if code != ExitOK || strings.Count(stderr, "up to date") != 1 || !strings.HasPrefix(stderr, "{") {
		t.Errorf("update --log-format json = %d, %q; want JSON lines, up to date once", code, stderr)
	}
	if code, _, stderr := runCLI(t, "status", "--log-format", "xml"); code != ExitUsage || !strings.Contains(stderr, "want text or json") {
		t.Errorf("--log-format xml = %d, %q; want 2", code, stderr)
	}
	var errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	g := &globals{stdout: &bytes.Buffer{}, stderr: &errb}
	g.dispatch(ctx, append([]string{"run", "--interval", "1h", "--log-format", "json"}, appArgs(srv.URL, dir)...))
	if !strings.Contains(errb.String(), `"interval":"1h0m0s"`) {
		t.Errorf("run logs %q, want the interval with its unit", errb.String())
	}
}

// An interrupted command says so.
func TestInterruptedSaysSo(t *testing.T) {
	dir := t.TempDir()
	srv := cliServer(t, "v1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"update"}, appArgs(srv.URL, dir)...), &out, &errb)
	if code == ExitOK || !strings.Contains(errb.String(), "interrupted by a signal") {
		t.Errorf("update after SIGINT = %d, %q; want the interruption said", code, errb.String())
	}
}
