// Package board says which board the agent runs on: its model (the
// device-tree model on a Raspberry Pi, e.g. "Raspberry Pi 4 Model B Rev
// 1.4"; the DMI vendor and product on a PC or VM), its serial number when
// asked, and its OS, for `status` and the User-Agent, so a server's log
// shows which boards fetch what.
//
// The device tree, /proc/cpuinfo and os-release are read with
// periph.io/x/host/v3's distro package alone: no driver is initialised,
// no device opened. DMI is read from /sys/class/dmi/id. Nothing is written.
package board

import (
	"runtime"
	"strings"
)

// Identity is what the board says it is. Empty fields are unknown.
type Identity struct {
	// Model is the device-tree model, else "<DMI vendor> <DMI product>".
	Model string `json:"model"`
	// Serial is the board's serial number (the Pi's from /proc/cpuinfo or
	// the device tree, else DMI's product serial, readable by root only);
	// only when Read is asked for it.
	Serial string `json:"serial,omitempty"`
	// OS is os-release's PRETTY_NAME ("Debian GNU/Linux 12 (bookworm)").
	OS string `json:"os"`
	// Arch is the agent's GOOS/GOARCH ("linux/arm"), with the ARM version
	// it was built for ("linux/arm/v6").
	Arch string `json:"arch"`
}

// Source is where a board's facts come from: Host for the machine the
// agent runs on, a fake in tests.
type Source interface {
	DTModel() string                      // device-tree model, "" if none
	CPUInfo() map[string]string           // /proc/cpuinfo's fields
	OSRelease() map[string]string         // os-release's fields
	ReadFile(name string) ([]byte, error) // for /sys/class/dmi/id/*
}

// Read returns the identity of the board src describes, with its serial
// number only when withSerial is true.
func Read(src Source, withSerial bool) Identity {
	id := Identity{Model: clean(src.DTModel()), OS: clean(src.OSRelease()["PRETTY_NAME"]), Arch: arch()}
	if id.Model == "" {
		vendor, product := dmi(src, "sys_vendor"), dmi(src, "product_name")
		if strings.HasPrefix(product, vendor) { // "QEMU" "QEMU Standard PC": once
			vendor = ""
		}
		id.Model = strings.TrimSpace(vendor + " " + product)
	}
	if withSerial {
		id.Serial = clean(src.CPUInfo()["Serial"])
		if id.Serial == "" {
			if b, err := src.ReadFile("/proc/device-tree/serial-number"); err == nil {
				id.Serial = clean(string(b))
			}
		}
		if id.Serial == "" {
			id.Serial = dmi(src, "product_serial")
		}
	}
	return id
}

// UserAgent is the User-Agent of every request: "ota-agent/<version>
// (<model>; <os> <arch>)", e.g. "ota-agent/v1.2.3 (Raspberry Pi 4 Model B
// Rev 1.4; linux arm64)", with "; serial <serial>" when id has one. An
// unknown model is "unknown". The comment holds no parentheses, semicolons
// or control characters of the board's own.
func UserAgent(version string, id Identity) string {
	model := comment(id.Model)
	if model == "" {
		model = "unknown"
	}
	goos, goarch, _ := strings.Cut(id.Arch, "/")
	ua := "ota-agent/" + version + " (" + model + "; " + goos + " " + strings.ReplaceAll(goarch, "/", "")
	if s := comment(id.Serial); s != "" {
		ua += "; serial " + s
	}
	return ua + ")"
}

// dmi reads /sys/class/dmi/id/<name>, cleaned; "" for a placeholder such
// as "To Be Filled By O.E.M." or "Default string".
func dmi(src Source, name string) string {
	b, err := src.ReadFile("/sys/class/dmi/id/" + name)
	if err != nil {
		return ""
	}
	v := clean(string(b))
	switch strings.ToLower(v) {
	case "to be filled by o.e.m.", "default string", "system product name", "system manufacturer", "not specified", "none":
		return ""
	}
	return v
}

// clean drops NULs (device-tree strings end with one), control characters
// and surrounding space.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// comment makes s safe inside a User-Agent comment.
func comment(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		switch {
		case r == '(' || r == ')' || r == ';' || r == '\\':
			return -1
		case r < 0x20 || r >= 0x7f: // header values are ASCII here
			return -1
		}
		return r
	}, s))
}

// arch is GOOS/GOARCH, with the ARM version for 32-bit ARM.
func arch() string {
	a := runtime.GOOS + "/" + runtime.GOARCH
	if runtime.GOARCH == "arm" {
		a += "/v" + goarm
	}
	return a
}
