package agent

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestScheduleJitterSpread(t *testing.T) {
	s := Schedule{Interval: 10 * time.Minute, Jitter: 0.1}
	lo, hi := time.Hour, time.Duration(0)
	for i := 0; i < 2000; i++ {
		d := s.Next(0, 0)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 9*time.Minute || hi > 11*time.Minute {
		t.Errorf("Next(0, 0) ranged over [%v, %v], want within 10m ± 10%%", lo, hi)
	}
	// Spread, not in step: the range covers most of the window.
	if hi-lo < 90*time.Second {
		t.Errorf("Next(0, 0) ranged over [%v, %v], want a spread near 2m", lo, hi)
	}
	for i := 0; i < 100; i++ {
		if d := s.First(); d < 0 || d > time.Minute {
			t.Fatalf("First() = %v, want within [0, 1m]", d)
		}
	}
}

func TestScheduleBackoff(t *testing.T) {
	fixed := func(v float64) func() float64 { return func() float64 { return v } }
	s := Schedule{Interval: 15 * time.Minute, MinBackoff: 30 * time.Second, MaxBackoff: 10 * time.Minute, Rand: fixed(0.999999)}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for i, w := range want {
		if got := s.Next(i+1, 0).Round(time.Second); got != w {
			t.Errorf("Next(%d, 0) = %v, want %v (grows, then capped)", i+1, got, w)
		}
	}
	s.Rand = fixed(0)
	if got := s.Next(3, 0); got != time.Minute {
		t.Errorf("Next(3, 0) with the lowest jitter = %v, want half of 2m", got)
	}
	if got := s.Next(1, 7*time.Minute); got != 7*time.Minute {
		t.Errorf("Next(1, Retry-After 7m) = %v, want 7m", got)
	}
	if got := s.Next(0, 0); got != 13*time.Minute+30*time.Second {
		t.Errorf("Next(0, 0) with the lowest jitter = %v, want 15m - 10%%", got)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"120":                           2 * time.Minute,
		" 120 ":                         2 * time.Minute,
		"-5":                            0,
		"+5":                            0,
		"soon":                          0,
		"99999999":                      99999999 * time.Second,
		"9300000000":                    retryAfterCeiling, // overflowed to 0 s once
		"9223372036854775807":           retryAfterCeiling,
		"99999999999999999999999999":    retryAfterCeiling,
		"Thu, 26 Nov 2026 12:05:00 GMT": 5 * time.Minute,
		"Thu, 26 Nov 2026 11:55:00 GMT": 0,
		"Fri, 31 Dec 9999 23:59:59 GMT": retryAfterCeiling,
	}
	for h, want := range tests {
		if got := retryAfter(h, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", h, got, want)
		}
	}
}

// Next honours a Retry-After up to a day, or up to the interval if that
// is longer, and never below the backoff.
func TestNextClampsRetryAfter(t *testing.T) {
	half := func() float64 { return 0.5 }
	tests := []struct {
		interval, retry, want time.Duration
	}{
		{15 * time.Minute, 0, 22500 * time.Millisecond}, // the backoff: 30s * 0.75
		{15 * time.Minute, time.Second, 22500 * time.Millisecond},
		{15 * time.Minute, 2 * time.Hour, 2 * time.Hour},
		{15 * time.Minute, 30 * time.Hour, MaxRetryAfter},
		{15 * time.Minute, retryAfterCeiling, MaxRetryAfter},
		{48 * time.Hour, 30 * time.Hour, 30 * time.Hour},
		{48 * time.Hour, retryAfterCeiling, 48 * time.Hour},
	}
	for _, tt := range tests {
		s := Schedule{Interval: tt.interval, MinBackoff: 30 * time.Second, Rand: half}
		if got := s.Next(1, tt.retry); got != tt.want {
			t.Errorf("Schedule{Interval: %v}.Next(1, %v) = %v, want %v", tt.interval, tt.retry, got, tt.want)
		}
	}
}

// fakeClock fires every timer at once and remembers the waits asked for.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// runChecks runs the daemon loop for n checks and returns the reports and
// the waits between checks.
func runChecks(t *testing.T, a *Agent, s Schedule, n int) ([]RunStatus, []time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := &fakeClock{now: time.Unix(0, 0)}
	var reports []RunStatus
	err := a.Run(ctx, s, clk, func(st RunStatus) {
		reports = append(reports, st)
		if len(reports) == n {
			cancel()
		}
	})
	if err != nil {
		t.Fatalf("Run() = %v, want nil when cancelled", err)
	}
	return reports, clk.waits
}

func TestRunBacksOffAndHonoursRetryAfter(t *testing.T) {
	srv := newServer(t, sample())
	calls := 0
	srv.handle("/sample/version", func(w http.ResponseWriter, r *http.Request) {
		calls++
		switch {
		case calls <= 3:
			w.WriteHeader(http.StatusInternalServerError)
		case calls == 4:
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.Write([]byte("v1.0.1"))
		}
	})
	e := newEnv(t, srv.URL)
	s := Schedule{Interval: 15 * time.Minute, MinBackoff: 10 * time.Second, MaxBackoff: 5 * time.Minute, Rand: func() float64 { return 0.5 }}
	reports, waits := runChecks(t, e.agent(t), s, 6)
	// waits[0] is First; waits[i] follows check i.
	want := []time.Duration{
		45 * time.Second,        // First: half of the 10% window
		7500 * time.Millisecond, // 1 failure: 10s * 0.75
		15 * time.Second,        // 2 failures: 20s * 0.75
		30 * time.Second,        // 3 failures
		time.Hour,               // 503 with Retry-After: 1h beats the backoff
		15 * time.Minute,        // success
	}
	for i, w := range want {
		if i >= len(waits) || waits[i] != w {
			t.Fatalf("waits = %v, want %v", waits, want)
		}
	}
	if last := reports[4]; last.Err != nil || last.Installed != "v1.0.1" || last.Failures != 0 {
		t.Errorf("report after the first good check = %+v, want v1.0.1 installed", last)
	}
	if reports[2].Failures != 3 || reports[2].Err == nil {
		t.Errorf("third report = %+v, want 3 failures", reports[2])
	}
}

// An unchanged version costs one conditional request answered by a 304.
func TestRunUnchangedCostsOne304(t *testing.T) {
	srv := newServer(t, sample())
	modified := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	srv.handle("/sample/version", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") == `"v101"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v101"`)
		http.ServeContent(w, r, "version", modified, stringsReader("v1.0.1\n"))
	})
	e := newEnv(t, srv.URL)
	a := e.agent(t)
	runChecks(t, a, Schedule{}, 4)
	reqs := srv.requests()
	// version, the manifest (404) + 2 files, then three conditional checks.
	if len(reqs) != 7 {
		t.Fatalf("requests = %v, want 7", srv.paths())
	}
	for _, r := range reqs[4:] {
		if r.URL.Path != "/sample/version" || r.Header.Get("If-None-Match") != `"v101"` || r.Header.Get("If-Modified-Since") == "" {
			t.Errorf("check %s sent If-None-Match %q, If-Modified-Since %q; want both validators",
				r.URL.Path, r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since"))
		}
	}
	wantApp(t, e, "v1.0.1")
}

// SIGTERM mid-download: the run ends cleanly and the next run completes.
func TestCancelMidDownload(t *testing.T) {
	srv := newServer(t, sample())
	started := make(chan struct{})
	srv.handle("/sample/v1.0.1_lib/util.py", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("V = "))
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	})
	e := newEnv(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	if _, err := e.agent(t).Update(ctx); err == nil {
		t.Fatal("Update() cancelled mid-download = nil, want an error")
	}
	if got := tree(t, e.appDir); len(got) != 0 {
		t.Fatalf("app dir = %v after a cancelled first install, want empty", got)
	}
	srv.handle("/sample/v1.0.1_lib/util.py", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("V = '1.0.1'\n")) })
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() after the cancelled one = %v", err)
	}
	wantApp(t, e, "v1.0.1")
}
