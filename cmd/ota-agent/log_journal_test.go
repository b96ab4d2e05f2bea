package main

import (
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
)

// TestJournalRecords: a record's fields become journal fields, its level
// PRIORITY=, and MESSAGE= reads like the terminal's line. (The e2e deb
// test reads them back from a real journald.)
func TestJournalRecords(t *testing.T) {
	type entry struct {
		msg  string
		prio journal.Priority
		vars map[string]string
	}
	var got []entry
	w := journalRecords{send: func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, entry{m, p, v})
		return nil
	}}
	log := zerolog.New(w).With().Timestamp().Logger()
	log.Info().Str("app", "sample").Str("from", "v1").Str("to", "v2").Int("files", 2).Msg("installed")
	log.Warn().Str("app", "web").Str("url", "http://h/p/version").Str("error", "server unreachable: dial tcp").Msg("check failed")
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2", len(got))
	}
	e := got[0]
	if e.msg != "installed app=sample files=2 from=v1 to=v2" || e.prio != journal.PriInfo {
		t.Errorf("MESSAGE=%q PRIORITY=%d, want \"installed app=sample files=2 from=v1 to=v2\" and %d", e.msg, e.prio, journal.PriInfo)
	}
	for k, want := range map[string]string{"APP": "sample", "FROM": "v1", "TO": "v2", "FILES": "2"} {
		if e.vars[k] != want {
			t.Errorf("%s=%q, want %q", k, e.vars[k], want)
		}
	}
	if _, ok := e.vars["JSON"]; !ok {
		t.Errorf("no JSON= field")
	}
	if e := got[1]; e.prio != journal.PriWarning || e.vars["URL"] != "http://h/p/version" ||
		e.msg != `check failed app=web error="server unreachable: dial tcp" url=http://h/p/version` {
		t.Errorf("warning entry: MESSAGE=%q PRIORITY=%d vars %v", e.msg, e.prio, e.vars)
	}
	for in, want := range map[string]string{"app": "APP", "last-check": "LAST_CHECK", "_x": "X_X", "9a": "X9A"} {
		if got := journalField(in); got != want {
			t.Errorf("journalField(%q) = %q, want %q", in, got, want)
		}
	}
}
