package board

import (
	"os"

	"periph.io/x/host/v3/distro"
)

// Host is the machine the agent runs on, read through periph's distro
// package (no driver initialisation) and sysfs.
type Host struct{}

var _ Source = Host{}

func (Host) CPUInfo() map[string]string           { return distro.CPUInfo() }
func (Host) OSRelease() map[string]string         { return distro.OSRelease() }
func (Host) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// DTModel is the device tree's model; "" where there is none (distro says
// "<unknown>").
func (Host) DTModel() string {
	if m := distro.DTModel(); m != "<unknown>" {
		return m
	}
	return ""
}
