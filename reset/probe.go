package reset

import (
	"context"
	"fmt"
)

// Health is what systemd says of a unit's current run, for judging a
// release on trial: one run is one InvocationID; a restart by systemd
// (Restart=) bumps NRestarts; a failure sets Result.
type Health struct {
	ActiveState, SubState string
	InvocationID          string // hex; "" when the unit has no current run
	NRestarts             uint32 // services only
	Result                string // "success", "exit-code", "signal", "core-dump", "watchdog", ...
	ExecMainCode          int32  // CLD_EXITED (1), CLD_KILLED (2), CLD_DUMPED (3)
	ExecMainStatus        int32  // exit status or signal number
}

// Exited says how the main process last ended, for a message: "exited with
// status 3", "was killed by signal 9", or "" when unknown.
func (h Health) Exited() string {
	switch h.ExecMainCode {
	case 1:
		return fmt.Sprintf("exited with status %d", h.ExecMainStatus)
	case 2, 3:
		return fmt.Sprintf("was killed by signal %d", h.ExecMainStatus)
	}
	return ""
}

// Probe reads the unit's Health.
func (u *Unit) Probe(ctx context.Context) (Health, error) {
	if err := u.validate(); err != nil {
		return Health{}, err
	}
	return u.probe(ctx)
}

// ResetFailed clears a failed state (and the start rate limit) left by a
// bad release, so the unit can be started again on the release before it.
func (u *Unit) ResetFailed(ctx context.Context) error {
	if err := u.validate(); err != nil {
		return err
	}
	return u.resetFailed(ctx)
}
