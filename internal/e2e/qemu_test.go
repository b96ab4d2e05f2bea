//go:build linux

package e2e

// Hard resets and power cuts for real: a whole Debian boots under QEMU
// (internal/testenv's QemuImage and StartQemu) with the packaged units, the agent, and a sample app
// whose files are checked at every start. The guest has no network: its
// release server is `ota-agent serve` on its own loopback, started before
// the boot-time update, over a release tree on its disk. Between boots the
// test changes the disk with debugfs (nothing is mounted), and reads the
// guest's records from the serial console and, once QEMU stopped, from the
// disk.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/serve"
)

// Bounds. A boot takes about 10 s under TCG here (20 s on a busy machine);
// the watchdog resets the guest 5 to 10 s after the agent armed it
// (i6300esb, heartbeat=5).
const (
	qemuBootTimeout   = 3 * time.Minute // start of QEMU to the test's first record
	qemuStepTimeout   = 2 * time.Minute // between two records of one boot
	qemuDefaultCuts   = 30
	qemuPerBoot       = 30 * time.Second        // one boot, updates and a cut, on a busy 2-core machine
	qemuWindowDefault = 1500 * time.Millisecond // an update's duration, until measured
	qemuMaxStalls     = 3                       // guest kernel stalls tolerated in one test (see GuestStalled)
)

// The sample app: six files, sub-paths included, a few hundred KiB each for
// the data, so that an update spends a while downloading and switching.
var qemuAppFiles = []struct {
	path string
	size int
}{
	{"main.sh", 0}, {"VERSION", 0}, {"lib/a.bin", 256 << 10}, {"lib/b.bin", 384 << 10},
	{"data/c.bin", 200 << 10}, {"data/deep/d.bin", 320 << 10},
}

// qemuRelease is one release of the sample app: its files by path.
type qemuRelease struct {
	tag   string
	files map[string][]byte
}

func qemuMakeRelease(tag string) qemuRelease {
	r := qemuRelease{tag: tag, files: map[string][]byte{}}
	rng := rand.New(rand.NewPCG(uint64(len(tag)), uint64(tag[len(tag)-1])))
	for _, f := range qemuAppFiles {
		switch f.path {
		case "main.sh":
			r.files[f.path] = []byte(strings.ReplaceAll(qemuAppMain, "@TAG@", tag))
		case "VERSION":
			r.files[f.path] = []byte(tag + "\n")
		default:
			b := make([]byte, f.size)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			r.files[f.path] = b
		}
	}
	return r
}

// Guest paths.
const (
	qemuAppDir   = "/opt/sample"
	qemuStateDir = "/var/lib/ota-agent/sample"
	qemuReleases = "/srv/ota"
	qemuVersion  = "/srv/ota/sample/version"
	qemuAppLog   = "/var/log/qemu-app.log"
)

// The guest's side of the test. Every record is one line starting "QEMUT"
// on the console (journal+console), so it reaches the serial log at once
// and survives a power cut.
const (
	// The app, as a release ships it: records the release it belongs to,
	// the release its directory holds (all files whole: the tag; else
	// MIXED), whether a switch is pending, whether recover had finished,
	// and how many times the boot-time update armed the watchdog. Also
	// appended, synced, to qemuAppLog, read back from the disk.
	qemuAppMain = `#!/bin/sh
# sample app, release @TAG@
line="QEMUT app release=@TAG@ up=$(cut -d' ' -f1 /proc/uptime) boot=$(cat /proc/sys/kernel/random/boot_id) sees=$(qemu-relcheck /opt/sample) journal=$(test -e /var/lib/ota-agent/sample/journal && echo yes || echo no) recover=$(systemctl is-active ota-agent-recover.service) armed=$(journalctl -b -o cat -u ota-agent-boot.service | grep -c 'watchdog armed')"
echo "$line" >> /var/log/qemu-app.log
sync /var/log/qemu-app.log
echo "$line"
exec sleep infinity
`
	// qemu-app-mark stop|start is the app's ExecStopPost and ExecStartPre:
	// it marks the moment the app has stopped, right before the agent
	// switches, and is being started, right after. (The app's own record comes later: its
	// checks take a while.)
	qemuAppMark = `#!/bin/sh
echo "QEMUT app-$1 up=$(cut -d' ' -f1 /proc/uptime)"
`
	// qemu-relcheck DIR prints the release DIR holds with every file whole
	// (from the checksums of every release, in /etc/qemu-test), else MIXED
	// and which release each file matches (MIXED,main.sh=v1,VERSION=v2+,
	// lib/a.bin=none...), or NONE for an empty or missing directory.
	qemuRelcheck = `#!/bin/sh
sums=${QEMU_TEST_DIR:-/etc/qemu-test}
cd "$1" 2>/dev/null || { echo NONE; exit 0; }
for s in "$sums"/*.sums; do
	if sha256sum --status -c "$s" 2>/dev/null; then
		basename "$s" .sums
		exit 0
	fi
done
if [ -z "$(ls -A)" ]; then echo NONE; exit 0; fi
printf MIXED
while read -r f; do
	sum=$(sha256sum "$f" 2>/dev/null | cut -d' ' -f1)
	tag=$(grep -l "^$sum " "$sums"/*.sums 2>/dev/null | sed 's|.*/||; s|\.sums$||' | paste -sd+ -)
	printf ',%s=%s' "$f" "${tag:-none}"
done < "$sums/files"
echo
`
	// qemu-check runs after recover and before the boot-time update: what
	// a power cut (and recover) left.
	qemuCheck = `#!/bin/sh
state=$(sed -n 's/^  "version": *"\([^"]*\)".*/\1/p' /var/lib/ota-agent/sample/state.json 2>/dev/null)
recovered=$(journalctl -b -o cat -u ota-agent-recover.service | grep -o 'rolled forward\|rolled back' | head -n1 | tr ' ' -)
echo "QEMUT check boot=$(cat /proc/sys/kernel/random/boot_id) app=$(qemu-relcheck /opt/sample) state=${state:-none} journal=$(test -e /var/lib/ota-agent/sample/journal && echo yes || echo no) recover=$(systemctl is-active ota-agent-recover.service) recovered=${recovered:-nothing} published=$(cat /srv/ota/sample/version)"
`
	// qemu-loop runs once the app started: reports what the boot-time
	// update did, then publishes the other release and updates, forever
	// (or qemu_test.updates= times on the kernel command line, then powers
	// off), with markers around each update for the host to time its cuts.
	qemuLoop = `#!/bin/sh
pub=/srv/ota/sample/version
max=$(sed -n 's/.*qemu_test\.updates=\([0-9]*\).*/\1/p' /proc/cmdline)
state() { sed -n 's/^  "version": *"\([^"]*\)".*/\1/p' /var/lib/ota-agent/sample/state.json 2>/dev/null; }
echo "QEMUT ready boot=$(cat /proc/sys/kernel/random/boot_id) app=$(qemu-relcheck /opt/sample) state=$(state) published=$(cat $pub) boot_update=$(systemctl show -p ExecMainStatus --value ota-agent-boot.service)"
n=0
while :; do
	if [ -n "$max" ] && [ "$n" -ge "$max" ]; then
		echo "QEMUT done n=$n"
		systemctl --no-block poweroff
		exit 0
	fi
	n=$((n+1))
	if [ "$(cat $pub)" = v1 ]; then next=v2; else next=v1; fi
	echo "$next" > $pub.new && sync $pub.new && mv $pub.new $pub && sync /srv/ota/sample
	echo "QEMUT update-begin n=$n to=$next up=$(cut -d' ' -f1 /proc/uptime)"
	ota-agent update --log-level warn
	rc=$?
	echo "QEMUT update-end n=$n rc=$rc up=$(cut -d' ' -f1 /proc/uptime) app=$(qemu-relcheck /opt/sample) state=$(state)"
done
`
	// The release server: ready (accepting connections) before the
	// boot-time update starts.
	qemuServeUnit = `[Unit]
Description=Test: the release server (ota-agent serve on loopback)
Before=ota-agent-boot.service

[Service]
ExecStart=/usr/bin/ota-agent serve /srv/ota --addr 127.0.0.1:8080
ExecStartPost=/bin/bash -c 'for i in $(seq 400); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && exit 0; sleep 0.05; done; exit 1'

[Install]
WantedBy=multi-user.target
`
	qemuCheckUnit = `[Unit]
Description=Test: record what recover left, before the boot-time update
After=ota-agent-recover.service
Before=ota-agent-boot.service sample.service

[Service]
Type=oneshot
RemainAfterExit=yes
StandardOutput=journal+console
ExecStart=/usr/local/bin/qemu-check

[Install]
WantedBy=multi-user.target
`
	qemuLoopUnit = `[Unit]
Description=Test: publish the other release and update, over and over
After=sample.service ota-agent-boot.service qemu-check.service

[Service]
StandardOutput=journal+console
ExecStart=/usr/local/bin/qemu-loop

[Install]
WantedBy=multi-user.target
`
	// sample.service is packaging/example/sample.service with the shell
	// app instead of python3 (not in the image), its output on the
	// console, and marks around a stop and a start; its drop-in is the
	// packaged one, unchanged.
	qemuSampleUnit = `[Unit]
Description=Sample app kept up to date by ota-agent

[Service]
ExecStartPre=/usr/local/bin/qemu-app-mark start
ExecStart=/bin/sh /opt/sample/main.sh
ExecStopPost=/usr/local/bin/qemu-app-mark stop
WorkingDirectory=/opt/sample
Restart=on-failure
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
`
	qemuConfigBase = `[[app]]
name = "sample"
host = "http://127.0.0.1:8080"
project = "sample"
files = ["main.sh", "VERSION", "lib/a.bin", "lib/b.bin", "data/c.bin", "data/deep/d.bin"]
app_dir = "/opt/sample"
`
)

// TestQemuRelcheck runs the guest's release check on the host: it must
// tell a whole release from any mix or damage.
func TestQemuRelcheck(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("no sha256sum")
	}
	v1, v2 := qemuMakeRelease("v1"), qemuMakeRelease("v2")
	sums := t.TempDir()
	script := filepath.Join(sums, "relcheck")
	var names []string
	for _, f := range qemuAppFiles {
		names = append(names, f.path)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(script, []byte(qemuRelcheck), 0o755))
	must(os.WriteFile(filepath.Join(sums, "files"), []byte(strings.Join(names, "\n")+"\n"), 0o644))
	for _, r := range []qemuRelease{v1, v2} {
		var b strings.Builder
		for _, f := range qemuAppFiles {
			fmt.Fprintf(&b, "%s  %s\n", qemuSHA256(r.files[f.path]), f.path)
		}
		must(os.WriteFile(filepath.Join(sums, r.tag+".sums"), []byte(b.String()), 0o644))
	}
	install := func(files map[string][]byte) string {
		dir := t.TempDir()
		for p, b := range files {
			must(os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755))
			must(os.WriteFile(filepath.Join(dir, p), b, 0o644))
		}
		return dir
	}
	mix := maps.Clone(v1.files)
	mix["data/deep/d.bin"] = v2.files["data/deep/d.bin"]
	short := maps.Clone(v2.files)
	short["lib/b.bin"] = short["lib/b.bin"][:1000]
	missing := maps.Clone(v2.files)
	delete(missing, "VERSION")
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"v1", install(v1.files), "v1"},
		{"v2", install(v2.files), "v2"},
		{"mix", install(mix), "MIXED,main.sh=v1,VERSION=v1,lib/a.bin=v1,lib/b.bin=v1,data/c.bin=v1,data/deep/d.bin=v2"},
		{"truncated", install(short), "MIXED,main.sh=v2,VERSION=v2,lib/a.bin=v2,lib/b.bin=none,data/c.bin=v2,data/deep/d.bin=v2"},
		{"missing", install(missing), "MIXED,main.sh=v2,VERSION=none,lib/a.bin=v2,lib/b.bin=v2,data/c.bin=v2,data/deep/d.bin=v2"},
		{"empty", t.TempDir(), "NONE"},
		{"absent", filepath.Join(sums, "absent"), "NONE"},
	} {
		cmd := exec.Command("/bin/sh", script, tc.dir)
		cmd.Env = append(os.Environ(), "QEMU_TEST_DIR="+sums)
		out, err := cmd.Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("%s: relcheck = %q, %v, want %q", tc.name, got, err, tc.want)
		}
	}
}

// qemuRecord is one "QEMUT <kind> key=value ..." line of the serial log.
type qemuRecord struct {
	kind string
	kv   map[string]string
	line string
}

// qemuRecordRE matches a whole record of kind (a regexp): the serial log
// is written a byte at a time, so a line counts once its end is there.
func qemuRecordRE(kind string) *regexp.Regexp {
	return regexp.MustCompile(`QEMUT (` + kind + `)((?: \w+=[^ \r\n]*)*) *\r?\n`)
}

var qemuAnyRecord = qemuRecordRE(`\w[\w-]*`)

func qemuParseRecord(m []string) qemuRecord {
	r := qemuRecord{kind: m[1], kv: map[string]string{}, line: strings.TrimSpace(m[0])}
	for _, f := range strings.Fields(m[2]) {
		k, v, _ := strings.Cut(f, "=")
		r.kv[k] = v
	}
	return r
}

// qemuRecords returns every record in a serial log, in order.
func qemuRecords(log string) []qemuRecord {
	var out []qemuRecord
	for _, m := range qemuAnyRecord.FindAllStringSubmatch(log, -1) {
		out = append(out, qemuParseRecord(m))
	}
	return out
}

// qemuWait waits for the next record of kind on vm's console. It returns
// false if the guest kernel stalled first (testenv.QemuVM.GuestStalled),
// and fails the test if QEMU exited or timeout passed.
func qemuWait(t *testing.T, vm *testenv.QemuVM, kind string, timeout time.Duration) (qemuRecord, bool) {
	t.Helper()
	re := qemuRecordRE(regexp.QuoteMeta(kind))
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(5*time.Second, time.Until(deadline)))
		m, err := vm.WaitSerial(ctx, re)
		cancel()
		switch {
		case err == nil:
			return qemuParseRecord(m), true
		case vm.GuestStalled():
			return qemuRecord{}, false
		case time.Now().After(deadline):
			t.Fatalf("%v", err)
		}
		select {
		case <-vm.Exited():
			t.Fatalf("%v", err)
		default:
		}
	}
}

// qemuTail is the end of a console log, for a test's log.
func qemuTail(log string, n int) string {
	if len(log) > n {
		log = log[len(log)-n:]
	}
	return log
}

// qemuBuildAgent builds ota-agent static (CGO_ENABLED=0), as it is shipped.
func qemuBuildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ota-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/ota-agent/ota-agent/cmd/ota-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// qemuRepoFile reads a file of the repository (the packaged units).
func qemuRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// qemuSetup returns a test image holding the agent, the packaged recover
// and boot units, the sample app's unit and drop-in, the test's units
// (extra: name -> content, each enabled), config, and every release on the
// release server with published as the version.
func qemuSetup(t *testing.T, bin, config, published string, releases []qemuRelease, extra map[string]string) *testenv.QemuImage {
	t.Helper()
	img := testenv.NewQemuImage(t)
	agent, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	exe := func(p, content string) testenv.QemuFile {
		return testenv.QemuFile{Path: p, Data: []byte(content), Mode: 0o755}
	}
	unit := func(name string, content []byte) testenv.QemuFile {
		return testenv.QemuFile{Path: "/etc/systemd/system/" + name, Data: content}
	}
	enable := func(target, name string) testenv.QemuFile {
		return testenv.QemuFile{Path: "/etc/systemd/system/" + target + ".wants/" + name, Link: "/etc/systemd/system/" + name}
	}
	var names []string
	for _, f := range qemuAppFiles {
		names = append(names, f.path)
	}
	files := []testenv.QemuFile{
		{Path: "/usr/bin/ota-agent", Data: agent, Mode: 0o755},
		{Path: "/etc/ota-agent/config.toml", Data: []byte(config)},
		unit("ota-agent-recover.service", qemuRepoFile(t, "packaging/ota-agent-recover.service")),
		unit("ota-agent-boot.service", qemuRepoFile(t, "packaging/ota-agent-boot.service")),
		unit("sample.service", []byte(qemuSampleUnit)),
		unit("sample.service.d/ota-agent.conf", qemuRepoFile(t, "packaging/example/sample.service.d/ota-agent.conf")),
		unit("qemu-serve.service", []byte(qemuServeUnit)),
		enable("sysinit.target", "ota-agent-recover.service"),
		enable("multi-user.target", "ota-agent-boot.service"),
		enable("multi-user.target", "sample.service"),
		enable("multi-user.target", "qemu-serve.service"),
		exe("/usr/local/bin/qemu-relcheck", qemuRelcheck),
		exe("/usr/local/bin/qemu-check", qemuCheck),
		exe("/usr/local/bin/qemu-loop", qemuLoop),
		exe("/usr/local/bin/qemu-app-mark", qemuAppMark),
		{Path: "/etc/qemu-test/files", Data: []byte(strings.Join(names, "\n") + "\n")},
		{Path: qemuVersion, Data: []byte(published + "\n")},
	}
	for name, content := range extra {
		files = append(files, unit(name, []byte(content)), enable("multi-user.target", name))
	}
	for _, r := range releases {
		var sums strings.Builder
		for _, f := range qemuAppFiles {
			b := r.files[f.path]
			files = append(files, testenv.QemuFile{Path: qemuReleases + "/sample/" + r.tag + "_" + f.path, Data: b})
			fmt.Fprintf(&sums, "%s  %s\n", qemuSHA256(b), f.path)
		}
		files = append(files, testenv.QemuFile{Path: "/etc/qemu-test/" + r.tag + ".sums", Data: []byte(sums.String())})
	}
	img.WriteFiles(t, files...)
	return img
}

// qemuPreinstall installs release r on the image as the agent would have,
// with the same binary on the host against an in-process server: app dir,
// state dir, state.json.
func qemuPreinstall(t *testing.T, img *testenv.QemuImage, bin string, r qemuRelease) {
	t.Helper()
	srv := t.TempDir()
	qemuWriteRelease(t, filepath.Join(srv, "sample"), r)
	if err := os.WriteFile(filepath.Join(srv, "sample", "version"), []byte(r.tag+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := serve.Handler(srv, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	root := t.TempDir()
	var names []string
	for _, f := range qemuAppFiles {
		names = append(names, f.path)
	}
	cmd := exec.Command(bin, "update", "--host", ts.URL, "--project", "sample", "--name", "sample",
		"--files", strings.Join(names, ","), "--app-dir", filepath.Join(root, "opt/sample"),
		"--state-dir", filepath.Join(root, "var/lib/ota-agent"), "--reset", "none",
		"--runtime-dir", t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pre-install %s on the host: %v\n%s", r.tag, err, out)
	}
	img.CopyIn(t, root, "/")
}

func qemuWriteRelease(t *testing.T, dir string, r qemuRelease) {
	t.Helper()
	for p, b := range r.files {
		dst := filepath.Join(dir, r.tag+"_"+p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func qemuSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// qemuState is the part of state.json the tests check.
type qemuState struct {
	Version  string `json:"version"`
	Previous string `json:"previous"`
	Files    []struct {
		Path string `json:"path"`
	} `json:"files"`
}

// qemuCheckDisk reads the stopped VM's disk: state.json must name want and
// the app dir must hold want's files, every one whole.
func qemuCheckDisk(t *testing.T, img *testenv.QemuImage, want qemuRelease) qemuState {
	t.Helper()
	b, err := img.ReadFile(qemuStateDir + "/state.json")
	if err != nil {
		t.Fatalf("state.json: %v", err)
	}
	var st qemuState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state.json: %v\n%s", err, b)
	}
	if st.Version != want.tag {
		t.Errorf("state.json on the disk: version %q, want %q", st.Version, want.tag)
	}
	for p, wantData := range want.files {
		got, err := img.ReadFile(path.Join(qemuAppDir, p))
		if err != nil {
			t.Errorf("app file %s: %v", p, err)
		} else if qemuSHA256(got) != qemuSHA256(wantData) {
			t.Errorf("app file %s on the disk is not %s's", p, want.tag)
		}
	}
	if _, err := img.ReadFile(qemuStateDir + "/journal"); err == nil {
		t.Errorf("a journal is left in %s", qemuStateDir)
	}
	return st
}

// TestQemuWatchdogReset: an app with reset = "hard", hard_reset =
// "watchdog" is updated by the boot-time update; the agent arms the VM's
// i6300esb watchdog and stops feeding it; QEMU reports the watchdog firing
// (WATCHDOG, action reset) and the machine resetting (RESET); the next boot
// finds the new release installed and runs it, and does not reset again.
//
// Needs root, debootstrap, qemu-system-x86_64 and e2fsprogs:
// skipped without them, failing when CI is "true". About 30 s with the image
// cached (two boots and a watchdog expiry), plus about 70 s to build it.
// A guest kernel stall (testenv.QemuVM.GuestStalled) starts it over once.
func TestQemuWatchdogReset(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM in -short mode")
	}
	bin := qemuBuildAgent(t)
	v1, v2 := qemuMakeRelease("v1"), qemuMakeRelease("v2")
	for attempt := 1; ; attempt++ {
		if qemuWatchdogReset(t, bin, v1, v2) {
			return
		}
		if attempt == 2 {
			t.Fatalf("the guest kernel stalled twice: the host is too slow for TCG")
		}
		t.Logf("the guest kernel stalled (TCG on a busy host); starting over on a fresh image")
	}
}

// qemuWatchdogReset is TestQemuWatchdogReset on a fresh image; false if the
// guest kernel stalled (testenv.QemuVM.GuestStalled) before it was done.
func qemuWatchdogReset(t *testing.T, bin string, v1, v2 qemuRelease) bool {
	start := time.Now()
	config := qemuConfigBase + "reset = \"hard\"\nhard_reset = \"watchdog\"\n"
	img := qemuSetup(t, bin, config, "v2", []qemuRelease{v1, v2}, map[string]string{"qemu-check.service": qemuCheckUnit})
	// The watchdog's driver before basic.target, as on a Raspberry Pi whose
	// kernel has it built in: left to udev, /dev/watchdog can appear after
	// the boot-time update ran, and the agent would reboot through systemd
	// instead (its documented fallback), with no WATCHDOG event.
	img.WriteFiles(t, testenv.QemuFile{Path: "/etc/modules-load.d/watchdog.conf", Data: []byte("i6300esb\n")})
	qemuPreinstall(t, img, bin, v1)
	t.Logf("image ready in %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	vm := testenv.StartQemu(t, img, testenv.QemuOptions{Watchdog: true})
	defer vm.Kill()
	wait := func(kind string, timeout time.Duration) (qemuRecord, bool) {
		r, ok := qemuWait(t, vm, kind, timeout)
		if ok {
			t.Logf("at %v: %s", time.Since(start).Round(time.Millisecond), r.line)
		}
		return r, ok
	}

	// Boot 1: v1 installed, v2 published.
	check1, ok := wait("check", qemuBootTimeout)
	if !ok {
		return false
	}
	if check1.kv["app"] != "v1" || check1.kv["state"] != "v1" || check1.kv["published"] != "v2" {
		t.Fatalf("boot 1 before the update: %s, want app=v1 state=v1 published=v2", check1.line)
	}
	// The boot-time update installs v2 and arms the watchdog.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wd, err := vm.WaitEvent(ctx, "WATCHDOG")
	if err != nil {
		t.Fatal(err)
	}
	var wdData struct {
		Action string `json:"action"`
	}
	json.Unmarshal(wd.Data, &wdData)
	if wdData.Action != "reset" {
		t.Errorf("WATCHDOG event data %s, want action reset", wd.Data)
	}
	rst, err := vm.WaitEvent(ctx, "RESET")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QMP at %v: WATCHDOG %s, then RESET %s (%v later)", time.Since(start).Round(time.Millisecond), wd.Data, rst.Data, rst.At.Sub(wd.At))

	// Boot 2: v2 is installed and runs; nothing is pending, nothing armed.
	check2, ok := wait("check", qemuBootTimeout)
	if !ok {
		return false
	}
	if check2.kv["boot"] == check1.kv["boot"] {
		t.Fatalf("boot 2 has boot 1's boot id: %s", check2.line)
	}
	if check2.kv["app"] != "v2" || check2.kv["state"] != "v2" || check2.kv["journal"] != "no" || check2.kv["recover"] != "active" {
		t.Errorf("boot 2 after the reset: %s, want app=v2 state=v2 journal=no recover=active", check2.line)
	}
	app2, ok := wait("app", qemuStepTimeout)
	if !ok {
		return false
	}
	if app2.kv["boot"] != check2.kv["boot"] || app2.kv["sees"] != "v2" || app2.kv["release"] != "v2" || app2.kv["armed"] != "0" {
		t.Errorf("boot 2 app: %s, want boot=%s release=v2 sees=v2 armed=0", app2.line, check2.kv["boot"])
	}
	// Whether the app started in boot 1, between the update and the reset:
	// today it does, as update returns once the watchdog is armed. If it
	// did, it must have run v2, whole.
	var early []qemuRecord
	for _, r := range qemuRecords(vm.SerialLog()) {
		if r.kind == "app" && r.kv["boot"] == check1.kv["boot"] {
			early = append(early, r)
			if r.kv["sees"] != "v2" || r.kv["release"] != "v2" || r.kv["armed"] == "0" {
				t.Errorf("boot 1 app: %s, want release=v2 sees=v2, the watchdog armed", r.line)
			}
		}
	}
	t.Logf("in boot 1 the app started %d times before the watchdog reset", len(early))
	qctx, qcancel := context.WithTimeout(context.Background(), time.Minute)
	defer qcancel()
	if err := vm.Quit(qctx); err != nil {
		t.Fatal(err)
	}
	// One WATCHDOG, its RESET (the firmware may add one within
	// milliseconds), and nothing later but the quit.
	nWatchdog := 0
	for _, e := range vm.Events() {
		t.Logf("QMP event at %v: %s %s", e.At.Sub(start).Round(time.Millisecond), e.Name, e.Data)
		switch {
		case e.Name == "WATCHDOG":
			nWatchdog++
		case e.Name == "RESET" && e.At.Sub(wd.At) < 0:
			t.Errorf("QMP: RESET before the WATCHDOG event")
		case e.Name == "RESET" && e.At.Sub(wd.At) > 2*time.Second:
			t.Errorf("QMP: another RESET %v after the watchdog's", e.At.Sub(wd.At))
		case e.Name == "RESET", e.Name == "SHUTDOWN":
		default:
			t.Errorf("QMP: unexpected event %s %s", e.Name, e.Data)
		}
	}
	if nWatchdog != 1 {
		t.Errorf("QMP: %d WATCHDOG events, want 1", nWatchdog)
	}
	t.Logf("two boots and a watchdog reset in %v", time.Since(start).Round(time.Millisecond))

	// What the disk kept: v2 installed whole, v1 kept for rollback, and the
	// app's own log of both boots.
	st := qemuCheckDisk(t, img, v2)
	if st.Previous != "v1" {
		t.Errorf("state.json: previous %q, want v1", st.Previous)
	}
	b, err := img.ReadFile(qemuAppLog)
	if err != nil {
		t.Fatal(err)
	}
	recs := qemuRecords(string(b))
	if n := len(recs); n != len(early)+1 || recs[n-1].kv["boot"] != check2.kv["boot"] ||
		recs[n-1].kv["sees"] != "v2" || recs[n-1].kv["release"] != "v2" {
		t.Errorf("%s on the disk:\n%s\nwant %d starts in boot 1, then one in boot 2, on v2", qemuAppLog, b, len(early))
	}
	return true
}

// TestQemuPowerCut cuts the power (SIGKILL to QEMU) at random instants of
// in-place updates between two six-file releases, many times, and checks
// after each cut, as the next boot goes:
//   - ota-agent-recover.service ran, and left no journal and an app dir
//     holding exactly one release, every file whole, which state.json names;
//   - the boot-time update then brings the app to the published release;
//   - the app, ordered after both by the packaged drop-in, never started on
//     a mix, nor while a switch was pending, nor before recover finished,
//     in any boot (it is also stopped and started around each switch).
//
// Every update that finished before a cut must have succeeded.
//
// At the end, after a clean poweroff, the disk must hold the last release
// whole, the one before it in releases/ (keep_releases = 2), and no
// download left in staging/.
//
// Where the cuts land: the guest marks each update's start, the app's stop
// (the switch starts) and start (it is over), on its own clock, through the
// journal to the console (so a mark can trail its event by a few ms). Each
// boot lets one update finish to time them under the load of the moment,
// then cuts the second or third: half of the cuts anywhere within it
// (check, download, switch, state write), half at the switch; each cut's
// log says where it landed, and "recover: rolled-forward" marks a cut
// inside the journaled switch (about one in eight). A guest kernel stall
// (testenv.QemuVM.GuestStalled) is power-cycled as an extra cut.
//
// StartQemu explains what reaches the disk: the guest's page cache is lost,
// every write it saw complete is kept. $OTA_AGENT_QEMU_CUTS sets the number
// of cuts (default 30: about 7 min with the image cached, on 2 cores).
func TestQemuPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs in -short mode")
	}
	cuts := qemuDefaultCuts
	if s := os.Getenv("OTA_AGENT_QEMU_CUTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("OTA_AGENT_QEMU_CUTS=%q: want a positive number", s)
		}
		cuts = n
	}
	if deadline, ok := t.Deadline(); ok {
		need := time.Duration(cuts+1)*qemuPerBoot + 5*time.Minute // and the image, cold
		testenv.Require(t, fmt.Sprintf("a -timeout for %d power cuts (about %v; %v left: raise -timeout or lower $OTA_AGENT_QEMU_CUTS)",
			cuts, need.Round(time.Minute), time.Until(deadline).Round(time.Second)), time.Until(deadline) > need)
	}
	start := time.Now()
	bin := qemuBuildAgent(t)
	rels := map[string]qemuRelease{"v1": qemuMakeRelease("v1"), "v2": qemuMakeRelease("v2")}
	// Power cuts land in switches, not in trials: each update commits at
	// once (trials and their boot counting have tests of their own).
	config := qemuConfigBase + "unit = \"sample.service\"\ntrial = \"0s\"\n"
	img := qemuSetup(t, bin, config, "v1", []qemuRelease{rels["v1"], rels["v2"]},
		map[string]string{"qemu-check.service": qemuCheckUnit, "qemu-loop.service": qemuLoopUnit})
	t.Logf("image ready in %v", time.Since(start).Round(time.Millisecond))

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	t.Logf("random seed %d", seed)

	var (
		timing    qemuTiming
		before    = "" // the release installed when the VM was cut
		target    = "" // the release the update in progress was installing
		landed    = "" // where the last cut landed
		outcomes  = map[string]int{}
		bootTimes []time.Duration
	)
	// One boot: what the last cut left, the boot-time update, updates and
	// a cut (or, the last time, two updates and a clean poweroff). It
	// returns false if the guest kernel stalled before it was done.
	oneBoot := func(boot int, vm *testenv.QemuVM, bootStart time.Time) bool {
		check, ok := qemuWait(t, vm, "check", qemuBootTimeout)
		if !ok {
			return false
		}
		bootTimes = append(bootTimes, time.Since(bootStart))
		app, state, rec := check.kv["app"], check.kv["state"], check.kv["recovered"]
		if before == "" {
			// Nothing was seen installed yet: the first boot (or its retry
			// after a guest stall, which may have installed v1).
			if !(app == "NONE" && state == "none") && !(app == "v1" && state == "v1" && check.kv["journal"] == "no") {
				t.Fatalf("first boot: %s, want nothing installed", check.line)
			}
		} else {
			if !(app == "v1" || app == "v2") || state != app || check.kv["journal"] != "no" || check.kv["recover"] != "active" {
				t.Errorf("cut %d (%s): the boot after it found %s; want one release whole (v1 or v2), state.json naming it, no journal, recover active", boot, landed, check.line)
			}
			kept := "old release"
			switch {
			case app == target && target != before:
				kept = "new release"
			case app != before:
				kept = "unexpected release"
				t.Errorf("cut %d: app holds %s, but the cut hit an update from %s to %s", boot, app, before, target)
			}
			outcome := fmt.Sprintf("cut %-41s -> %s, recover: %s", landed, kept, rec)
			outcomes[outcome]++
			t.Logf("cut %d: %s", boot, outcome)
		}

		ready, ok := qemuWait(t, vm, "ready", qemuStepTimeout)
		if !ok {
			return false
		}
		if ready.kv["app"] != ready.kv["published"] || ready.kv["state"] != ready.kv["published"] || ready.kv["boot_update"] != "0" {
			t.Errorf("boot %d: the boot-time update did not converge: %s", boot, ready.line)
		}

		// The first update of each boot runs to its end and times the next
		// ones under the machine's load of the moment; the cut hits the
		// second or the third (v2 -> v1 or v1 -> v2 when v1 was published
		// at boot, as it stays).
		nth := 2 + rng.IntN(2)
		if boot == cuts {
			// The last boot: two updates, then a clean poweroff.
			if _, ok := qemuWait(t, vm, "done", 2*qemuStepTimeout); !ok {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), qemuStepTimeout)
			defer cancel()
			if err := vm.Wait(ctx); err != nil {
				t.Fatalf("QEMU after the guest powered off: %v", err)
			}
			return true
		}
		for range nth - 1 {
			if _, ok := qemuWait(t, vm, "update-end", qemuStepTimeout); !ok {
				return false
			}
		}
		if _, ok := qemuWait(t, vm, "update-begin", qemuStepTimeout); !ok {
			return false
		}
		for _, u := range qemuScan(vm.SerialLog()).updates[:nth-1] {
			if u.ended && u.stop > 0 && u.start > 0 {
				timing.add(u.stop-u.begin, u.start-u.begin, u.end-u.begin)
			}
		}
		delay, aim := timing.pick(rng)
		time.Sleep(delay)
		vm.Kill()
		t.Logf("boot %d: booted in %v, cut %v into update %d (aimed at %s)", boot, bootTimes[len(bootTimes)-1].Round(time.Millisecond), delay.Round(time.Millisecond), nth, aim)
		return true
	}

	stalls := 0
	for boot := 0; boot <= cuts; {
		bootStart := time.Now()
		var opts testenv.QemuOptions
		if boot == cuts {
			opts.Append = "qemu_test.updates=2" // then a clean poweroff
		}
		vm := testenv.StartQemu(t, img, opts)
		done := oneBoot(boot, vm, bootStart)
		if !done {
			vm.Kill()
			if stalls++; stalls > qemuMaxStalls {
				t.Fatalf("the guest kernel stalled %d times: the host is too slow for TCG", stalls)
			}
			t.Logf("boot %d: the guest kernel stalled (TCG on a busy host); power-cycling it, an extra cut. Console:\n%s",
				boot, qemuTail(vm.SerialLog(), 1500))
		}

		// Everything this boot recorded, up to the cut.
		scan := qemuScan(vm.SerialLog())
		for _, r := range scan.apps {
			if r.kv["sees"] != r.kv["release"] || r.kv["journal"] != "no" || r.kv["recover"] != "active" {
				t.Errorf("boot %d: the app started on %s", boot, r.line)
			}
		}
		if ready := qemuRecordRE("ready").FindStringSubmatch(vm.SerialLog()); ready != nil {
			before, landed = qemuParseRecord(ready).kv["app"], "before the first update"
		}
		for _, u := range scan.updates {
			target = u.to
			switch {
			case u.ended:
				if u.rc != "0" || u.app != u.to || u.state != u.to {
					t.Errorf("boot %d: update %d to %s ended %s", boot, u.n, u.to, u.endLine)
				}
				before, landed = u.app, "between updates, "+u.app+" installed"
			case u.start > 0:
				landed = "after the switch to " + u.to + ", app started"
			case u.stop > 0:
				landed = fmt.Sprintf("in the switch %s -> %s (app stopped)", before, u.to)
			default:
				landed = fmt.Sprintf("before the switch %s -> %s", before, u.to)
			}
		}
		if !done {
			landed = "by a guest stall, " + landed
		}
		if t.Failed() {
			t.Fatalf("stopping after boot %d", boot)
		}
		if done {
			boot++
		}
	}

	// The disk after the clean poweroff: the last release whole, the one
	// before it kept for rollback (keep_releases = 2), no download left.
	qemuCheckDisk(t, img, rels[before])
	other := map[string]string{"v1": "v2", "v2": "v1"}[before]
	if got, err := img.ReadDir(qemuStateDir + "/releases"); err != nil || !slices.Equal(got, []string{other}) {
		t.Errorf("%s/releases holds %q, %v; want [%s]", qemuStateDir, got, err, other)
	}
	if got, err := img.ReadDir(qemuStateDir + "/staging"); err != nil || len(got) != 0 {
		t.Errorf("%s/staging holds %q, %v; want nothing", qemuStateDir, got, err)
	}
	var lines []string
	for o, n := range outcomes {
		lines = append(lines, fmt.Sprintf("%3d  %s", n, o))
	}
	sort.Strings(lines)
	bt := slices.Clone(bootTimes)
	slices.Sort(bt)
	t.Logf("%d power cuts in %v (QEMU start to the first record: median %v; %s):\n%s", cuts,
		time.Since(start).Round(time.Second), bt[len(bt)/2].Round(time.Millisecond), &timing, strings.Join(lines, "\n"))
}

// qemuUpdate is one update of qemu-loop, from its marks: guest uptimes in
// seconds (0: not seen).
type qemuUpdate struct {
	n                       int
	to                      string
	begin, stop, start, end float64
	ended                   bool
	rc, app, state, endLine string
}

// qemuBoot is what one boot of TestQemuPowerCut recorded.
type qemuBoot struct {
	apps    []qemuRecord // the app's records, one per start
	updates []qemuUpdate
}

func qemuScan(log string) qemuBoot {
	var b qemuBoot
	var cur *qemuUpdate
	for _, r := range qemuRecords(log) {
		up, _ := strconv.ParseFloat(r.kv["up"], 64)
		switch r.kind {
		case "app":
			b.apps = append(b.apps, r)
		case "app-stop":
			if cur != nil && cur.stop == 0 {
				cur.stop = up
			}
		case "app-start":
			if cur != nil && cur.stop > 0 && cur.start == 0 {
				cur.start = up
			}
		case "update-begin":
			n, _ := strconv.Atoi(r.kv["n"])
			b.updates = append(b.updates, qemuUpdate{n: n, to: r.kv["to"], begin: up})
			cur = &b.updates[len(b.updates)-1]
		case "update-end":
			if cur != nil {
				cur.ended, cur.end, cur.rc, cur.app, cur.state, cur.endLine = true, up, r.kv["rc"], r.kv["app"], r.kv["state"], r.line
			}
			cur = nil
		}
	}
	return b
}

// qemuTiming learns, from finished updates, when the switch starts (the
// app is stopped), when it is over (the app started again) and when the
// update ends, as offsets from the update's start marker.
type qemuTiming struct {
	stop, start, end []float64 // seconds
}

func (q *qemuTiming) add(stop, start, end float64) {
	q.stop, q.start, q.end = append(q.stop, stop), append(q.start, start), append(q.end, end)
}

func qemuMedian(v []float64) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	return time.Duration(s[len(s)/2] * float64(time.Second))
}

// pick returns how long after the host saw an update start to cut, and
// what it aims at: anywhere in the update, or the switch (a coin toss once
// an update was timed).
func (q *qemuTiming) pick(rng *rand.Rand) (time.Duration, string) {
	uniform := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	if len(q.end) == 0 {
		return uniform(0, qemuWindowDefault), "anywhere (not timed yet)"
	}
	stop, start, end := qemuMedian(q.stop), qemuMedian(q.start), qemuMedian(q.end)
	if rng.IntN(2) == 0 {
		// The journal, renames and state write start right after the stop
		// mark and take a few tens of ms (file ctimes in the guest: ~80 ms
		// of the ~250 ms to the start mark; starting the unit again over
		// D-Bus takes the rest), and the host sees the update's start
		// mark some tens of ms late.
		gap := start - stop
		return uniform(stop-gap/4, stop+gap/8), "the switch"
	}
	return uniform(0, end+end/8), "anywhere"
}

func (q *qemuTiming) String() string {
	if len(q.end) == 0 {
		return "no update timed"
	}
	return fmt.Sprintf("update: app stopped at %v, started at %v, done at %v (medians of %d)",
		qemuMedian(q.stop).Round(time.Millisecond), qemuMedian(q.start).Round(time.Millisecond),
		qemuMedian(q.end).Round(time.Millisecond), len(q.end))
}
