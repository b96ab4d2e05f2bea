//go:build faultinject

package store

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
)

// Fault injection for the crash tests, compiled only with -tags faultinject:
// OTA_AGENT_CRASH_AT=N kills the process with SIGKILL at the Nth durable
// step, and OTA_AGENT_STEPS=FILE appends each step's name to FILE so a test
// learns how many steps an update has.
var (
	crashAt, _ = strconv.Atoi(os.Getenv("OTA_AGENT_CRASH_AT"))
	stepLog    = os.Getenv("OTA_AGENT_STEPS")
	steps      atomic.Int64
)

func crashPoint(what string) {
	n := steps.Add(1)
	if stepLog != "" {
		if f, err := os.OpenFile(stepLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintf(f, "%d %s\n", n, what)
			f.Close()
		}
	}
	if crashAt > 0 && n == int64(crashAt) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
