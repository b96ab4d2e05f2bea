package agent

import (
	"errors"
	"fmt"
)

// ErrUnreachable marks a failure to reach the server (DNS, connect, TLS,
// timeout, 5xx) after which nothing changed on the device: the boot unit
// tolerates it (exit 75, EX_TEMPFAIL) and the next run retries.
var ErrUnreachable = errors.New("server unreachable")

// ConfigError is a usage or configuration mistake (exit 2): a bad key or
// value, half credentials, Basic auth over plain http, an unsafe path.
// Nothing is fetched or written once one is found.
type ConfigError struct {
	App  string // the app's name, if known
	Key  string // the config key or flag, if one is to blame
	Line int    // line in the config file, if known
	Msg  string
}

func (e *ConfigError) Error() string {
	s := ""
	if e.App != "" {
		s = "app " + e.App + ": "
	}
	if e.Key != "" {
		s += e.Key
		if e.Line > 0 {
			s += fmt.Sprintf(" (line %d)", e.Line)
		}
		s += ": "
	} else if e.Line > 0 {
		s += fmt.Sprintf("line %d: ", e.Line)
	}
	return s + e.Msg
}
