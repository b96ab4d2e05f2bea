package reset

import "golang.org/x/sys/unix"

// Restart syncs the filesystems and restarts the machine at once with
// reboot(2), without stopping units: the last resort when systemd did not
// reboot in time and the watchdog could not be armed.
func Restart() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}
