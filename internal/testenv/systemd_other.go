//go:build !linux

package testenv

import (
	"errors"
	"testing"
)

// systemd runs only on Linux; StartUserManager skips before calling these.

func (m *UserManager) start(testing.TB, []string) error { return errors.ErrUnsupported }

func removeCgroup(string) error { return nil }
