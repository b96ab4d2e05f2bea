package packaging_test

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// The version and time the packages are built with: fixed, so the test
// knows what the control file and every mtime must say.
const (
	debTestVersion = "v1.2.3"
	debTestEpoch   = "1764000000" // 2025-11-24T16:00:00Z

	debMaxARMv6Size = 8_000_000 // 8 MB, the goal of issue 14
)

// debArch is what each package must be: its Debian architecture, the ELF
// machine and class of its binary, and the GOARM it was built for.
var debArches = []struct {
	arch    string
	machine elf.Machine
	class   elf.Class
	goarm   string
}{
	{"amd64", elf.EM_X86_64, elf.ELFCLASS64, ""},
	{"arm64", elf.EM_AARCH64, elf.ELFCLASS64, ""},
	{"armhf", elf.EM_ARM, elf.ELFCLASS32, "6"}, // every Raspberry Pi, Zero and 1 included
	{"armel", elf.EM_ARM, elf.ELFCLASS32, "5"},
}

// TestDebPackages builds the four packages with packaging/deb/build (what
// `make deb` runs) from a snapshot of the source, and again from a copy of
// that snapshot at another path, and checks them with dpkg-deb: control
// fields, conffiles, maintainer scripts, files with their modes and times,
// each binary's ELF header and build settings, and that both builds are
// byte-identical. About a minute with a warm build cache.
func TestDebPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four packages twice in -short mode")
	}
	dpkgDeb, err := exec.LookPath("dpkg-deb")
	testenv.Require(t, "dpkg-deb (dpkg)", err == nil)

	var arches []string
	for _, a := range debArches {
		arches = append(arches, a.arch)
	}
	src := testenv.SourceTree(t)
	start := time.Now()
	first := testenv.BuildDebs(t, src, debTestVersion, debTestEpoch, arches...)
	t.Logf("built %d packages in %v", len(arches), time.Since(start).Round(time.Millisecond))
	for _, a := range arches {
		for _, f := range []string{first.Packages[a], first.Binaries[a]} {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d bytes (%.2f MiB)", filepath.Base(f), fi.Size(), float64(fi.Size())/(1<<20))
		}
	}

	for _, want := range debArches {
		t.Run(want.arch, func(t *testing.T) {
			deb := first.Packages[want.arch]
			if got, wantName := filepath.Base(deb), "ota-agent_1.2.3_"+want.arch+".deb"; got != wantName {
				t.Errorf("package file %s, want %s", got, wantName)
			}
			checkDebInfo(t, dpkgDeb, deb, want.arch)
			checkDebControlFiles(t, dpkgDeb, deb, src)
			bin := checkDebContents(t, dpkgDeb, deb, src)
			checkELF(t, bin, want.machine, want.class, want.goarm)
			if b, err := os.ReadFile(first.Binaries[want.arch]); err != nil || !bytes.Equal(b, bin) {
				t.Errorf("/usr/bin/ota-agent in the package is not %s (%v)", first.Binaries[want.arch], err)
			}
			// The goal of issue 14: the binary for every Pi under 8 MB.
			if want.arch == "armhf" && len(bin) >= debMaxARMv6Size {
				t.Errorf("the armv6 binary is %d bytes, want under %d", len(bin), debMaxARMv6Size)
			}
			if want.arch == runtime.GOARCH {
				checkHTTPS(t, first.Binaries[want.arch])
			}
		})
	}

	// The same commit built again, elsewhere: the same bytes.
	again := filepath.Join(t.TempDir(), "elsewhere")
	testenv.CopyTree(t, src, again)
	second := testenv.BuildDebs(t, again, debTestVersion, debTestEpoch, arches...)
	for _, a := range arches {
		for _, pair := range [][2]string{{first.Packages[a], second.Packages[a]}, {first.Binaries[a], second.Binaries[a]}} {
			x, err := os.ReadFile(pair[0])
			if err != nil {
				t.Fatal(err)
			}
			y, err := os.ReadFile(pair[1])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(x, y) {
				t.Errorf("two builds of one source differ: %s and %s", pair[0], pair[1])
			}
		}
	}
}

// checkDebInfo checks `dpkg-deb --info`: the control fields and the list
// of control members.
func checkDebInfo(t *testing.T, dpkgDeb, deb, arch string) {
	t.Helper()
	for field, want := range map[string]string{
		"Package":      "ota-agent",
		"Version":      "1.2.3",
		"Architecture": arch,
		"Section":      "admin",
		"Priority":     "optional",
	} {
		out, err := exec.Command(dpkgDeb, "--field", deb, field).Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("dpkg-deb --field %s %s = %q (%v), want %q", filepath.Base(deb), field, got, err, want)
		}
	}
	out, err := exec.Command(dpkgDeb, "--info", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --info %s: %v", deb, err)
	}
	for _, member := range []string{"control", "conffiles", "postinst", "prerm", "postrm", "md5sums"} {
		if !regexpMember(string(out), member) {
			t.Errorf("dpkg-deb --info %s: no %s member:\n%s", filepath.Base(deb), member, out)
		}
	}
}

// regexpMember reports whether dpkg-deb --info's member list (" <size>
// bytes, <n> lines [*] <name> ...") names member.
func regexpMember(info, member string) bool {
	for _, line := range strings.Split(info, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[1] == "bytes," && slices.Contains(f[3:], member) {
			return true
		}
	}
	return false
}

// checkDebControlFiles checks the control members themselves: conffiles,
// and the maintainer scripts byte for byte as packaging/deb has them, and
// executable. src is the source tree the package was built from.
func checkDebControlFiles(t *testing.T, dpkgDeb, deb, src string) {
	t.Helper()
	members := tarMembers(t, exec.Command(dpkgDeb, "--ctrl-tarfile", deb))
	if got, want := string(members["./conffiles"].body), "/etc/ota-agent/config.toml\n"; got != want {
		t.Errorf("conffiles = %q, want %q", got, want)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		m, ok := members["./"+s]
		if !ok {
			t.Errorf("no %s in the control archive", s)
			continue
		}
		want, err := os.ReadFile(filepath.Join(src, "packaging/deb", s))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.body, want) {
			t.Errorf("%s in the package differs from packaging/deb/%s", s, s)
		}
		if m.hdr.Mode&0o777 != 0o755 {
			t.Errorf("%s: mode %#o, want 0755", s, m.hdr.Mode&0o777)
		}
	}
}

// checkDebContents checks `dpkg-deb --contents` (as a tar stream): every
// file with its mode, owner and time, and nothing else but directories.
// It returns the packaged binary. src is the source tree the package was
// built from.
func checkDebContents(t *testing.T, dpkgDeb, deb, src string) []byte {
	t.Helper()
	out, err := exec.Command(dpkgDeb, "--contents", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --contents %s: %v", deb, err)
	}
	if !strings.Contains(string(out), "-rw-r----- root/root") || !strings.Contains(string(out), "./etc/ota-agent/config.toml") {
		t.Errorf("dpkg-deb --contents %s: no 0640 config.toml:\n%s", filepath.Base(deb), out)
	}
	want := map[string]struct {
		mode int64
		src  string // the file it must equal, "" for the binary
	}{
		"./usr/bin/ota-agent":                                                   {0o755, ""},
		"./usr/lib/systemd/system/ota-agent.service":                            {0o644, "ota-agent.service"},
		"./usr/lib/systemd/system/ota-agent-boot.service":                       {0o644, "ota-agent-boot.service"},
		"./usr/lib/systemd/system/ota-agent-recover.service":                    {0o644, "ota-agent-recover.service"},
		"./etc/ota-agent/config.toml":                                           {0o640, "config.toml"},
		"./usr/share/man/man8/ota-agent.8":                                      {0o644, "../docs/ota-agent.8"},
		"./usr/share/bash-completion/completions/ota-agent":                     {0o644, "../docs/completions/ota-agent.bash"},
		"./usr/share/zsh/vendor-completions/_ota-agent":                         {0o644, "../docs/completions/_ota-agent"},
		"./usr/share/doc/ota-agent/examples/sample.service":                     {0o644, "example/sample.service"},
		"./usr/share/doc/ota-agent/examples/sample.service.d/ota-agent.conf":    {0o644, "example/sample.service.d/ota-agent.conf"},
		"./usr/share/doc/ota-agent/examples/ota-agent.service.d/hardening.conf": {0o644, "example/ota-agent.service.d/hardening.conf"},
	}
	members := tarMembers(t, exec.Command(dpkgDeb, "--fsys-tarfile", deb))
	epoch := mustEpoch(t)
	for name, m := range members {
		if !m.hdr.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want SOURCE_DATE_EPOCH %v", name, m.hdr.ModTime.UTC(), epoch)
		}
		if m.hdr.Uname != "root" || m.hdr.Gname != "root" || m.hdr.Uid != 0 || m.hdr.Gid != 0 {
			t.Errorf("%s: owner %s:%s (%d:%d), want root:root", name, m.hdr.Uname, m.hdr.Gname, m.hdr.Uid, m.hdr.Gid)
		}
		if m.hdr.Typeflag == tar.TypeDir {
			continue
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected file in the package: %s", name)
			continue
		}
		if m.hdr.Mode&0o7777 != w.mode {
			t.Errorf("%s: mode %#o, want %#o", name, m.hdr.Mode&0o7777, w.mode)
		}
		if w.src != "" {
			b, err := os.ReadFile(filepath.Join(src, "packaging", w.src))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.body, b) {
				t.Errorf("%s differs from packaging/%s", name, w.src)
			}
		}
	}
	for name := range want {
		if _, ok := members[name]; !ok {
			t.Errorf("%s is missing from the package", name)
		}
	}
	return members["./usr/bin/ota-agent"].body
}

// checkELF checks a binary's ELF header against its architecture, and
// that it is static (no interpreter, no dynamic section), stripped (no
// symbol table, no DWARF) and built as a release (CGO_ENABLED=0,
// -trimpath, no build ID, GOARM).
func checkELF(t *testing.T, bin []byte, machine elf.Machine, class elf.Class, goarm string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("ELF: %v", err)
	}
	defer f.Close()
	if f.Machine != machine || f.Class != class || f.Data != elf.ELFDATA2LSB || f.Type != elf.ET_EXEC {
		t.Errorf("ELF header: %v %v %v %v, want %v %v %v %v", f.Machine, f.Class, f.Data, f.Type,
			machine, class, elf.ELFDATA2LSB, elf.ET_EXEC)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("ELF: program header %v: not a static binary", p.Type)
		}
	}
	for _, name := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if s := f.Section(name); s != nil {
			t.Errorf("ELF: has %s: not stripped (-s -w)", name)
		}
	}
	// e_flags (debug/elf does not show them) is at byte 36 of an ELF32
	// header: an ARM binary must be EABI version 5, as Debian's are.
	if machine == elf.EM_ARM {
		if flags := binary.LittleEndian.Uint32(bin[36:40]); flags&0xff000000 != 0x05000000 {
			t.Errorf("ELF e_flags %#x: want EABI version 5", flags)
		}
	}
	info, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("build info: %v", err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	for k, v := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": "linux", "GOARM": goarm,
		"-tags": "nethttpomithttp2"} {
		if settings[k] != v {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], v)
		}
	}
	// -trimpath keeps -ldflags out of the build info: see their effect.
	// -buildid= leaves no Go build ID note (it would differ between builds).
	if s := f.Section(".note.go.buildid"); s != nil {
		t.Errorf("ELF: has a Go build ID (.note.go.buildid): not built with -buildid=")
	}
}

func mustEpoch(t *testing.T) time.Time {
	var sec int64
	if _, err := fmt.Sscan(debTestEpoch, &sec); err != nil {
		t.Fatal(err)
	}
	return time.Unix(sec, 0)
}

// tarMember is one member of a tar stream.
type tarMember struct {
	hdr  *tar.Header
	body []byte
}

// tarMembers runs cmd and reads the tar stream it writes.
func tarMembers(t *testing.T, cmd *exec.Cmd) map[string]tarMember {
	t.Helper()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	members := map[string]tarMember{}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		members[h.Name] = tarMember{h, b}
	}
	return members
}
