//go:build linux

package testenv

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

// TestQemuImageFiles writes files, directories and symlinks into an image
// and reads them back, without booting it.
func TestQemuImageFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a VM image in -short mode")
	}
	img := NewQemuImage(t)
	host := t.TempDir()
	os.MkdirAll(filepath.Join(host, "a/b"), 0o700)
	os.WriteFile(filepath.Join(host, "a/b/f"), []byte("from the host\n"), 0o600)
	os.Symlink("b/f", filepath.Join(host, "a/l"))
	img.CopyIn(t, host, "/srv/copied")
	img.WriteFiles(t,
		QemuFile{Path: "/srv/new/deep/x", Data: []byte("one")},
		QemuFile{Path: "/srv/new/deep/x", Data: []byte("two")}, // replaced
		QemuFile{Path: "/etc/hostname", Data: []byte("replaced\n")},
		QemuFile{Path: "/srv/dir", Dir: true, Mode: 0o700},
		QemuFile{Path: "/srv/link", Link: "/etc/hostname"},
	)
	for p, want := range map[string]string{
		"/srv/copied/a/b/f": "from the host\n", "/srv/new/deep/x": "two", "/etc/hostname": "replaced\n",
		"/etc/fstab": "/dev/vda / ext4 rw 0 1\n",
	} {
		if got, err := img.ReadFile(p); err != nil || string(got) != want {
			t.Errorf("ReadFile(%q) = %q, %v, want %q", p, got, err, want)
		}
	}
	if _, err := img.ReadFile("/srv/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(missing) error = %v, want fs.ErrNotExist", err)
	}
	if names, err := img.ReadDir("/srv/copied/a"); err != nil || !slices.Equal(names, []string{"b", "l"}) {
		t.Errorf("ReadDir(/srv/copied/a) = %q, %v, want [b l]", names, err)
	}
	if _, err := img.ReadDir("/srv/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadDir(missing) error = %v, want fs.ErrNotExist", err)
	}
	out, err := img.debugfs(false, "-R", "stat /srv/copied/a/b/f")
	if err != nil || !bytes.Contains(out, []byte("Mode:  0600")) {
		t.Errorf("stat of a copied 0600 file: %v\n%s", err, out)
	}
	out, err = img.debugfs(false, "-R", "stat /srv/copied/a/l")
	if err != nil || !bytes.Contains(out, []byte(`Fast link dest: "b/f"`)) {
		t.Errorf("stat of a copied symlink: %v\n%s", err, out)
	}
	out, err = img.debugfs(false, "-R", "stat /srv/dir")
	if err != nil || !bytes.Contains(out, []byte("Type: directory")) || !bytes.Contains(out, []byte("Mode:  0700")) {
		t.Errorf("stat of a 0700 directory: %v\n%s", err, out)
	}
}

// TestQemuBoot boots an image to a unit the test adds, which writes a file
// and powers the machine off: QEMU exits by itself after SHUTDOWN, and the
// file is on the disk.
func TestQemuBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM in -short mode")
	}
	img := NewQemuImage(t)
	img.WriteFiles(t,
		QemuFile{Path: "/etc/systemd/system/hello.service", Data: []byte(`[Unit]
Description=hello
[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/udevadm settle
ExecStart=/bin/sh -c 'echo "HELLO uptime=$(cut -d" " -f1 /proc/uptime) watchdog=$(ls /dev/watchdog)"; echo written > /root/hello; sync'
ExecStart=/bin/systemctl --no-block poweroff
[Install]
WantedBy=multi-user.target
`)},
		QemuFile{Path: "/etc/systemd/system/multi-user.target.wants/hello.service", Link: "/etc/systemd/system/hello.service"},
	)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var vm *QemuVM
	var m []string
	for attempt := 1; m == nil; attempt++ {
		vm = StartQemu(t, img, QemuOptions{Watchdog: true})
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		var err error
		m, err = vm.WaitSerial(wctx, regexp.MustCompile(`HELLO uptime=(\S+) watchdog=(\S*)\r?\n`))
		wcancel()
		if err != nil && (!vm.GuestStalled() || attempt == 2) {
			t.Fatal(err)
		}
		if err != nil {
			t.Logf("the guest kernel stalled (TCG); booting again")
			vm.Kill()
		}
	}
	t.Logf("booted in %v (guest uptime %s s)", time.Since(start).Round(time.Millisecond), m[1])
	if m[2] != "/dev/watchdog" {
		t.Errorf("the guest has no /dev/watchdog: %q", m[0])
	}
	if err := vm.Wait(ctx); err != nil {
		t.Errorf("QEMU after a guest poweroff: %v, want exit 0", err)
	}
	if _, err := vm.WaitEvent(ctx, "SHUTDOWN"); err != nil {
		t.Error(err)
	}
	if got, err := img.ReadFile("/root/hello"); err != nil || string(got) != "written\n" {
		t.Errorf("ReadFile(/root/hello) = %q, %v, want %q", got, err, "written\n")
	}
	t.Logf("up and down in %v", time.Since(start).Round(time.Millisecond))
}

// TestGuestStallPattern matches what a stalled guest kernel printed here
// (TCG, overloaded host), and not a normal boot's console.
func TestGuestStallPattern(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"[   27.091978] rcu: INFO: rcu_preempt self-detected stall on CPU", true},
		{"[   27.091978] rcu: rcu_preempt kthread starved for 5245 jiffies! g1381 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x0 ->cpu=0", true},
		{"[   52.426926] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [systemd:1]", true},
		{"[    9.488686] watchdog: watchdog0: watchdog did not stop!", false},
		{"[    7.549713] qemu-check[213]: QEMUT check boot=8ad09a94 app=v1 state=v1", false},
	} {
		if got := guestStall.MatchString(tc.line); got != tc.want {
			t.Errorf("guestStall.MatchString(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}
