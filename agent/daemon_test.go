package agent

import (
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// notes records what a Daemon tells the service manager.
type notes struct {
	mu  sync.Mutex
	got []string
	ch  chan string
}

func newNotes() *notes { return &notes{ch: make(chan string, 100)} }

func (n *notes) notify(s string) error {
	n.mu.Lock()
	n.got = append(n.got, s)
	n.mu.Unlock()
	n.ch <- s
	return nil
}

// waitFor waits up to 10 s for a notification that starts with prefix.
func (n *notes) waitFor(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-n.ch:
			if strings.HasPrefix(s, prefix) {
				return s
			}
		case <-timeout:
			t.Fatalf("no %s notification in 10s", prefix)
		}
	}
}

// rebooter is a Rebooter that holds Restart until released, or until its
// shutdown closes, and says which.
type rebooter struct {
	started  chan (<-chan struct{}) // the shutdown channel of each Restart
	release  chan struct{}
	returned chan string
}

func newRebooter() *rebooter {
	return &rebooter{started: make(chan (<-chan struct{}), 10), release: make(chan struct{}), returned: make(chan string, 10)}
}

func (r *rebooter) Restart(shutdown <-chan struct{}) error {
	r.started <- shutdown
	select {
	case <-shutdown:
		r.returned <- "shutdown"
	case <-r.release:
		r.returned <- "released"
	}
	return nil
}

func hardJob(t *testing.T, r Rebooter) Job {
	t.Helper()
	srv := newServer(t, sample())
	e := newEnv(t, srv.URL)
	e.app.Reset = ResetHard
	if err := e.app.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	return Job{App: e.app, Options: Options{UserAgent: "ota-agent/test"}, Reboot: r}
}

// A reload while a hard reset waits for the board to go down does not
// tell the reset that the reboot is under way (it would skip the watchdog
// and reboot(2) fallbacks): only the end of the daemon's context does.
func TestDaemonReloadDoesNotEndAHardReset(t *testing.T) {
	r := newRebooter()
	job := hardJob(t, r)
	fleet := Fleet{Interval: time.Second, Jobs: []Job{job}}
	n := newNotes()
	reload := make(chan os.Signal, 1)
	d := &Daemon{Notify: n.notify, Reload: reload, Load: func() (Fleet, error) { return Fleet{Interval: time.Hour}, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, fleet) }()

	var shutdown <-chan struct{}
	select {
	case shutdown = <-r.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no hard reset after the switch of a hard-reset app")
	}
	reload <- syscall.SIGHUP
	n.waitFor(t, NotifyReloading)
	time.Sleep(200 * time.Millisecond) // the reload has stopped the app's loop by now
	select {
	case <-shutdown:
		t.Fatal("a reload closed the hard reset's shutdown signal")
	case how := <-r.returned:
		t.Fatalf("hard reset returned (%s) during a reload", how)
	default:
	}
	close(r.release) // the reset's fallbacks ran out: the board is still up
	if how := <-r.returned; how != "released" {
		t.Errorf("hard reset ended by %s, want released", how)
	}
	n.waitFor(t, NotifyReady)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// The end of the daemon's context (SIGTERM) is the shutdown the hard reset
// waits for; Run returns once it has.
func TestDaemonStopEndsAHardReset(t *testing.T) {
	r := newRebooter()
	n := newNotes()
	d := &Daemon{Notify: n.notify}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, Fleet{Interval: time.Second, Jobs: []Job{hardJob(t, r)}}) }()
	select {
	case <-r.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no hard reset after the switch of a hard-reset app")
	}
	cancel()
	if how := <-r.returned; how != "shutdown" {
		t.Errorf("hard reset ended by %s, want shutdown", how)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	n.mu.Lock()
	got := n.got
	n.mu.Unlock()
	if len(got) < 3 || got[0] != NotifyReady || got[len(got)-1] != NotifyStopping {
		t.Errorf("notifications = %q, want READY=1 first and STOPPING=1 last", got)
	}
	if !strings.HasPrefix(got[len(got)-2], "STATUS=sample v1.0.1, next check ") {
		t.Errorf("last status = %q, want the app at v1.0.1", got[len(got)-2])
	}
}

// The watchdog is fed while every app is idle or moving within its
// timeout (a switch within SwitchTimeout), and not once one is stuck.
func TestDaemonHealthy(t *testing.T) {
	now := time.Unix(1000, 0)
	slack := time.Second
	tests := []struct {
		name  string
		phase Phase
		quiet time.Duration
		want  bool
	}{
		{"idle for long", PhaseIdle, time.Hour, true},
		{"checking, quiet within the timeout", PhaseCheck, 5 * time.Second, true},
		{"checking, quiet past timeout and slack", PhaseCheck, 7 * time.Second, false},
		{"transfer, quiet past timeout and slack", PhaseTransfer, 7 * time.Second, false},
		{"switching within SwitchTimeout", PhaseSwitch, SwitchTimeout, true},
		{"switching past SwitchTimeout", PhaseSwitch, SwitchTimeout + 2*time.Second, false},
	}
	for _, tt := range tests {
		d := &Daemon{apps: map[string]*appState{
			"ok":    {phase: PhaseIdle, last: now.Add(-time.Hour), timeout: 5 * time.Second},
			"under": {phase: tt.phase, last: now.Add(-tt.quiet), timeout: 5 * time.Second},
		}}
		ok, app := d.healthy(now, slack)
		if ok != tt.want || (!ok && app != "under") {
			t.Errorf("%s: healthy = %v, %q; want %v", tt.name, ok, app, tt.want)
		}
	}
}
