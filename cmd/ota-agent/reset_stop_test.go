package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
)

// Once the reboot is queued, the SIGTERM of the shutdown ends the hard reset
// at once: no wait for reboot_grace, no fallback in the middle of the clean
// shutdown.
func TestHardResetReturnsWhenStopped(t *testing.T) {
	m := fakeMachine(t, nil, make(chan time.Time)) // grace never runs out
	ctx, stop := context.WithCancel(context.Background())
	rebootViaSystemd = func(ctx context.Context, bus reset.Bus) error {
		if ctx.Err() != nil {
			t.Errorf("reboot asked for with a cancelled context: %v", ctx.Err())
		}
		m.calls = append(m.calls, "reboot.target")
		stop() // systemd stops the agent on its way down
		return nil
	}
	apps := []agent.App{{Name: "one", Reset: agent.ResetHard}}
	done := make(chan error, 1)
	go func() { done <- hardReset(ctx, apps, []string{"one"}, time.Hour, zerolog.Nop()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("hardReset = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hardReset still waiting after the SIGTERM of the shutdown")
	}
	if got := strings.Join(m.calls, ","); got != "reboot.target" {
		t.Errorf("hard reset steps = %s, want reboot.target only", got)
	}
}
