package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ota-agent/ota-agent/board"
)

// TestUserAgentNamesTheBoard: every request says which board asks, as
// board.UserAgent words this machine's identity.
func TestUserAgentNamesTheBoard(t *testing.T) {
	var mu sync.Mutex
	var agents []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.UserAgent())
		mu.Unlock()
		w.Write([]byte("v1\n"))
	}))
	defer srv.Close()
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"check", "--host", srv.URL, "--project", "p", "--files", "a",
		"--app-dir", filepath.Join(dir, "app"), "--state-dir", filepath.Join(dir, "state"),
		"--runtime-dir", filepath.Join(dir, "run")}, &out, &errb)
	if code != ExitUpdateAvail {
		t.Fatalf("check = %d, want %d\n%s", code, ExitUpdateAvail, errb.String())
	}
	want := board.UserAgent(Version, board.Read(board.Host{}, false))
	if !strings.HasPrefix(want, "ota-agent/"+Version+" (") {
		t.Fatalf("board.UserAgent = %q", want)
	}
	mu.Lock()
	if len(agents) == 0 || agents[0] != want {
		t.Errorf("User-Agent = %q, want %q", agents, want)
	}
	agents = nil
	mu.Unlock()

	// identify = "serial": the serial number too, where the board has one.
	cfg := writeConfig(t, `identify = "serial"`, `runtime_dir = "`+filepath.Join(dir, "run")+`"`, "[[app]]",
		`host = "`+srv.URL+`"`, `project = "p"`, `files = ["a"]`, `app_dir = "`+filepath.Join(dir, "app")+`"`,
		`state_dir = "`+filepath.Join(dir, "state")+`"`)
	if code := run(context.Background(), []string{"check", "--config", cfg}, &out, &errb); code != ExitUpdateAvail {
		t.Fatalf("check --config = %d\n%s", code, errb.String())
	}
	want = board.UserAgent(Version, board.Read(board.Host{}, true))
	mu.Lock()
	defer mu.Unlock()
	if len(agents) == 0 || agents[0] != want {
		t.Errorf("with identify = \"serial\": User-Agent = %q, want %q", agents, want)
	}
}

// TestStatusShowsTheBoard: status names the board, with its serial number
// only for identify = "serial"; another identify is a config error.
func TestStatusShowsTheBoard(t *testing.T) {
	dir := t.TempDir()
	app := []string{"[[app]]", `host = "http://127.0.0.1:1"`, `project = "p"`, `files = ["a"]`,
		`app_dir = "` + filepath.Join(dir, "app") + `"`, `state_dir = "` + filepath.Join(dir, "state") + `"`}
	for _, tc := range []struct {
		identify   string
		withSerial bool
	}{{"", false}, {`identify = "model"`, false}, {`identify = "serial"`, true}} {
		cfg := writeConfig(t, append([]string{tc.identify, `runtime_dir = "` + filepath.Join(dir, "run") + `"`}, app...)...)
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"status", "--json", "--config", cfg}, &out, &errb); code != ExitOK {
			t.Fatalf("status --json (%s) = %d\n%s", tc.identify, code, errb.String())
		}
		var st struct {
			Board board.Identity `json:"board"`
		}
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out.String())
		}
		if want := board.Read(board.Host{}, tc.withSerial); st.Board != want {
			t.Errorf("status --json (%s): board %+v, want %+v", tc.identify, st.Board, want)
		}
		out.Reset()
		if code := run(context.Background(), []string{"status", "--config", cfg}, &out, &errb); code != ExitOK ||
			!strings.HasPrefix(out.String(), "board: ") {
			t.Errorf("status (%s) = %d, output %q: want a first line \"board: ...\"", tc.identify, code, out.String())
		}
	}
	cfg := writeConfig(t, append([]string{`identify = "mac"`}, app...)...)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"status", "--config", cfg}, &out, &errb); code != ExitUsage ||
		!strings.Contains(errb.String(), "identify") {
		t.Errorf(`status with identify = "mac" = %d (%s), want %d naming the key`, code, errb.String(), ExitUsage)
	}
}
