//go:build faultinject

package agent

import "os"

// wedgePoint hangs the daemon's check forever when OTA_AGENT_WEDGE=1, so a
// test can see systemd kill a daemon that stopped making progress.
func wedgePoint() {
	if os.Getenv("OTA_AGENT_WEDGE") == "1" {
		select {}
	}
}
