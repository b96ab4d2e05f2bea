package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ota-agent/ota-agent/agent"
)

// progressLine draws `update`'s progress on a terminal: one line per
// release, redrawn in place (carriage return, erase line) at most every
// 100 ms: the app, the version, files done of all, bytes, rate and the
// current file's time left. It is used only when standard error is a
// terminal: never in the journal or a pipe.
type progressLine struct {
	w     io.Writer
	now   func() time.Time
	mu    sync.Mutex
	start time.Time
	last  time.Time
	drawn bool
}

func newProgressLine(w io.Writer) *progressLine {
	return &progressLine{w: w, now: time.Now}
}

// show is agent.Options.Progress.
func (l *progressLine) show(p agent.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.drawn || p.Bytes == 0 && p.Done == 0 {
		l.start = now
	}
	if !p.Finished && l.drawn && now.Sub(l.last) < 100*time.Millisecond {
		return
	}
	l.last, l.drawn = now, true
	elapsed := now.Sub(l.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.Bytes) / elapsed
	}
	line := fmt.Sprintf("%s %s: %d/%d files, %s, %s/s", p.App, p.Version, p.Done, p.Files, humanBytes(p.Bytes), humanBytes(int64(rate)))
	if !p.Finished && p.File != "" && p.FileSize > 0 && rate > 0 {
		left := time.Duration(float64(p.FileSize-p.FileBytes) / rate * float64(time.Second)).Round(time.Second)
		line += fmt.Sprintf(", %s: %s left", p.File, left)
	}
	fmt.Fprintf(l.w, "\r\x1b[K%s", line)
	if p.Finished {
		fmt.Fprint(l.w, "\n")
		l.drawn = false
	}
}

// end finishes a line a failed download left open.
func (l *progressLine) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drawn {
		fmt.Fprint(l.w, "\n")
		l.drawn = false
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
