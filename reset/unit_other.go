//go:build !linux

package reset

import (
	"context"
	"errors"
	"fmt"
)

// systemd runs only on Linux.

func (u *Unit) check(context.Context) error {
	return u.errorf("check", "%w", errors.ErrUnsupported)
}

func (u *Unit) stop(context.Context) (bool, error) {
	return false, u.errorf("stop", "%w", errors.ErrUnsupported)
}

func (u *Unit) start(context.Context) error {
	return u.errorf("start", "%w", errors.ErrUnsupported)
}

func reboot(_ context.Context, bus Bus) error {
	return fmt.Errorf("reboot (%s bus): %w", bus, errors.ErrUnsupported)
}
