//go:build linux

package testenv

// QEMU disk images for the tests that need a whole machine: a bootable
// Debian built once per recipe, copied for each test, and read or written
// while no VM runs it.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// QemuBinary is the emulator StartQemu runs.
const QemuBinary = "qemu-system-x86_64"

// QemuPackages are the packages of every QEMU image's root filesystem, on top
// of which NewQemuImage adds the caller's.
var QemuPackages = []string{"systemd-sysv", "dbus", "udev", "linux-image-amd64"}

// The image recipe. Bump qemuRecipeVersion whenever what NewQemuImage does
// to the root filesystem changes, so images built the old way are not used.
const (
	qemuRecipeVersion = 1
	qemuImageSize     = "2G"
)

var (
	// qemuInitrdModules are all the initrd holds (MODULES=list): enough to
	// mount an ext4 root on a virtio disk. A 6 MB initrd instead of 30 MB.
	qemuInitrdModules = []string{"virtio_pci", "virtio_blk", "ext4"}
	// qemuDroppedModules (under lib/modules/<kernel>/kernel) drive hardware
	// the VM does not have, or that only slows its boot (udev loads ata_piix
	// and floppy for the emulated PC's controllers). The watchdog, virtio,
	// ext4 and what they need stay.
	qemuDroppedModules = []string{"sound", "drivers/gpu", "drivers/net", "drivers/media",
		"drivers/infiniband", "drivers/staging", "drivers/iio", "drivers/usb", "drivers/bluetooth",
		"drivers/hid", "drivers/input", "drivers/isdn", "drivers/mtd", "drivers/ata", "drivers/scsi",
		"drivers/block/floppy.ko", "net/wireless", "net/mac80211", "net/bluetooth"}
	// qemuMaskedUnits serve nobody in a test VM and cost boot time, or write
	// a login prompt into the serial log.
	qemuMaskedUnits = []string{"getty@tty1.service", "serial-getty@ttyS0.service",
		"systemd-logind.service", "e2scrub_reap.service"}
	// qemuUnwanted are enablement links debootstrap left (timers for apt,
	// fstrim, e2scrub): nothing periodic should run during a test.
	qemuUnwanted = []string{"getty.target.wants/getty@tty1.service",
		"multi-user.target.wants/e2scrub_reap.service", "timers.target.wants/apt-daily-upgrade.timer",
		"timers.target.wants/apt-daily.timer", "timers.target.wants/dpkg-db-backup.timer",
		"timers.target.wants/e2scrub_all.timer", "timers.target.wants/fstrim.timer"}
)

// QemuImage is a bootable Debian bookworm disk for one test: a raw ext4
// image of the whole root filesystem (no partition table; the kernel mounts
// /dev/vda), and the kernel and initrd QEMU boots it with.
//
// Change the disk only while no VM runs it (WriteFiles, CopyIn), and read it
// back once the VM has stopped (ReadFile): debugfs works on the image file
// directly, needing no mount. Each of them first replays the ext4 journal
// (e2fsck -E journal_only) as the guest's next mount would: after a power
// cut or a QMP quit, what the guest fsynced may be only in the journal, and
// debugfs neither reads it nor, when writing, keeps the next mount's replay
// from overwriting its changes.
type QemuImage struct {
	// Disk is the test's own copy of the root disk, in a temporary
	// directory removed when the test ends.
	Disk string
	// Kernel and Initrd are shared by every test of the same recipe:
	// read-only.
	Kernel, Initrd string
}

// NewQemuImage returns a copy, for this test alone, of a bootable image of
// Rootfs(QemuPackages + include): its initrd shrunk to qemuInitrdModules,
// hardware modules the VM lacks removed, /etc/fstab mounting /dev/vda
// read-write as "/", hostname "ota-test", the getty, logind and timers
// masked or disabled, in a 2 GiB ext4 image (mkfs.ext4 -d). Units the test
// adds start about 8 s after QEMU under TCG on an idle 2-core machine.
//
// The image is built once per recipe (the rootfs's, plus what is listed
// above) and cached beside the rootfs as qemu-<hash>.img, .vmlinuz and
// .initrd, under the same flock discipline as Rootfs; a build takes about
// 5 s on top of the rootfs's (about a minute). Each call copies the image
// (reflinked where the filesystem can, sparse otherwise: about 350 MB of
// data, under a second).
//
// It needs Linux, root, debootstrap, chroot, e2fsprogs (mkfs.ext4, e2fsck,
// debugfs) and qemu-system-x86_64; without them the test is skipped, or fails when CI is
// "true" (Require), as it does when the build fails.
func NewQemuImage(t testing.TB, include ...string) *QemuImage {
	t.Helper()
	Require(t, "QEMU image (needs root)", os.Geteuid() == 0)
	tools := map[string]string{}
	for _, name := range []string{QemuBinary, "mkfs.ext4", "e2fsck", "debugfs", "chroot", "cp"} {
		p, err := lookPathSbin(name)
		Require(t, "QEMU image (needs "+name+")", err == nil)
		tools[name] = p
	}
	rootfs := Rootfs(t, append(slices.Clone(QemuPackages), include...)...)
	base := filepath.Dir(rootfs)
	recipe := fmt.Sprintf("ota-agent test qemu image recipe %d\nrootfs %s\ninitrd modules %s\ndropped %s\nmasked %s\nunwanted %s\nsize %s\n",
		qemuRecipeVersion, filepath.Base(rootfs), strings.Join(qemuInitrdModules, ","),
		strings.Join(qemuDroppedModules, ","), strings.Join(qemuMaskedUnits, ","),
		strings.Join(qemuUnwanted, ","), qemuImageSize)
	name := filepath.Join(base, "qemu-"+recipeHash(recipe))
	cached := QemuImage{Disk: name + ".img", Kernel: name + ".vmlinuz", Initrd: name + ".initrd"}

	if !fileExists(cached.Disk) {
		unlock, err := lockFile(name + ".lock")
		if err != nil {
			t.Fatalf("NewQemuImage: lock: %v", err)
		}
		if !fileExists(cached.Disk) { // else built by another process meanwhile
			start := time.Now()
			t.Logf("NewQemuImage: building %s", cached.Disk)
			if err := buildQemuImage(rootfs, name, recipe, tools); err != nil {
				unlock()
				Require(t, fmt.Sprintf("QEMU image (%v)", err), false)
			}
			t.Logf("NewQemuImage: built %s in %v", cached.Disk, time.Since(start).Round(time.Second))
		}
		unlock()
	}

	img := &QemuImage{Disk: filepath.Join(t.TempDir(), "disk.img"), Kernel: cached.Kernel, Initrd: cached.Initrd}
	if out, err := exec.Command(tools["cp"], "--reflink=auto", "--sparse=always", cached.Disk, img.Disk).CombinedOutput(); err != nil {
		t.Fatalf("NewQemuImage: copy %s: %v\n%s", cached.Disk, err, out)
	}
	return img
}

// buildQemuImage turns a copy of rootfs into name.img, .vmlinuz, .initrd
// (see NewQemuImage). It works in name.tmp-*, which the next build removes
// if this one is interrupted, and renames the image into place last: an
// image that exists is complete.
func buildQemuImage(rootfs, name, recipe string, tools map[string]string) error {
	stale, _ := filepath.Glob(name + ".tmp-*")
	for _, s := range stale {
		if err := os.RemoveAll(s); err != nil {
			return fmt.Errorf("remove an interrupted build: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(name), filepath.Base(name)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "root")
	if out, err := exec.Command(tools["cp"], "-a", "--", rootfs+"/.", tree).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s: %v\n%s", rootfs, err, out)
	}
	kernels, _ := filepath.Glob(filepath.Join(tree, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return fmt.Errorf("want one kernel in %s/boot, found %d", rootfs, len(kernels))
	}
	kver := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")

	// Smaller: no downloaded packages, package lists, docs or translations.
	for _, pat := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*",
		"usr/share/doc/*", "usr/share/man/*", "usr/share/locale/*", "usr/share/info/*"} {
		m, _ := filepath.Glob(filepath.Join(tree, pat))
		for _, p := range m {
			if b := filepath.Base(p); b == "lock" || b == "partial" { // APT's own
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	for _, m := range qemuDroppedModules {
		if err := os.RemoveAll(filepath.Join(tree, "lib/modules", kver, "kernel", m)); err != nil {
			return err
		}
	}
	conf := filepath.Join(tree, "etc/initramfs-tools/initramfs.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	b = regexp.MustCompile(`(?m)^MODULES=.*$`).ReplaceAll(b, []byte("MODULES=list"))
	files := map[string]string{
		"etc/initramfs-tools/initramfs.conf": string(b),
		"etc/initramfs-tools/modules":        strings.Join(qemuInitrdModules, "\n") + "\n",
		"etc/fstab":                          "/dev/vda / ext4 rw 0 1\n",
		"etc/hostname":                       "ota-test\n",
	}
	for p, content := range files {
		if err := os.WriteFile(filepath.Join(tree, p), []byte(content), 0o644); err != nil {
			return err
		}
	}
	units := filepath.Join(tree, "etc/systemd/system")
	for _, u := range qemuUnwanted {
		if err := os.Remove(filepath.Join(units, u)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, u := range qemuMaskedUnits {
		if err := os.Symlink("/dev/null", filepath.Join(units, u)); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"/sbin/depmod", "-a", kver}, {"/usr/sbin/update-initramfs", "-u", "-k", kver}} {
		cmd := exec.Command(tools["chroot"], append([]string{tree}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("chroot %s: %v\n%s", strings.Join(args, " "), err, tail(out, 4<<10))
		}
	}

	for src, dst := range map[string]string{"vmlinuz-" + kver: name + ".vmlinuz", "initrd.img-" + kver: name + ".initrd"} {
		b, err := os.ReadFile(filepath.Join(tree, "boot", src))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, filepath.Base(dst)), b, 0o644); err != nil {
			return err
		}
	}
	img := filepath.Join(tmp, filepath.Base(name)+".img")
	if out, err := exec.Command(tools["mkfs.ext4"], "-q", "-F", "-L", "ota-root", "-d", tree, img, qemuImageSize).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d: %v\n%s", err, out)
	}
	if err := os.WriteFile(name+".recipe", []byte(recipe), 0o644); err != nil {
		return err
	}
	for _, ext := range []string{".vmlinuz", ".initrd", ".img"} { // the image last
		if err := os.Rename(filepath.Join(tmp, filepath.Base(name)+ext), name+ext); err != nil {
			return err
		}
	}
	syncDir(filepath.Dir(name))
	return nil
}

// QemuFile is a file, directory or symlink for QemuImage.WriteFiles.
type QemuFile struct {
	// Path is absolute in the guest. Its missing parent directories are
	// created 0755.
	Path string
	// Data is a regular file's content.
	Data []byte
	// Mode is a regular file's or directory's permission bits: 0 means
	// 0644 for a file, 0755 for a directory.
	Mode fs.FileMode
	// Dir makes Path a directory (Data is ignored).
	Dir bool
	// Link makes Path a symlink to Link (Data is ignored).
	Link string
}

// WriteFiles puts files into the stopped VM's disk, owned by root,
// replacing files and symlinks already there. It fails the test on error.
func (img *QemuImage) WriteFiles(t testing.TB, files ...QemuFile) {
	t.Helper()
	dir := t.TempDir()
	var cmds []string
	made := map[string]bool{"/": true}
	mkdirs := func(p string) {
		var chain []string
		for d := p; !made[d]; d = path.Dir(d) {
			chain = append(chain, d)
		}
		for i := len(chain) - 1; i >= 0; i-- {
			made[chain[i]] = true
			cmds = append(cmds, "mkdir "+chain[i])
		}
	}
	for i, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || strings.ContainsAny(f.Path, " \t\n\"'\\") || f.Path == "/" {
			t.Fatalf("WriteFiles: bad guest path %q", f.Path)
		}
		mkdirs(path.Dir(f.Path))
		switch {
		case f.Dir:
			mode := f.Mode.Perm()
			if mode == 0 {
				mode = 0o755
			}
			if !made[f.Path] {
				made[f.Path] = true
				cmds = append(cmds, "mkdir "+f.Path)
			}
			cmds = append(cmds, fmt.Sprintf("sif %s mode 0%o", f.Path, 0o40000|uint32(mode)))
		case f.Link != "":
			cmds = append(cmds, "rm "+f.Path, fmt.Sprintf("symlink %s %s", f.Path, f.Link))
		default:
			mode := f.Mode.Perm()
			if mode == 0 {
				mode = 0o644
			}
			src := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(src, f.Data, 0o600); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, "rm "+f.Path, fmt.Sprintf("write %s %s", src, f.Path),
				fmt.Sprintf("sif %s mode 0%o", f.Path, 0o100000|uint32(mode)),
				fmt.Sprintf("sif %s uid 0", f.Path), fmt.Sprintf("sif %s gid 0", f.Path))
		}
	}
	script := filepath.Join(dir, "cmds")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := img.debugfs(true, "-f", script); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
}

// CopyIn copies the host tree hostDir into the stopped VM's disk at guestDir,
// keeping modes and symlinks (owners become root). It fails the test on
// error.
func (img *QemuImage) CopyIn(t testing.TB, hostDir, guestDir string) {
	t.Helper()
	var files []QemuFile
	err := filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(hostDir, p)
		guest := path.Join(guestDir, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if guest != "/" {
				files = append(files, QemuFile{Path: guest, Dir: true, Mode: fi.Mode().Perm()})
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			files = append(files, QemuFile{Path: guest, Link: target})
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files = append(files, QemuFile{Path: guest, Data: b, Mode: fi.Mode().Perm()})
		default:
			return fmt.Errorf("%s: not a file, directory or symlink", p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("CopyIn: %v", err)
	}
	img.WriteFiles(t, files...)
}

// ReadFile returns a regular file of the stopped VM's disk. A missing file
// is an error wrapping fs.ErrNotExist.
func (img *QemuImage) ReadFile(p string) ([]byte, error) {
	if !path.IsAbs(p) || strings.ContainsAny(p, " \t\n\"'\\") {
		return nil, fmt.Errorf("read %s: bad guest path", p)
	}
	out, err := img.debugfs(false, "-R", "cat "+p)
	if err != nil {
		if strings.Contains(err.Error(), "File not found") {
			return nil, fmt.Errorf("read %s in %s: %w", p, img.Disk, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return out, nil
}

// ReadDir returns the names in a directory of the stopped VM's disk, sorted,
// without "." and "..". A missing directory is an error wrapping
// fs.ErrNotExist.
func (img *QemuImage) ReadDir(p string) ([]string, error) {
	if !path.IsAbs(p) || strings.ContainsAny(p, " \t\n\"'\\") {
		return nil, fmt.Errorf("read %s: bad guest path", p)
	}
	out, err := img.debugfs(false, "-R", "ls -p "+p)
	if err != nil {
		if strings.Contains(err.Error(), "File not found") {
			return nil, fmt.Errorf("read %s in %s: %w", p, img.Disk, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(line, "/")
		if len(f) < 7 || f[5] == "." || f[5] == ".." {
			continue
		}
		names = append(names, strings.Join(f[5:len(f)-2], "/"))
	}
	slices.Sort(names)
	return names, nil
}

// debugfsBanner is the version line debugfs always prints on stderr.
var debugfsBanner = regexp.MustCompile(`^debugfs [0-9.]+ \(.*\)$`)

// debugfsExpected are the complaints of WriteFiles's own commands that mean
// nothing is wrong: a directory that exists, and rm of a file that does not.
var debugfsExpected = regexp.MustCompile(`^(ext2fs_mkdir: Ext2 directory already exists while creating directory .*|mkdir: Ext2 directory already exists ?|rm: File not found by ext2_lookup while trying to resolve filename)$`)

// debugfs runs debugfs on the disk (-w when write) and returns its stdout.
// debugfs exits 0 whatever its commands did, so anything on stderr besides
// the banner and the expected complaints is an error.
func (img *QemuImage) debugfs(write bool, args ...string) ([]byte, error) {
	if err := img.replayJournal(); err != nil {
		return nil, err
	}
	bin, err := lookPathSbin("debugfs")
	if err != nil {
		return nil, err
	}
	if write {
		args = append([]string{"-w"}, args...)
	}
	cmd := exec.Command(bin, append(args, img.Disk)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("debugfs %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !debugfsBanner.MatchString(line) && !(write && debugfsExpected.MatchString(line)) {
			bad = append(bad, line)
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("debugfs %s: %s", strings.Join(args, " "), strings.Join(bad, "; "))
	}
	return stdout.Bytes(), nil
}

// replayJournal writes what the ext4 journal holds into the filesystem, as
// mounting it would, and nothing else (no check, no repair).
func (img *QemuImage) replayJournal() error {
	bin, err := lookPathSbin("e2fsck")
	if err != nil {
		return err
	}
	out, err := exec.Command(bin, "-y", "-E", "journal_only", img.Disk).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 { // 1: the journal was replayed
		err = nil
	}
	if err != nil {
		return fmt.Errorf("e2fsck -E journal_only %s: %v\n%s", img.Disk, err, out)
	}
	return nil
}
