//go:build !unix

package testenv

import "errors"

// Rootfs is skipped before it locks anything off Linux.
func lockFile(string) (func(), error) { return nil, errors.ErrUnsupported }
