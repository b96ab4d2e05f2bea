package main

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger writes readable lines to a terminal, journal records with
// fields under systemd (journalWriter), and JSON lines otherwise (files,
// pipes).
func newLogger(w io.Writer, level string) (zerolog.Logger, error) {
	return newLoggerFormat(w, level, "")
}

// durationsWithUnits makes every duration in the logs a string with its
// unit ("4s", "6.685s"), never a bare number of milliseconds.
var durationsWithUnits = sync.OnceFunc(func() { zerolog.DurationFieldFormat = zerolog.DurationFormatString })

// newLoggerFormat is newLogger with --log-format: "text" (readable lines),
// "json" (JSON lines), or "" (text on a terminal, JSON otherwise).
func newLoggerFormat(w io.Writer, level, format string) (zerolog.Logger, error) {
	durationsWithUnits()
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), usageErrorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	switch format {
	case "":
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "text"
		} else if jw := journalWriter(w); jw != nil {
			w = jw // under systemd: journal fields
		}
	case "text", "json":
	default:
		return zerolog.Nop(), usageErrorf("--log-format %q: want text or json", format)
	}
	if format == "text" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}
