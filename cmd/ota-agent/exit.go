package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
)

// Exit codes, as the README documents them.
const (
	ExitOK          = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitTempFail    = 75  // the server could not be reached; nothing changed
	ExitUpdateAvail = 100 // `check` found an update
)

// errUpdateAvailable is returned by check when any app has an update.
var errUpdateAvailable = errors.New("update available")

// exitCodeError carries an exit code already decided (several apps: the most
// serious of theirs).
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// severity orders exit codes: 2 > 1 > 75 > 100 > 0.
func severity(code int) int {
	switch code {
	case ExitUsage:
		return 4
	case ExitFailed:
		return 3
	case ExitTempFail:
		return 2
	case ExitUpdateAvail:
		return 1
	}
	return 0
}

// worst returns the most serious of two exit codes.
func worst(a, b int) int {
	if severity(b) > severity(a) {
		return b
	}
	return a
}

// codeOf maps an error to its exit code.
func codeOf(err error) int {
	var ce *agent.ConfigError
	var ec exitCodeError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ec):
		return ec.code
	case errors.Is(err, errHelp) || errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ce), errors.Is(err, errUsage), errors.Is(err, reset.ErrUnitNotFound):
		// A unit that does not exist is a mistake in the configuration.
		return ExitUsage
	case errors.Is(err, errUpdateAvailable):
		return ExitUpdateAvail
	case errors.Is(err, agent.ErrUnreachable), errors.Is(err, errBootDeadline):
		return ExitTempFail
	}
	return ExitFailed
}

// errUsage marks a command-line mistake.
var errUsage = errors.New("usage error")

// globals is what every subcommand shares: where to print, and the
// machine a hard reset acts on (nil: this host; tests pass a fake).
type globals struct {
	stdout, stderr io.Writer
	machine        reset.Machine
}

// exitCode reports err (once) and returns its exit code.
func (g *globals) exitCode(err error) int {
	err = explain(err)
	code := codeOf(err)
	var ec exitCodeError
	if err != nil && code != ExitOK && code != ExitUpdateAvail && !errors.As(err, &ec) {
		fmt.Fprintf(g.stderr, "ota-agent: %v\n", err)
	}
	return code
}

func (g *globals) printf(format string, a ...any) { fmt.Fprintf(g.stdout, format, a...) }
