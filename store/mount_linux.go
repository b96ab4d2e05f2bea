package store

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// entryFlags reports what keeps the entry name in dir from being replaced
// or removed: the immutable or append-only attribute (chattr +i, +a:
// EPERM even for root), or being a mount point (EBUSY).
func entryFlags(dir *os.File, name string) (immutable, appendOnly, mountPoint bool, err error) {
	var st unix.Statx_t
	if err := unix.Statx(int(dir.Fd()), name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st); err != nil {
		return false, false, false, err
	}
	has := func(attr uint64) bool { return st.Attributes_mask&attr != 0 && st.Attributes&attr != 0 }
	return has(unix.STATX_ATTR_IMMUTABLE), has(unix.STATX_ATTR_APPEND), has(unix.STATX_ATTR_MOUNT_ROOT), nil
}

// writable reports whether this process may create and remove entries in
// the open directory d: EROFS for a read-only mount, EPERM for an immutable
// one, EACCES for permissions.
func writable(d *os.File) error {
	return unix.Faccessat(int(d.Fd()), ".", unix.W_OK|unix.X_OK, unix.AT_EACCESS)
}

// sameMount reports whether two open directories are on one mount, where
// link(2) between them works. Where the kernel cannot tell the mount
// (before Linux 5.8), it says whether they are on one filesystem.
func sameMount(a, b *os.File) bool {
	var x, y unix.Statx_t
	const flags = unix.AT_EMPTY_PATH
	if unix.Statx(int(a.Fd()), "", flags, unix.STATX_MNT_ID, &x) != nil ||
		unix.Statx(int(b.Fd()), "", flags, unix.STATX_MNT_ID, &y) != nil {
		return false
	}
	if x.Mask&y.Mask&unix.STATX_MNT_ID != 0 {
		return x.Mnt_id == y.Mnt_id
	}
	return x.Dev_major == y.Dev_major && x.Dev_minor == y.Dev_minor
}

// mountOf returns the mount point that holds path in this process's mount
// namespace and whether it is read-only, from /proc/self/mountinfo: under
// systemd's ProtectSystem= and ReadWritePaths= the answer differs from the
// one a shell sees.
func mountOf(path string) (point string, readOnly bool, err error) {
	path, err = filepath.Abs(path)
	if err != nil {
		return "", false, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp != "/" && path != mp && !strings.HasPrefix(path, mp+"/") {
			continue
		}
		// Later lines are mounted over earlier ones: the last match wins
		// among equal lengths, the longest among different ones.
		if len(mp) >= len(point) {
			point = mp
			readOnly = false
			for _, o := range strings.Split(fields[5], ",") {
				if o == "ro" {
					readOnly = true
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, err
	}
	if point == "" {
		return "", false, errors.New("not found in /proc/self/mountinfo")
	}
	return point, readOnly, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a path
// in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
