package reset

// Method is how a hard reset restarts the board.
type Method string

// The hard-reset methods. The zero value means MethodReboot.
const (
	MethodReboot   Method = "reboot"   // systemd's reboot.target, every unit stopped in order (Reboot)
	MethodWatchdog Method = "watchdog" // the hardware watchdog left to expire (Watchdog.Fire)
)
