//go:build linux

package reset

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// pollInterval is how often Start re-reads a unit that is still activating.
const pollInterval = 50 * time.Millisecond

// connect opens a connection to the manager on bus. The caller closes it.
// Every failure wraps ErrNoBus. Without a session bus address the user bus
// is not tried: godbus would try to start one with dbus-launch, which is
// no user manager either.
func connect(ctx context.Context, bus Bus) (*sddbus.Conn, error) {
	var conn *sddbus.Conn
	var err error
	if bus == BusUser {
		if os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
			sock := filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "bus")
			if _, serr := os.Stat(sock); os.Getenv("XDG_RUNTIME_DIR") == "" || serr != nil {
				return nil, fmt.Errorf("%w: no session bus (DBUS_SESSION_BUS_ADDRESS is not set and there is no %s)", ErrNoBus, sock)
			}
		}
		conn, err = sddbus.NewUserConnectionContext(ctx)
	} else {
		conn, err = sddbus.NewSystemConnectionContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoBus, err)
	}
	return conn, nil
}

// unitState is what the methods read from the Unit interface.
type unitState struct {
	load, active, sub string
	invocation        string // hex; "" when the unit has no current invocation
}

// state reads the unit's properties. Reading them makes systemd load the
// unit, so a missing unit yields LoadState "not-found", not a D-Bus error.
func (u *Unit) state(ctx context.Context, conn *sddbus.Conn) (unitState, error) {
	props, err := conn.GetUnitPropertiesContext(ctx, u.Name)
	if err != nil {
		return unitState{}, err
	}
	st := unitState{}
	st.load, _ = props["LoadState"].(string)
	st.active, _ = props["ActiveState"].(string)
	st.sub, _ = props["SubState"].(string)
	if id, ok := props["InvocationID"].([]byte); ok && len(id) > 0 {
		st.invocation = hex.EncodeToString(id)
	}
	return st, nil
}

// loaded turns a LoadState other than "loaded" into an error.
func (st unitState) loaded() error {
	switch st.load {
	case "loaded":
		return nil
	case "not-found":
		return ErrUnitNotFound
	}
	return fmt.Errorf("unit is not loaded (LoadState %q)", st.load)
}

// result is the unit's own result ("exit-code", "timeout", ...) for the
// unit types that have one, for error messages; "" when unknown.
func (u *Unit) result(ctx context.Context, conn *sddbus.Conn) string {
	name := u.Name
	i := strings.LastIndexByte(name, '.')
	typ := name[i+1:]
	switch typ {
	case "service", "socket", "mount", "swap", "timer", "path", "automount":
	default:
		return ""
	}
	// Upper-case the type for the D-Bus interface: org.freedesktop.systemd1.Service.
	p, err := conn.GetUnitTypePropertyContext(ctx, name, strings.ToUpper(typ[:1])+typ[1:], "Result")
	if err != nil {
		return ""
	}
	s, _ := p.Value.Value().(string)
	return s
}

// waitJob waits for the result of a job enqueued with ch. The channel must be
// buffered: go-systemd blocks its signal dispatcher on the send otherwise,
// and nobody reads it after ctx is done.
func waitJob(ctx context.Context, ch <-chan string) error {
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("job result %q", res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the job: %w", ctx.Err())
	}
}

func (u *Unit) check(ctx context.Context) error {
	conn, err := connect(ctx, u.Bus)
	if err != nil {
		return u.errorf("check", "connect: %w", err)
	}
	defer conn.Close()
	st, err := u.state(ctx, conn)
	if err != nil {
		return u.errorf("check", "%w", err)
	}
	if err := st.loaded(); err != nil {
		return u.errorf("check", "%w", err)
	}
	return nil
}

func (u *Unit) stop(ctx context.Context) (bool, error) {
	conn, err := connect(ctx, u.Bus)
	if err != nil {
		return false, u.errorf("stop", "connect: %w", err)
	}
	defer conn.Close()
	st, err := u.state(ctx, conn)
	if err != nil {
		return false, u.errorf("stop", "%w", err)
	}
	// A unit we cannot see is an error, not "not running": the app might be
	// running under another name while its files are switched.
	if err := st.loaded(); err != nil {
		return false, u.errorf("stop", "%w", err)
	}
	var wasActive bool
	switch st.active {
	case "active", "activating", "reloading":
		wasActive = true
	case "deactivating":
		// Someone else is stopping it: wait for that, but do not restart it.
	default: // inactive, failed, maintenance
		u.Log.Debug().Str("unit", u.Name).Str("state", st.active).Msg("unit not running; not stopping it")
		return false, nil
	}
	ch := make(chan string, 1)
	if _, err := conn.StopUnitContext(ctx, u.Name, "replace", ch); err != nil {
		return wasActive, u.errorf("stop", "%w", err)
	}
	if err := waitJob(ctx, ch); err != nil {
		if r := u.result(ctx, conn); r != "" {
			return wasActive, u.errorf("stop", "%w (unit result %q)", err, r)
		}
		return wasActive, u.errorf("stop", "%w", err)
	}
	u.Log.Debug().Str("unit", u.Name).Str("invocation", st.invocation).Bool("was_active", wasActive).Msg("unit stopped")
	return wasActive, nil
}

func (u *Unit) start(ctx context.Context) error {
	conn, err := connect(ctx, u.Bus)
	if err != nil {
		return u.errorf("start", "connect: %w", err)
	}
	defer conn.Close()
	before, err := u.state(ctx, conn)
	if err != nil {
		return u.errorf("start", "%w", err)
	}
	if err := before.loaded(); err != nil {
		return u.errorf("start", "%w", err)
	}
	ch := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, u.Name, "replace", ch); err != nil {
		return u.errorf("start", "%w", err)
	}
	if err := waitJob(ctx, ch); err != nil {
		if r := u.result(ctx, conn); r != "" {
			return u.errorf("start", "%w (unit result %q)", err, r)
		}
		return u.errorf("start", "%w", err)
	}

	wctx, cancel := context.WithTimeout(ctx, activeWait)
	defer cancel()
	for {
		st, err := u.state(wctx, conn)
		if err != nil {
			return u.errorf("start", "%w", err)
		}
		switch st.active {
		case "active":
			if st.invocation == "" {
				return u.errorf("start", "active unit has no InvocationID (systemd older than 232?)")
			}
			if st.invocation == before.invocation {
				return u.errorf("start", "unit was already running (invocation %s) and was not restarted", before.invocation)
			}
			u.Log.Debug().Str("unit", u.Name).Str("invocation", st.invocation).Msg("unit started")
			return nil
		case "activating", "reloading":
		default:
			if r := u.result(ctx, conn); r != "" {
				return u.errorf("start", "unit is %s/%s after its start job (unit result %q)", st.active, st.sub, r)
			}
			return u.errorf("start", "unit is %s/%s after its start job", st.active, st.sub)
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-t.C:
		case <-wctx.Done():
			t.Stop()
			return u.errorf("start", "still %s/%s: %w", st.active, st.sub, wctx.Err())
		}
	}
}

func reboot(ctx context.Context, bus Bus) error {
	conn, err := connect(ctx, bus)
	if err != nil {
		return fmt.Errorf("reboot (%s bus): connect: %w", bus, err)
	}
	defer conn.Close()
	// No result channel: the job finishes only as the system goes down, after
	// this process has been stopped.
	if _, err := conn.StartUnitContext(ctx, "reboot.target", "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("reboot (%s bus): start reboot.target: %w", bus, err)
	}
	return nil
}
