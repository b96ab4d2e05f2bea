package main

import (
	"context"
	"fmt"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/rs/zerolog"
)

// resetterFor returns how the app is restarted around a switch: nil for
// "none" and "hard" (a hard reset happens once, after every app switched).
func resetterFor(app agent.App, log zerolog.Logger) agent.Resetter {
	return nil
}

// hardReset restarts the board once for the apps that asked for it.
func hardReset(ctx context.Context, apps []agent.App, names []string, log zerolog.Logger) error {
	return fmt.Errorf("hard reset of %v: not supported yet", names)
}
