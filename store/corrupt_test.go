package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What is read back from state.json and the journal passes the checks a
// server's answer gets: a tag or a path that is not safe is never used to
// name a directory to write or remove.
func TestTamperedStateRefused(t *testing.T) {
	tests := []struct{ name, state string }{
		{"version escapes", `{"schema":1,"version":"../../x","files":[]}`},
		{"previous escapes", `{"schema":1,"version":"v1","previous":"../x","files":[]}`},
		{"release escapes", `{"schema":1,"version":"v1","releases":["../../etc"],"files":[]}`},
		{"absolute file", `{"schema":1,"version":"v1","files":[{"path":"/etc/passwd"}]}`},
		{"file escapes", `{"schema":1,"version":"v1","files":[{"path":"../outside"}]}`},
		{"empty", ``},
		{"truncated", `{"schema":1,"version":"v1","fi`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, InPlace, 2)
			outside := filepath.Join(filepath.Dir(s.AppDir()), "outside")
			writeFiles(t, outside, map[string]string{"keep": "not the agent's"})
			mustDo(t, "write", os.WriteFile(s.statePath(), []byte(tt.state), 0o644))
			if _, err := ReadState(s.Dir()); !errors.Is(err, ErrCorruptState) {
				t.Fatalf("ReadState = %v, want %v", err, ErrCorruptState)
			}
			// Under the lock, State moves it aside: the app counts as not
			// installed, and the next install goes through.
			st, err := s.State()
			if err != nil || st.Version != "" {
				t.Fatalf("State() = %+v, %v; want the zero State", st, err)
			}
			if b, err := os.ReadFile(s.statePath() + ".corrupt"); err != nil || string(b) != tt.state {
				t.Errorf("state.json.corrupt = %q, %v; want the corrupt state kept", b, err)
			}
			install(t, s, "v2", map[string]string{"main.py": "v2"})
			checkState(t, s, "v2", "", map[string]string{"main.py": "v2"})
			if d := diffTrees(files(t, outside), map[string]string{"keep": "not the agent's"}); d != "" {
				t.Errorf("outside the app and state dirs:%s", d)
			}
		})
	}
}

// A journal whose tags or paths are unsafe is refused, never acted on.
func TestTamperedJournalRefused(t *testing.T) {
	s := newStore(t, InPlace, 2)
	install(t, s, "v1", map[string]string{"main.py": "v1"})
	victim := filepath.Join(filepath.Dir(s.AppDir()), "victim")
	writeFiles(t, victim, map[string]string{"keep": "not the agent's"})
	for _, j := range []string{
		`{"schema":1,"mode":"in-place","from":"v1","to":"v2","backup":"../../../victim","state":{"version":"v2"},"old":{}}`,
		`{"schema":1,"mode":"in-place","from":"v1","to":"v2","backup":"v1","state":{"version":"v2"},"old":{},"remove":["../victim/keep"]}`,
		`{"schema":1,"mode":"in-place","from":"v1","to":"../victim","backup":"v1","state":{"version":"v2"},"old":{}}`,
	} {
		mustDo(t, "write", os.WriteFile(s.journalPath(), []byte(j), 0o600))
		err := s.Recover()
		if err == nil || !strings.Contains(err.Error(), "move it away") {
			t.Errorf("Recover() with journal %s = %v, want a refusal saying what to do", j, err)
		}
		if d := diffTrees(files(t, victim), map[string]string{"keep": "not the agent's"}); d != "" {
			t.Errorf("outside the app and state dirs:%s", d)
		}
	}
}
