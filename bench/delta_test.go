package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/publish"
	"github.com/ota-agent/ota-agent/serve"
)

// Only changed files travel (issue 13): a 500-file release (8 KiB each,
// 4 MiB in all) where one file changes, against a full update of the same
// release into an empty app (the seed's way: every file again). Requests
// and body bytes are counted by the server; wall time is the Update call.
//
//	go test -run TestDelta500 -v ./bench
func TestDelta500(t *testing.T) {
	const nFiles, size = 500, 8 << 10
	root, src := t.TempDir(), t.TempDir()
	rng := rand.NewChaCha8([32]byte{2})
	for i := range nFiles {
		b := make([]byte, size)
		rng.Read(b)
		p := filepath.Join(src, fmt.Sprintf("lib/m%03d/f.py", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, b, 0o644)
	}
	opts := publish.Options{Src: src, Root: root, Project: "big", Version: "v1", Prefix: true, Current: true}
	if _, err := publish.Publish(opts); err != nil {
		t.Fatal(err)
	}
	h, err := serve.Handler(root, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var reqs, bytes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		cw := &countWriter{ResponseWriter: w, n: &bytes}
		h.ServeHTTP(cw, r)
	}))
	defer srv.Close()
	dir := t.TempDir()
	app := agent.App{Host: srv.URL, Project: "big", UseVersionPrefix: true, AppDir: filepath.Join(dir, "app"), StateRoot: filepath.Join(dir, "state")}
	app.ApplyDefaults()
	update := func(label string) {
		t.Helper()
		a, err := agent.New(app, agent.Options{})
		if err != nil {
			t.Fatal(err)
		}
		reqs.Store(0)
		bytes.Store(0)
		start := time.Now()
		res, err := a.Update(context.Background())
		wall := time.Since(start)
		if err != nil || !res.Updated {
			t.Fatalf("%s: Update() = %+v, %v", label, res, err)
		}
		t.Logf("%-32s %4d requests %9d body bytes %8.1f ms", label, reqs.Load(), bytes.Load(), float64(wall.Microseconds())/1000)
	}
	update("full update, 500 files (v1)")
	changed := make([]byte, size)
	rng.Read(changed)
	os.WriteFile(filepath.Join(src, "lib/m250/f.py"), changed, 0o644)
	opts.Version = "v2"
	if _, err := publish.Publish(opts); err != nil {
		t.Fatal(err)
	}
	update("v1 -> v2, one file changed")
}

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}
