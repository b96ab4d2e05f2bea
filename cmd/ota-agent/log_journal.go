package main

import (
	"io"
	"os"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog/journald"
)

// journalWriter returns zerolog's journald writer when w is standard error
// and systemd connected standard error to the journal (JOURNAL_STREAM names
// it: a unit's default), so each record's fields become journal fields:
// `journalctl -u ota-agent APP=sample` finds an app's records, with
// VERSION=, FROM=, TO=, URL= where they apply, PRIORITY= from the level and
// the whole record in JSON=. nil otherwise (a terminal, a pipe, a file,
// or a journal that does not answer).
func journalWriter(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); !ok || f.Fd() != 2 {
		return nil
	}
	if ok, err := journal.StderrIsJournalStream(); err != nil || !ok || !journal.Enabled() {
		return nil
	}
	return journald.NewJournalDWriter()
}
