//go:build !linux

package reset

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// watchdogHost is empty: there is no watchdog to open.
type watchdogHost struct{}

// The watchdog ioctls are Linux's.
func (w *Watchdog) fire(context.Context) (time.Duration, error) {
	return 0, fmt.Errorf("watchdog %s: %w", w.device(), errors.ErrUnsupported)
}
