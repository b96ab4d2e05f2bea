package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
)

// journalWriter returns a writer of zerolog records to the journal when w
// is standard error and systemd connected standard error to the journal
// (JOURNAL_STREAM names it: a unit's default); nil otherwise (a terminal,
// a pipe, a file, or a journal that does not answer).
func journalWriter(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); !ok || f.Fd() != 2 {
		return nil
	}
	if ok, err := journal.StderrIsJournalStream(); err != nil || !ok || !journal.Enabled() {
		return nil
	}
	return journalRecords{send: journal.Send}
}

// journalRecords sends each zerolog JSON record as one journal entry
// (go-systemd's journal package, the native protocol): every field of the
// record becomes a journal field in capitals (APP=, VERSION=, FROM=, TO=,
// URL=, ERROR=, ...), so `journalctl -u ota-agent APP=sample` finds an
// app's records; the level becomes PRIORITY=; MESSAGE= is the message
// followed by the fields as key=value, so `journalctl -u` and `systemctl
// status` read as the terminal's lines do; JSON= keeps the whole record.
type journalRecords struct {
	send func(message string, priority journal.Priority, vars map[string]string) error
}

func (j journalRecords) Write(p []byte) (int, error) {
	var rec map[string]any
	d := json.NewDecoder(bytes.NewReader(p))
	d.UseNumber()
	if err := d.Decode(&rec); err != nil {
		return 0, err
	}
	vars := map[string]string{"JSON": string(bytes.TrimSpace(p))}
	msg, _ := rec[zerolog.MessageFieldName].(string)
	var keys []string
	for k := range rec {
		if k != zerolog.MessageFieldName && k != zerolog.LevelFieldName && k != zerolog.TimestampFieldName {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	line := []string{msg}
	for _, k := range keys {
		v, ok := rec[k].(string)
		if !ok {
			v = fmt.Sprint(rec[k])
		}
		vars[journalField(k)] = v
		if strings.ContainsAny(v, " \"") {
			v = fmt.Sprintf("%q", v)
		}
		line = append(line, k+"="+v)
	}
	level, _ := rec[zerolog.LevelFieldName].(string)
	if err := j.send(strings.Join(line, " "), journalPriority(level), vars); err != nil {
		return 0, err
	}
	return len(p), nil
}

// journalField is a journal field name for a record's key: capitals,
// digits and underscores, not starting with an underscore or a digit.
func journalField(k string) string {
	f := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, k)
	if f == "" || f[0] == '_' || f[0] >= '0' && f[0] <= '9' {
		f = "X" + f
	}
	return f
}

func journalPriority(level string) journal.Priority {
	switch level {
	case "trace", "debug":
		return journal.PriDebug
	case "info":
		return journal.PriInfo
	case "warn":
		return journal.PriWarning
	case "error":
		return journal.PriErr
	case "fatal":
		return journal.PriCrit
	case "panic":
		return journal.PriEmerg
	}
	return journal.PriNotice
}
