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

// parseInterval reads a check interval that agent.CheckInterval accepts.
func parseInterval(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, err
	}
	return d, agent.CheckInterval(d)
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
