package agent

import "sync"

// Progress is how far the download of a release is, for a progress line
// (Options.Progress).
type Progress struct {
	App     string
	Version string // the release being downloaded
	File    string // the file being fetched; "" between files
	Files   int    // the release's files
	Done    int    // files staged so far (fetched, or found complete)
	// Bytes is what came from the server since the release's download
	// began; FileBytes and FileSize are the current file's bytes so far
	// and its length (-1 unknown).
	Bytes, FileBytes, FileSize int64
	// Finished is set once, at the end (Done is then Files if every
	// file was staged; an error may end it sooner).
	Finished bool
}

// progress tracks a release's download for Options.Progress; the zero
// value with a nil report does nothing. Bytes arrive on the transfer's
// goroutine and the connection's (httptrace), so it locks.
type progress struct {
	report func(Progress)
	client *client

	mu        sync.Mutex
	p         Progress
	start     int64 // client bytes when the release began
	fileStart int64 // client bytes when the file began
}

func (g *progress) begin(app, version string, files int) {
	if g == nil || g.report == nil {
		return
	}
	g.mu.Lock()
	g.p = Progress{App: app, Version: version, Files: files}
	g.start = g.client.bytes.Load()
	p := g.p
	g.mu.Unlock()
	g.report(p)
}

// file starts file, of size bytes (-1 unknown).
func (g *progress) file(name string, size int64) {
	if g == nil || g.report == nil {
		return
	}
	g.mu.Lock()
	g.p.File, g.p.FileSize, g.p.FileBytes = name, size, 0
	g.fileStart = g.client.bytes.Load()
	g.mu.Unlock()
}

// done counts one more file staged.
func (g *progress) done() {
	if g == nil || g.report == nil {
		return
	}
	g.mu.Lock()
	g.p.Done++
	g.p.File = ""
	p := g.p
	g.mu.Unlock()
	g.report(p)
}

// bytes reports what arrived so far.
func (g *progress) bytes() {
	if g == nil || g.report == nil {
		return
	}
	g.mu.Lock()
	if g.p.Version == "" || g.p.Finished {
		g.mu.Unlock()
		return
	}
	n := g.client.bytes.Load()
	g.p.Bytes, g.p.FileBytes = n-g.start, n-g.fileStart
	p := g.p
	g.mu.Unlock()
	g.report(p)
}

func (g *progress) finish() {
	if g == nil || g.report == nil {
		return
	}
	g.mu.Lock()
	if g.p.Version == "" {
		g.mu.Unlock()
		return
	}
	g.p.Finished, g.p.File = true, ""
	g.p.Bytes = g.client.bytes.Load() - g.start
	p := g.p
	g.mu.Unlock()
	g.report(p)
}
