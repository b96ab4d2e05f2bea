//go:build !linux

package reset

import (
	"context"
	"errors"
)

func (u *Unit) probe(context.Context) (Health, error) {
	return Health{}, u.errorf("probe", "%w", errors.ErrUnsupported)
}

func (u *Unit) resetFailed(context.Context) error {
	return u.errorf("reset-failed", "%w", errors.ErrUnsupported)
}
