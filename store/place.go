package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Files move between the state dir and the app dir by link(2) where both
// are on one mount, else by a copy: systemd gives a unit its own mount
// namespace, where StateDirectory= and ReadWritePaths= bind-mount the state
// dir and the app dir separately, and link(2) or rename(2) between two
// mounts fails with EXDEV even on one filesystem. A rename only ever
// happens inside one directory (a temp name over the final one), which
// works on every mount. The source is never moved, so a switch can always
// be redone or undone from it.

// tmpSuffix ends the temp name a file is placed under beside its target
// before the rename over it: ".<name>.ota-tmp". A release may not ship a
// file named like that (see checkTempName).
const tmpSuffix = ".ota-tmp"

func tmpName(base string) string { return "." + base + tmpSuffix }

// isTempName reports whether base is a name placeFile uses for its temp files.
func isTempName(base string) bool {
	return strings.HasPrefix(base, ".") && strings.HasSuffix(base, tmpSuffix) && len(base) > 1+len(tmpSuffix)
}

// linkFallback lists the link(2) errors after which a copy does the job:
// another mount (EXDEV), a file the caller may not link (EPERM, under
// fs.protected_hardlinks), too many links (EMLINK), no hard links (ENOTSUP).
func linkFallback(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EMLINK) ||
		errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// placeFile makes dst/<name> hold what src/<name> holds, atomically: the
// entry is linked (or copied, with its mode and owner, and fsynced) to a
// temp name in dst, then renamed over name, and dst is fsynced. Whatever
// was at dst/<name> before stays whole until the rename, so a reader of
// that path sees the old or the new file, never neither or a part. step
// names the crash points. copied reports whether the bytes were copied.
func placeFile(step string, src *os.File, srcName string, dst *os.File, name string) (copied bool, err error) {
	tmp := tmpName(name)
	if err := unlinkIfExists(dst, tmp); err != nil {
		return false, err
	}
	crashPoint("place " + step)
	err = unix.Linkat(int(src.Fd()), srcName, int(dst.Fd()), tmp, 0)
	if err != nil && linkFallback(err) {
		copied, err = true, copyEntry(src, srcName, dst, tmp)
	}
	if err != nil {
		unlinkIfExists(dst, tmp)
		return copied, fmt.Errorf("%s/%s to %s/%s: %w", src.Name(), srcName, dst.Name(), tmp, err)
	}
	// The copy's data was fsynced by copyEntry; a link is the source's
	// inode, durable already. This pair covers the data either way.
	crashPoint("fsync " + step)
	if err := syncEntry(dst, tmp); err != nil {
		unlinkIfExists(dst, tmp)
		return copied, err
	}
	crashPoint("replace " + step)
	if err := unix.Renameat(int(dst.Fd()), tmp, int(dst.Fd()), name); err != nil {
		unlinkIfExists(dst, tmp)
		return copied, fmt.Errorf("rename %s/%s to %s: %w", dst.Name(), tmp, name, err)
	}
	// Where dst/<name> was already a link to the same file, rename(2)
	// did nothing and left the temp name.
	if err := unlinkIfExists(dst, tmp); err != nil {
		return copied, err
	}
	crashPoint("fsync after replace " + step)
	if err := dst.Sync(); err != nil {
		return copied, fmt.Errorf("fsync %s: %w", dst.Name(), err)
	}
	return copied, nil
}

// removeEntry unlinks dir/<name> (not a directory) and fsyncs dir; a
// missing entry is not an error.
func removeEntry(step string, dir *os.File, name string) error {
	crashPoint("remove " + step)
	if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s/%s: %w", dir.Name(), name, err)
	}
	crashPoint("fsync after remove " + step)
	return dir.Sync()
}

func unlinkIfExists(dir *os.File, name string) error {
	if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s/%s: %w", dir.Name(), name, err)
	}
	return nil
}

// syncEntry fsyncs a regular file in dir (symlinks have nothing to sync).
func syncEntry(dir *os.File, name string) error {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil // a symlink
	}
	if err != nil {
		return fmt.Errorf("open %s/%s: %w", dir.Name(), name, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s/%s: %w", dir.Name(), name, err)
	}
	return nil
}

// copyEntry copies the regular file or symlink src/<srcName> to the new
// name dst/<name>, with its permission bits and (as root) its owner; a
// file's data is fsynced before it returns.
func copyEntry(src *os.File, srcName string, dst *os.File, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(int(src.Fd()), srcName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := readlinkat(src, srcName)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, int(dst.Fd()), name); err != nil {
			return err
		}
		if os.Geteuid() == 0 {
			return unix.Fchownat(int(dst.Fd()), name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
		}
		return nil
	case unix.S_IFREG:
	default:
		return fmt.Errorf("%s/%s is not a regular file or a symlink", src.Name(), srcName)
	}
	in, err := unix.Openat(int(src.Fd()), srcName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	r := os.NewFile(uintptr(in), srcName)
	defer r.Close()
	out, err := unix.Openat(int(dst.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	w := os.NewFile(uintptr(out), name)
	defer w.Close()
	if _, err := io.Copy(w, r); err != nil {
		return err
	}
	if err := w.Chmod(os.FileMode(st.Mode & 0o777)); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := w.Chown(int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	return w.Sync()
}

func readlinkat(dir *os.File, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(int(dir.Fd()), name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
