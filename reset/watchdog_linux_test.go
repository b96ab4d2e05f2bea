//go:build linux

package reset

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeDevice is a watchdog driver that records what Fire does to it.
type fakeDevice struct {
	options uint32
	timeout int // what GETTIMEOUT reports
	clamp   func(int) int
	setErr  error
	keepErr error

	calls   *[]string
	set     []int
	written []byte
	closed  bool
}

func (d *fakeDevice) GetSupport() (*unix.WatchdogInfo, error) {
	*d.calls = append(*d.calls, "getsupport")
	info := &unix.WatchdogInfo{Options: d.options}
	copy(info.Identity[:], "fake wdt")
	return info, nil
}

func (d *fakeDevice) SetTimeout(s int) error {
	*d.calls = append(*d.calls, "settimeout")
	d.set = append(d.set, s)
	if d.setErr != nil {
		return d.setErr
	}
	if d.clamp != nil {
		s = d.clamp(s)
	}
	d.timeout = s
	return nil
}

func (d *fakeDevice) GetTimeout() (int, error) {
	*d.calls = append(*d.calls, "gettimeout")
	return d.timeout, nil
}

func (d *fakeDevice) Keepalive() error {
	*d.calls = append(*d.calls, "keepalive")
	return d.keepErr
}

func (d *fakeDevice) Write(p []byte) (int, error) {
	*d.calls = append(*d.calls, "write")
	d.written = append(d.written, p...)
	return len(p), nil
}

func (d *fakeDevice) Close() error {
	*d.calls = append(*d.calls, "close")
	d.closed = true
	return nil
}

// useFake routes w's device and sync to d (or openErr) and returns the
// list of calls made, sync and open included. It empties the process's
// list of armed devices for the test.
func useFake(t *testing.T, w *Watchdog, d *fakeDevice, openErr error) *[]string {
	t.Helper()
	calls := &[]string{}
	if d != nil {
		d.calls = calls
	}
	w.host.open = func(path string) (device, error) {
		*calls = append(*calls, "open "+path)
		if openErr != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: openErr}
		}
		return d, nil
	}
	w.host.sync = func() { *calls = append(*calls, "sync") }
	armed.Lock()
	oldArmed := armed.devices
	armed.devices = nil
	armed.Unlock()
	t.Cleanup(func() {
		armed.Lock()
		armed.devices = oldArmed
		armed.Unlock()
	})
	return calls
}

func isArmed(d device) bool {
	armed.Lock()
	defer armed.Unlock()
	return slices.Contains(armed.devices, d)
}

const fullSupport = unix.WDIOF_SETTIMEOUT | unix.WDIOF_KEEPALIVEPING | unix.WDIOF_MAGICCLOSE

func TestWatchdogFireArms(t *testing.T) {
	tests := []struct {
		name      string
		dev       fakeDevice
		timeout   time.Duration
		wantSet   []int
		want      time.Duration
		wantWrite []byte
	}{
		{
			name:    "driver clamps 1 s up to 15 s",
			dev:     fakeDevice{options: fullSupport, timeout: 60, clamp: func(int) int { return 15 }},
			timeout: time.Second,
			wantSet: []int{1},
			want:    15 * time.Second,
		},
		{
			name:    "rounds up to whole seconds",
			dev:     fakeDevice{options: fullSupport, timeout: 60},
			timeout: 1500 * time.Millisecond,
			wantSet: []int{2},
			want:    2 * time.Second,
		},
		{
			name:    "zero timeout keeps the driver's",
			dev:     fakeDevice{options: fullSupport, timeout: 30},
			timeout: 0,
			want:    30 * time.Second,
		},
		{
			name:    "fixed-timeout driver is not asked to change",
			dev:     fakeDevice{options: unix.WDIOF_KEEPALIVEPING | unix.WDIOF_MAGICCLOSE, timeout: 10},
			timeout: 5 * time.Second,
			want:    10 * time.Second,
		},
		{
			name:    "timeout out of range keeps the driver's",
			dev:     fakeDevice{options: fullSupport, timeout: 15, setErr: unix.EINVAL},
			timeout: 60 * time.Second,
			wantSet: []int{60},
			want:    15 * time.Second,
		},
		{
			name:      "no keepalive ioctl: pings by writing a byte that is not 'V'",
			dev:       fakeDevice{options: unix.WDIOF_SETTIMEOUT | unix.WDIOF_MAGICCLOSE, timeout: 60},
			timeout:   3 * time.Second,
			wantSet:   []int{3},
			want:      3 * time.Second,
			wantWrite: []byte{0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &tt.dev
			w := &Watchdog{Device: "/dev/fake-watchdog", Timeout: tt.timeout}
			calls := useFake(t, w, d, nil)
			got, err := w.Fire(context.Background())
			if err != nil {
				t.Fatalf("Fire() error = %v, want nil", err)
			}
			if got != tt.want {
				t.Errorf("Fire() = %v, want %v", got, tt.want)
			}
			if !slices.Equal(d.set, tt.wantSet) {
				t.Errorf("WDIOC_SETTIMEOUT calls = %v, want %v", d.set, tt.wantSet)
			}
			if bytes.IndexByte(d.written, 'V') >= 0 {
				t.Errorf("wrote %q: the magic 'V' disarms the watchdog", d.written)
			}
			if !bytes.Equal(d.written, tt.wantWrite) {
				t.Errorf("wrote %q, want %q", d.written, tt.wantWrite)
			}
			if d.closed {
				t.Error("device closed, want it held open")
			}
			if !isArmed(d) {
				t.Error("device not kept in armed")
			}
			// sync before open; one keepalive, after the timeout is set.
			if (*calls)[0] != "sync" || (*calls)[1] != "open /dev/fake-watchdog" {
				t.Errorf("calls = %v, want sync then open first", *calls)
			}
			last := (*calls)[len(*calls)-1]
			if tt.wantWrite == nil && last != "keepalive" {
				t.Errorf("calls = %v, want keepalive last", *calls)
			}
			if n := count(*calls, "keepalive"); tt.wantWrite == nil && n != 1 {
				t.Errorf("%d keepalives, want 1", n)
			}
		})
	}
}

func count(s []string, v string) int {
	n := 0
	for _, e := range s {
		if e == v {
			n++
		}
	}
	return n
}

func TestWatchdogFireOpenErrors(t *testing.T) {
	tests := []struct {
		name     string
		openErr  error
		wantBusy bool
		wantIs   error
	}{
		{"busy", unix.EBUSY, true, unix.EBUSY},
		{"missing", unix.ENOENT, false, fs.ErrNotExist},
		{"permission", unix.EACCES, false, fs.ErrPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &Watchdog{Timeout: time.Second}
			useFake(t, w, nil, tt.openErr)
			got, err := w.Fire(context.Background())
			if err == nil {
				t.Fatalf("Fire() = %v, nil; want an error", got)
			}
			if errors.Is(err, ErrWatchdogBusy) != tt.wantBusy {
				t.Errorf("Fire() = %v; errors.Is(err, ErrWatchdogBusy) = %v, want %v", err, !tt.wantBusy, tt.wantBusy)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("Fire() = %v, want it to wrap %v", err, tt.wantIs)
			}
			armed.Lock()
			n := len(armed.devices)
			armed.Unlock()
			if n != 0 {
				t.Errorf("%d devices armed after a failed open, want 0", n)
			}
		})
	}
}

func TestWatchdogFireDisarmsOnFailure(t *testing.T) {
	tests := []struct {
		name      string
		dev       fakeDevice
		wantWrite []byte
	}{
		{
			name:      "keepalive fails: magic close",
			dev:       fakeDevice{options: fullSupport, timeout: 15, keepErr: unix.EIO},
			wantWrite: []byte("V"),
		},
		{
			name:      "settimeout fails: magic close",
			dev:       fakeDevice{options: fullSupport, timeout: 15, setErr: unix.EIO},
			wantWrite: []byte("V"),
		},
		{
			name: "no magic close support: plain close",
			dev:  fakeDevice{options: unix.WDIOF_SETTIMEOUT | unix.WDIOF_KEEPALIVEPING, timeout: 15, keepErr: unix.EIO},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &tt.dev
			w := &Watchdog{Timeout: time.Second}
			useFake(t, w, d, nil)
			got, err := w.Fire(context.Background())
			if !errors.Is(err, unix.EIO) {
				t.Fatalf("Fire() = %v, %v; want an error wrapping EIO", got, err)
			}
			if !d.closed {
				t.Error("device left open after a failure")
			}
			if !bytes.Equal(d.written, tt.wantWrite) {
				t.Errorf("wrote %q, want %q", d.written, tt.wantWrite)
			}
			if isArmed(d) {
				t.Error("failed device kept in armed")
			}
		})
	}
}

func TestWatchdogFireCancelled(t *testing.T) {
	d := &fakeDevice{options: fullSupport, timeout: 15}
	w := &Watchdog{Timeout: time.Second}
	calls := useFake(t, w, d, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Fire(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Fire(cancelled) error = %v, want context.Canceled", err)
	}
	if len(*calls) != 0 {
		t.Errorf("calls = %v, want none", *calls)
	}
}
