package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/store"
)

// smallDisk mounts a 64 MiB tmpfs, unmounted when the test ends, and
// returns an env whose app and state dirs are on it, with v1.0.0 installed.
func smallDisk(t *testing.T, srv *server) (*env, string) {
	t.Helper()
	testenv.Require(t, "root (to mount a tmpfs)", os.Geteuid() == 0)
	dir := t.TempDir()
	err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m")
	testenv.Require(t, "mount -t tmpfs", err == nil)
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	e := newEnv(t, srv.URL)
	e.root, e.appDir = dir, filepath.Join(dir, "app")
	e.app.AppDir, e.app.StateRoot = e.appDir, filepath.Join(dir, "state")
	srv.set("/sample/version", "v1.0.0")
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("first Update() on the tmpfs = %v", err)
	}
	srv.set("/sample/version", "v1.0.1")
	return e, dir
}

func freeOn(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// watchedAgent is e's agent with a heartbeat that notes the least free
// space on dir whenever body bytes arrive, which is between two writes of
// a staged file: what the disk looked like at its fullest.
func watchedAgent(t *testing.T, e *env, dir string) (*Agent, func() int64) {
	t.Helper()
	var mu sync.Mutex
	least := freeOn(t, dir)
	a, err := New(e.app, Options{UserAgent: "ota-agent/test", Heartbeat: func(p Phase) {
		if p != PhaseTransfer {
			return
		}
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil {
			mu.Lock()
			least = min(least, int64(st.Bavail)*int64(st.Bsize))
			mu.Unlock()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	return a, func() int64 { mu.Lock(); defer mu.Unlock(); return least }
}

// gzipBomb is about 200 KiB of gzip that inflates to 200 MiB of zeros.
var gzipBomb = sync.OnceValue(func() []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 200 {
		zw.Write(zeros)
	}
	zw.Close()
	return buf.Bytes()
})

// A server that compresses whatever the client asked for: the agent asks
// for identity, and refuses a body it would have to decode (or install as
// garbage) before writing a byte. The disk is never full and the app stays.
func TestCompressedBodyOnSmallDisk(t *testing.T) {
	for _, withLength := range []bool{true, false} {
		t.Run(fmt.Sprintf("Content-Length %v", withLength), func(t *testing.T) {
			srv := newServer(t, sample())
			e, disk := smallDisk(t, srv)
			bomb := gzipBomb()
			var asked string
			srv.handle("/sample/v1.0.1_lib/util.py", func(w http.ResponseWriter, r *http.Request) {
				asked = r.Header.Get("Accept-Encoding")
				w.Header().Set("Content-Encoding", "gzip")
				w.Header().Set("Content-Type", "text/x-python")
				if withLength {
					w.Header().Set("Content-Length", fmt.Sprint(len(bomb)))
				}
				w.Write(bomb)
			})
			free := freeOn(t, disk)
			a, least := watchedAgent(t, e, disk)
			res, err := a.Update(context.Background())
			t.Logf("%d KiB of gzip for 200 MiB on a 64 MiB tmpfs: %v; least free space %d KiB", len(bomb)>>10, err, least()>>10)
			if !errors.Is(err, ErrEncoded) || res.Updated {
				t.Fatalf("Update() = %+v, %v; want %v", res, err, ErrEncoded)
			}
			if errors.Is(err, ErrUnreachable) {
				t.Errorf("Update() = %v, want a failure (exit 1), not unreachable: the server needs fixing", err)
			}
			if !strings.Contains(err.Error(), `Content-Encoding "gzip"`) || !strings.Contains(err.Error(), srv.URL) {
				t.Errorf("Update() = %q, want the URL and the Content-Encoding named", err)
			}
			if asked != "identity" {
				t.Errorf("Accept-Encoding = %q, want identity", asked)
			}
			if least() < 1<<20 || freeOn(t, disk) < free-64<<10 {
				t.Errorf("free space: least %d, after %d; want the disk never near full and as before (%d)", least(), freeOn(t, disk), free)
			}
			wantApp(t, e, "v1.0.0")
		})
	}
}

// A body with no length that outgrows the disk stops with ErrNoSpace while
// the margin is still free; the partial file is gone and the app stays.
func TestUnknownLengthOnSmallDisk(t *testing.T) {
	srv := newServer(t, sample())
	e, disk := smallDisk(t, srv)
	srv.handle("/sample/v1.0.1_lib/util.py", func(w http.ResponseWriter, r *http.Request) {
		zeros := make([]byte, 256<<10)
		for range 800 { // 200 MiB, chunked
			if _, err := w.Write(zeros); err != nil {
				return
			}
		}
	})
	free := freeOn(t, disk)
	a, least := watchedAgent(t, e, disk)
	start := time.Now()
	res, err := a.Update(context.Background())
	t.Logf("200 MiB with no length on a 64 MiB tmpfs (%d KiB free): %v after %v; least free space %d KiB",
		free>>10, err, time.Since(start).Round(time.Millisecond), least()>>10)
	if !errors.Is(err, store.ErrNoSpace) || res.Updated {
		t.Fatalf("Update() = %+v, %v; want %v", res, err, store.ErrNoSpace)
	}
	if !strings.Contains(err.Error(), "stopped after") || strings.Contains(err.Error(), "filled up") {
		t.Errorf("Update() = %q, want the download stopped before the disk filled up", err)
	}
	if least() < 3<<20 {
		t.Errorf("free space fell to %d KiB during the download, want the 4 MiB margin kept", least()>>10)
	}
	if now := freeOn(t, disk); now < free-64<<10 {
		t.Errorf("free space after the failure %d, want about %d as before", now, free)
	}
	wantApp(t, e, "v1.0.0")
}

// trickle answers with one byte every gap, announcing n.
func trickle(n int, gap time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(n))
		for range n {
			if _, err := w.Write([]byte("#")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(gap):
			}
		}
	}
}

// A trickle never trips the stall timeout (bytes keep coming), but it is
// cut within the rate window as unreachable (exit 75), and nothing changes.
// A slow body above the minimum rate is never cut.
func TestTrickleIsCut(t *testing.T) {
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	srv.set("/sample/version", "v1.0.0")
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.set("/sample/version", "v1.0.1")
	e.app.Timeout = 500 * time.Millisecond
	e.app.MinRate, e.app.MinRateWindow = 1024, time.Second
	srv.handle("/sample/v1.0.1_lib/util.py", trickle(1000, 100*time.Millisecond))
	start := time.Now()
	res, err := e.agent(t).Update(context.Background())
	took := time.Since(start)
	t.Logf("trickle: %v after %v", err, took.Round(time.Millisecond))
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, errTooSlow) || res.Updated {
		t.Fatalf("Update() against a trickle = %+v, %v; want %v (%v)", res, err, ErrUnreachable, errTooSlow)
	}
	if want := "below min_rate 1024 bytes/s"; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("Update() = %q, want the URL and %q", err, want)
	}
	if limit := e.app.MinRateWindow * (rateTicks + 1) / rateTicks; took < e.app.MinRateWindow || took > limit+time.Second {
		t.Errorf("Update() against a trickle took %v, want between the window %v and %v", took, e.app.MinRateWindow, limit)
	}
	wantApp(t, e, "v1.0.0")

	// 2 KiB/s for 2.5 windows: slow, but above the minimum.
	content := strings.Repeat("# a slow line\n", 360) // 5040 bytes
	srv.handle("/sample/v1.0.1_lib/util.py", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(content)))
		for i := 0; i < len(content); i += 210 {
			w.Write([]byte(content[i:min(i+210, len(content))]))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() of a slow body above min_rate = %v, want it to arrive", err)
	}
	if got := tree(t, e.appDir)["lib/util.py"]; got != content {
		t.Errorf("lib/util.py = %d bytes, want the slow content (%d)", len(got), len(content))
	}
}

// Retry-After over a real socket: whatever the value, the daemon waits at
// least the backoff and at most MaxRetryAfter; a huge number no longer
// wraps to 0.
func TestRunRetryAfterValues(t *testing.T) {
	const backoff = 7500 * time.Millisecond // 10s at the middle of its jitter
	soon := time.Now().Add(5 * time.Minute).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		header   string
		code     int
		min, max time.Duration
	}{
		{"0", 503, backoff, backoff},
		{"-30", 503, backoff, backoff},
		{"120", 429, 2 * time.Minute, 2 * time.Minute},
		{"9300000000", 503, MaxRetryAfter, MaxRetryAfter},
		{"99999999999999999999999", 429, MaxRetryAfter, MaxRetryAfter},
		{soon, 503, 5*time.Minute - 2*time.Second, 5 * time.Minute},
		{past, 503, backoff, backoff},
		{"Fri, 31 Dec 9999 23:59:59 GMT", 503, MaxRetryAfter, MaxRetryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			srv := newServer(t, sample())
			srv.handle("/sample/version", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", tt.header)
				w.WriteHeader(tt.code)
			})
			e := newEnv(t, srv.URL)
			s := Schedule{Interval: 15 * time.Minute, MinBackoff: 10 * time.Second, Rand: func() float64 { return 0.5 }}
			reports, waits := runChecks(t, e.agent(t), s, 1)
			if len(waits) < 2 || reports[0].Err == nil {
				t.Fatalf("waits = %v, reports = %+v; want one failed check", waits, reports)
			}
			if got := waits[1]; got < tt.min || got > tt.max {
				t.Errorf("after %d with Retry-After %q the daemon waits %v, want [%v, %v]", tt.code, tt.header, got, tt.min, tt.max)
			}
		})
	}
}
