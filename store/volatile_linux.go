package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// Volatile reports whether dir is on a filesystem that does not survive a
// reboot: tmpfs, ramfs, or an overlay (Raspberry Pi OS's overlay root keeps
// its writes in RAM). A hard reset with state there would reinstall and
// reboot for ever. fsType names the filesystem for the message.
func Volatile(dir string) (volatile bool, fsType string, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, "", &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	switch int64(st.Type) {
	case unix.TMPFS_MAGIC:
		return true, "tmpfs", nil
	case unix.RAMFS_MAGIC:
		return true, "ramfs", nil
	case unix.OVERLAYFS_SUPER_MAGIC:
		return true, "overlay", nil
	}
	return false, "", nil
}
