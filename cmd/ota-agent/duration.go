package main

import (
	"fmt"
	"time"

	"github.com/ota-agent/ota-agent/agent"
)

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like \"5s\" or \"15m\"", s)
	}
	return d, nil
}

// parseInterval reads a check interval: agent.MinInterval at least. A
// smaller one is an error, never silently raised.
func parseInterval(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, err
	}
	return d, checkInterval(d)
}

// checkInterval refuses a check interval below agent.MinInterval.
func checkInterval(d time.Duration) error {
	if d < agent.MinInterval {
		return fmt.Errorf("%v is below the minimum of %v", d, agent.MinInterval)
	}
	return nil
}

func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return d, nil
}
