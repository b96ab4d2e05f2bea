package board

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// fakeBoard is a Source with fixed facts; files maps a path to its bytes.
type fakeBoard struct {
	model   string
	cpuinfo map[string]string
	release map[string]string
	files   map[string]string
}

func (f fakeBoard) DTModel() string              { return f.model }
func (f fakeBoard) CPUInfo() map[string]string   { return f.cpuinfo }
func (f fakeBoard) OSRelease() map[string]string { return f.release }
func (f fakeBoard) ReadFile(name string) ([]byte, error) {
	if b, ok := f.files[name]; ok {
		return []byte(b), nil
	}
	return nil, os.ErrNotExist
}

var bookworm = map[string]string{"PRETTY_NAME": "Raspbian GNU/Linux 12 (bookworm)"}

func TestRead(t *testing.T) {
	pi4 := fakeBoard{
		model:   "Raspberry Pi 4 Model B Rev 1.4\x00",
		cpuinfo: map[string]string{"Serial": "10000000abcdef01", "Model": "Raspberry Pi 4 Model B Rev 1.4"},
		release: bookworm,
	}
	for _, tc := range []struct {
		name       string
		src        fakeBoard
		withSerial bool
		want       Identity
	}{
		{"pi without serial", pi4, false, Identity{Model: "Raspberry Pi 4 Model B Rev 1.4", OS: bookworm["PRETTY_NAME"]}},
		{"pi with serial", pi4, true, Identity{Model: "Raspberry Pi 4 Model B Rev 1.4", Serial: "10000000abcdef01", OS: bookworm["PRETTY_NAME"]}},
		{"pi 5 serial from the device tree", fakeBoard{model: "Raspberry Pi 5 Model B Rev 1.0\x00",
			files: map[string]string{"/proc/device-tree/serial-number": "c0ffee1234\x00"}},
			true, Identity{Model: "Raspberry Pi 5 Model B Rev 1.0", Serial: "c0ffee1234"}},
		{"pc from DMI", fakeBoard{files: map[string]string{
			"/sys/class/dmi/id/sys_vendor": "LENOVO\n", "/sys/class/dmi/id/product_name": "ThinkCentre M720q\n",
			"/sys/class/dmi/id/product_serial": "PC0XYZ\n"}},
			true, Identity{Model: "LENOVO ThinkCentre M720q", Serial: "PC0XYZ"}},
		{"vm whose product repeats the vendor", fakeBoard{files: map[string]string{
			"/sys/class/dmi/id/sys_vendor": "QEMU\n", "/sys/class/dmi/id/product_name": "QEMU Standard PC (i440FX + PIIX, 1996)\n"}},
			false, Identity{Model: "QEMU Standard PC (i440FX + PIIX, 1996)"}},
		{"placeholders are unknown", fakeBoard{files: map[string]string{
			"/sys/class/dmi/id/sys_vendor": "To Be Filled By O.E.M.\n", "/sys/class/dmi/id/product_name": "Default string\n"}},
			true, Identity{}},
		{"nothing known", fakeBoard{}, true, Identity{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Read(tc.src, tc.withSerial)
			tc.want.Arch = arch()
			if got != tc.want {
				t.Errorf("Read(%s, %v) = %+v, want %+v", tc.name, tc.withSerial, got, tc.want)
			}
		})
	}
}

func TestUserAgent(t *testing.T) {
	for _, tc := range []struct {
		id   Identity
		want string
	}{
		{Identity{Model: "Raspberry Pi 4 Model B Rev 1.4", Arch: "linux/arm64"},
			"ota-agent/v1.2.3 (Raspberry Pi 4 Model B Rev 1.4; linux arm64)"},
		{Identity{Model: "Raspberry Pi Zero W Rev 1.1", Arch: "linux/arm/v6", Serial: "00000000abcd"},
			"ota-agent/v1.2.3 (Raspberry Pi Zero W Rev 1.1; linux armv6; serial 00000000abcd)"},
		{Identity{Model: "QEMU Standard PC (i440FX + PIIX, 1996)", Arch: "linux/amd64"},
			"ota-agent/v1.2.3 (QEMU Standard PC i440FX + PIIX, 1996; linux amd64)"},
		{Identity{Model: "Evil\r\nX-Injected: 1; (x)", Arch: "linux/amd64"},
			"ota-agent/v1.2.3 (EvilX-Injected: 1 x; linux amd64)"},
		{Identity{Arch: "linux/riscv64"}, "ota-agent/v1.2.3 (unknown; linux riscv64)"},
	} {
		if got := UserAgent("v1.2.3", tc.id); got != tc.want {
			t.Errorf("UserAgent(%+v) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

// TestReadHost reads this machine, as the agent does: the device-tree
// model where there is one, else DMI's, as sysfs shows them.
func TestReadHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc and /sys")
	}
	id := Read(Host{}, true)
	t.Logf("this machine: %+v; User-Agent %s", id, UserAgent("dev", id))
	if b, err := os.ReadFile("/proc/device-tree/model"); err == nil {
		if want := strings.TrimRight(string(b), "\x00\n"); id.Model != want {
			t.Errorf("Model = %q, want the device tree's %q", id.Model, want)
		}
	} else if b, err := os.ReadFile("/sys/class/dmi/id/product_name"); err == nil {
		if want := strings.TrimSpace(string(b)); !strings.Contains(id.Model, want) {
			t.Errorf("Model = %q, want DMI's product %q in it", id.Model, want)
		}
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil && strings.Contains(string(b), "PRETTY_NAME=") && id.OS == "" {
		t.Errorf("OS is empty, but /etc/os-release has a PRETTY_NAME")
	}
	if id.Arch != runtime.GOOS+"/"+runtime.GOARCH && runtime.GOARCH != "arm" {
		t.Errorf("Arch = %q, want %s/%s", id.Arch, runtime.GOOS, runtime.GOARCH)
	}
}
