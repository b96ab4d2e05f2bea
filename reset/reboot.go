package reset

import "context"

// Reboot asks the manager on bus to reboot, as `systemctl reboot` does: it
// starts reboot.target with mode "replace-irreversibly", so no later job can
// cancel the reboot, and every unit is stopped in order. (Manager.Reboot is
// not used: systemd documents it as skipping the usual shutdown logic.)
//
// It returns nil as soon as systemd has queued the job; it does not wait for
// the reboot. The caller should then stop working and wait to be stopped by
// the shutdown (its context is usually cancelled by SIGTERM). It returns an
// error, and nothing happens, when the bus is unknown or unreachable, or the
// manager refuses the job (a user manager has no reboot.target by default).
func Reboot(ctx context.Context, bus Bus) error {
	if err := bus.validate(); err != nil {
		return err
	}
	return reboot(ctx, bus)
}
