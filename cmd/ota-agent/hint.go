package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
)

// hintError is an error with what fixes it, in the configuration's words.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + ": " + e.hint }
func (e *hintError) Unwrap() error { return e.err }

// explain adds to err what fixes it, for the errors a user meets with a
// config that does not fit the board: a CA the board does not know, no
// D-Bus, no session bus, a unit that does not exist. Other errors are
// returned as they are.
func explain(err error) error {
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var hint string
	switch {
	case err == nil:
		return nil
	case errors.As(err, new(*hintError)):
		return err
	case errors.As(err, &unknownCA) || errors.As(err, &verify) && errors.As(verify.Err, &unknownCA):
		hint = "the server's certificate is signed by a CA this board does not trust; set ca_file (--ca-file) to that CA's PEM certificate"
	case errors.As(err, &verify):
		hint = "the server's certificate does not verify; check the host name in host and the server's certificate chain (ca_file adds a CA)"
	case errors.Is(err, reset.ErrNoBus) && isUserBus(err):
		hint = `systemd_bus = "user" needs the user's systemd manager: run the agent as that user, with XDG_RUNTIME_DIR=/run/user/<uid> (loginctl enable-linger <user> keeps the manager running), or use systemd_bus = "system"`
	case errors.Is(err, reset.ErrNoBus):
		hint = `reset = "soft" and unit need systemd running as PID 1 with its D-Bus (apt install dbus); on a board without it, set reset = "none" and no unit: files are switched, nothing is restarted`
	case errors.Is(err, reset.ErrUnitNotFound):
		hint = "check unit (systemctl list-unit-files), or install the app's unit before the agent runs"
	default:
		return err
	}
	return &hintError{err, hint}
}

// isUserBus reports whether err came from the user bus (reset.Unit names
// the bus in its errors).
func isUserBus(err error) bool {
	return strings.Contains(err.Error(), "(user bus)") || strings.Contains(err.Error(), "no session bus")
}

// verifyUnits checks that each app's unit exists and its bus answers, as
// check and run do at start, so a wrong unit is found before release day.
// It returns one error per app that fails, a *agent.ConfigError on the key
// unit (exit 2) with the fix.
func verifyUnits(ctx context.Context, apps []agent.App, log zerolog.Logger) map[string]error {
	bad := map[string]error{}
	for _, app := range apps {
		if app.Unit == "" {
			continue
		}
		u := &reset.Unit{Name: app.Unit, Bus: app.SystemdBus, Log: log.With().Str("app", app.Name).Logger()}
		if err := u.Check(ctx); err != nil {
			bad[app.Name] = &agent.ConfigError{App: app.Name, Key: "unit", Msg: fmt.Sprint(explain(err))}
		}
	}
	return bad
}
