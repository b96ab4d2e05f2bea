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
	vm := StartQemu(t, img, QemuOptions{Watchdog: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m, err := vm.WaitSerial(ctx, regexp.MustCompile(`HELLO uptime=(\S+) watchdog=(\S*)`))
	if err != nil {
		t.Fatal(err)
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
