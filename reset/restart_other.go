//go:build !linux

package reset

import "errors"

// Restart is Linux's reboot(2); elsewhere it is unsupported.
func Restart() error { return errors.ErrUnsupported }
