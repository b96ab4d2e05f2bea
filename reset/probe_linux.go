//go:build linux

package reset

import (
	"context"
	"strings"
)

func (u *Unit) probe(ctx context.Context) (Health, error) {
	conn, err := connect(ctx, u.Bus)
	if err != nil {
		return Health{}, u.errorf("probe", "connect: %w", err)
	}
	defer conn.Close()
	st, err := u.state(ctx, conn)
	if err != nil {
		return Health{}, u.errorf("probe", "%w", err)
	}
	if err := st.loaded(); err != nil {
		return Health{}, u.errorf("probe", "%w", err)
	}
	h := Health{ActiveState: st.active, SubState: st.sub, InvocationID: st.invocation}
	if strings.HasSuffix(u.Name, ".service") {
		props, err := conn.GetUnitTypePropertiesContext(ctx, u.Name, "Service")
		if err != nil {
			return Health{}, u.errorf("probe", "%w", err)
		}
		h.NRestarts, _ = props["NRestarts"].(uint32)
		h.Result, _ = props["Result"].(string)
		h.ExecMainCode, _ = props["ExecMainCode"].(int32)
		h.ExecMainStatus, _ = props["ExecMainStatus"].(int32)
	} else {
		h.Result = u.result(ctx, conn)
	}
	return h, nil
}

func (u *Unit) resetFailed(ctx context.Context) error {
	conn, err := connect(ctx, u.Bus)
	if err != nil {
		return u.errorf("reset-failed", "connect: %w", err)
	}
	defer conn.Close()
	if err := conn.ResetFailedUnitContext(ctx, u.Name); err != nil && !strings.Contains(err.Error(), "not failed") {
		return u.errorf("reset-failed", "%w", err)
	}
	return nil
}
