package main

// What the daemon writes to persistent storage while nothing changes: two
// views, both read after the first check (the install) and after the N-th
// unchanged check.
//
//   - The daemon's own count: write_bytes and cancelled_write_bytes of
//     /proc/PID/io, the bytes of page cache it dirtied on any block-backed
//     file system (a page at a time; tmpfs, sockets and pipes do not count).
//     It misses what the file system writes for it: metadata, the ext4
//     journal.
//   - The disk's count: the state dir and the app dir go on a small ext4
//     of their own, on a loop device, so the sectors written to that device
//     (/sys/block/loopN/stat) are the daemon's alone, metadata and journal
//     commits included. Both readings follow a syncfs of that file system,
//     so writeback that would come later is counted now.
//
// The loop device needs root, losetup, mkfs.ext4 and mount; without them
// the state dir stays in the work directory and the disk's count is "-".

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ioSample is what the daemon wrote so far.
type ioSample struct {
	writeBytes, cancelled int64 // /proc/PID/io
	sectors               int64 // sectors (512 B) written to the loop device; -1: no device
}

func (a ioSample) sub(b ioSample) ioSample {
	d := ioSample{writeBytes: a.writeBytes - b.writeBytes, cancelled: a.cancelled - b.cancelled, sectors: -1}
	if a.sectors >= 0 && b.sectors >= 0 {
		d.sectors = a.sectors - b.sectors
	}
	return d
}

// readIO reads write_bytes and cancelled_write_bytes of /proc/PID/io.
func readIO(pid int) (ioSample, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return ioSample{}, err
	}
	s := ioSample{writeBytes: -1, sectors: -1}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "write_bytes":
			s.writeBytes = n
		case "cancelled_write_bytes":
			s.cancelled = n
		}
	}
	if s.writeBytes < 0 {
		return s, fmt.Errorf("no write_bytes in /proc/%d/io (a kernel without task I/O accounting?)", pid)
	}
	return s, nil
}

// loopDisk is a small ext4 on a loop device, mounted at dir.
type loopDisk struct {
	image, dev, dir string
	mounted         bool
}

const loopDiskSize = 64 << 20

// newLoopDisk makes an ext4 image in work, attaches it to a loop device and
// mounts it at work/disk. Its inode tables and journal are initialised by
// mkfs (lazy_itable_init=0, lazy_journal_init=0), so no kernel thread
// writes to it later. Mount options are ext4's defaults.
func newLoopDisk(work string) (*loopDisk, error) {
	d := &loopDisk{image: filepath.Join(work, "disk.img"), dir: filepath.Join(work, "disk")}
	run := func(name string, args ...string) (string, error) {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return strings.TrimSpace(string(out)), nil
	}
	f, err := os.Create(d.image)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(loopDiskSize)
	f.Close()
	if err != nil {
		return nil, err
	}
	if _, err := run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", d.image); err != nil {
		os.Remove(d.image)
		return nil, err
	}
	if d.dev, err = run("losetup", "--find", "--show", d.image); err != nil {
		os.Remove(d.image)
		return nil, err
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		d.close()
		return nil, err
	}
	if _, err := run("mount", "-t", "ext4", d.dev, d.dir); err != nil {
		d.close()
		return nil, err
	}
	d.mounted = true
	if _, err := d.sectors(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// sectors syncs the file system and returns the sectors written to the
// device so far.
func (d *loopDisk) sectors() (int64, error) {
	if out, err := exec.Command("sync", "-f", d.dir).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("sync -f %s: %v: %s", d.dir, err, bytes.TrimSpace(out))
	}
	path := filepath.Join("/sys/block", filepath.Base(d.dev), "stat")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// read I/Os, merges, sectors, ticks, write I/Os, merges, sectors, ...
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return 0, fmt.Errorf("%s: %d fields", path, len(f))
	}
	return strconv.ParseInt(f[6], 10, 64)
}

func (d *loopDisk) String() string {
	return fmt.Sprintf("ext4 on %s (a %d MiB image, mkfs.ext4 defaults, mounted with ext4's default options) at %s", d.dev, loopDiskSize>>20, d.dir)
}

// close unmounts the file system, detaches the device and removes the
// image. Safe to call twice.
func (d *loopDisk) close() {
	if d.mounted {
		if out, err := exec.Command("umount", d.dir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: umount %s: %v: %s\n", d.dir, err, bytes.TrimSpace(out))
			return // leave the image: the device still uses it
		}
		d.mounted = false
	}
	if d.dev != "" {
		exec.Command("losetup", "-d", d.dev).Run()
		d.dev = ""
	}
	os.Remove(d.image)
}
