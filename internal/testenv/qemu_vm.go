//go:build linux

package testenv

// QEMU virtual machines for the tests that need a whole machine: a kernel
// that boots, a hardware watchdog that really resets it, and power cuts that
// lose what the guest had not written out. QMP tells the cases apart.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// QemuOptions configure StartQemu.
type QemuOptions struct {
	// Watchdog adds an emulated Intel 6300ESB watchdog whose expiry resets
	// the machine (-action watchdog=reset). udev loads its driver
	// (i6300esb, 5 s heartbeat: a reset about 10 s after the last ping)
	// while the boot goes on, so /dev/watchdog may appear after units of
	// multi-user.target start: list i6300esb in /etc/modules-load.d/ to
	// have it before basic.target.
	Watchdog bool
	// MemoryMiB is the guest's memory: 0 means 512.
	MemoryMiB int
	// CPUs is the guest's processor count: 0 means 2.
	CPUs int
	// Append is added to the kernel command line.
	Append string
}

// QemuVM is a running QEMU machine (TCG: KVM hangs a Debian kernel at boot
// on the machines this project uses) with no network (-nic none), its
// serial console written to a file, and a QMP socket that reports its
// events. The test drives the guest through units in its image and reads
// back the serial console (WaitSerial) and, once the VM stopped, the disk.
type QemuVM struct {
	// SerialPath is the serial console's log (the kernel's and every
	// unit's console output), kept until the test ends.
	SerialPath string

	t       testing.TB
	cmd     *exec.Cmd
	output  bytes.Buffer // QEMU's own stdout and stderr
	exited  chan struct{}
	waitErr error

	mu        sync.Mutex
	qmp       net.Conn
	events    []QemuEvent
	replies   chan qmpReply
	cmdMu     sync.Mutex
	serialPos int // WaitSerial's cursor
	eventPos  int // WaitEvent's cursor
}

// QemuEvent is an asynchronous QMP event: WATCHDOG, RESET, SHUTDOWN, ...
type QemuEvent struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	// At is QEMU's timestamp of the event.
	At time.Time `json:"-"`
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// StartQemu boots img and returns once QEMU runs and its QMP socket is
// connected (the guest is still booting: wait for it with WaitSerial). The
// VM is killed when the test ends, and the serial log's tail logged if the
// test failed.
//
// The disk uses QEMU's default cache mode (writeback): a write the guest
// saw complete is in the host's page cache, so it survives Kill, which is a
// SIGKILL to QEMU; the guest's own page cache, and writes it had not
// issued or QEMU not completed, are lost, as in a power cut. Guest flushes
// become host fdatasyncs, so fsync costs time as on a real disk. (What this
// cannot show is a disk that loses or reorders writes it acknowledged but
// had not flushed: the host keeps every completed write, in order.)
func StartQemu(t testing.TB, img *QemuImage, o QemuOptions) *QemuVM {
	t.Helper()
	bin, err := lookPathSbin(QemuBinary)
	Require(t, "QEMU (needs "+QemuBinary+")", err == nil)
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 512
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	dir := t.TempDir()
	vm := &QemuVM{SerialPath: filepath.Join(dir, "serial.log"), t: t, exited: make(chan struct{}), replies: make(chan qmpReply, 1)}
	sock := filepath.Join(dir, "qmp.sock")
	cmdline := "root=/dev/vda rw console=ttyS0 quiet panic=-1"
	if o.Watchdog {
		cmdline += " i6300esb.heartbeat=5"
	}
	if o.Append != "" {
		cmdline += " " + o.Append
	}
	args := []string{"-accel", "tcg", "-smp", fmt.Sprint(o.CPUs), "-m", fmt.Sprint(o.MemoryMiB),
		"-M", "pc", "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", cmdline,
		"-drive", "file=" + img.Disk + ",if=virtio,format=raw",
		"-serial", "file:" + vm.SerialPath,
		"-qmp", "unix:" + sock + ",server=on,wait=off"}
	if o.Watchdog {
		args = append(args, "-device", "i6300esb", "-action", "watchdog=reset")
	}
	vm.cmd = exec.Command(bin, args...)
	out := &lockedWriter{mu: &vm.mu, w: &vm.output}
	vm.cmd.Stdout, vm.cmd.Stderr = out, out
	// Its own process group, out of reach of a terminal's ^C to the test;
	// and killed if the test process dies without cleaning up.
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := vm.cmd.Start(); err != nil {
		Require(t, fmt.Sprintf("QEMU (%v)", err), false)
	}
	go func() {
		err := vm.cmd.Wait()
		vm.mu.Lock()
		vm.waitErr = err
		vm.mu.Unlock()
		close(vm.exited)
	}()
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			t.Logf("QEMU %s:\n%s\nQMP events: %s\nserial console (tail):\n%s", strings.Join(args, " "),
				vm.qemuOutput(), vm.eventNames(), tail([]byte(vm.SerialLog()), 6<<10))
		}
	})
	if err := vm.connectQMP(sock); err != nil {
		vm.Kill()
		Require(t, fmt.Sprintf("QEMU (%v; %s)", err, vm.qemuOutput()), false)
	}
	return vm
}

// lockedWriter serializes writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (vm *QemuVM) qemuOutput() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return strings.TrimSpace(vm.output.String())
}

// connectQMP connects to QEMU's QMP socket (created shortly after start),
// leaves capabilities negotiation, and starts reading events.
func (vm *QemuVM) connectQMP(sock string) error {
	deadline := time.Now().Add(10 * time.Second)
	var conn net.Conn
	for {
		var err error
		conn, err = net.Dial("unix", sock)
		if err == nil {
			break
		}
		select {
		case <-vm.exited:
			return fmt.Errorf("qemu exited: %v", vm.exitErr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("QMP socket: %w", err)
		}
	}
	conn.SetDeadline(deadline)
	r := bufio.NewReader(conn)
	if _, err := r.ReadBytes('\n'); err != nil { // {"QMP": {"version": ...}}
		conn.Close()
		return fmt.Errorf("QMP greeting: %w", err)
	}
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		conn.Close()
		return fmt.Errorf("QMP: %w", err)
	}
	line, err := r.ReadBytes('\n')
	if err != nil || !bytes.Contains(line, []byte(`"return"`)) {
		conn.Close()
		return fmt.Errorf("QMP qmp_capabilities: %q, %v", line, err)
	}
	conn.SetDeadline(time.Time{})
	vm.mu.Lock()
	vm.qmp = conn
	vm.mu.Unlock()
	go vm.readQMP(r)
	return nil
}

// readQMP records events and hands command replies to execute, until the
// connection closes (QEMU exited).
func (vm *QemuVM) readQMP(r *bufio.Reader) {
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var msg struct {
			Event     string `json:"event"`
			Timestamp struct {
				Seconds      int64 `json:"seconds"`
				Microseconds int64 `json:"microseconds"`
			} `json:"timestamp"`
			qmpReply
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(line, &msg) != nil {
			continue
		}
		if msg.Event != "" {
			vm.mu.Lock()
			vm.events = append(vm.events, QemuEvent{Name: msg.Event, Data: msg.Data,
				At: time.Unix(msg.Timestamp.Seconds, msg.Timestamp.Microseconds*1000)})
			vm.mu.Unlock()
			continue
		}
		select {
		case vm.replies <- msg.qmpReply:
		default:
		}
	}
}

// execute runs one QMP command and returns its reply's "return" value.
func (vm *QemuVM) execute(ctx context.Context, command string) (json.RawMessage, error) {
	vm.cmdMu.Lock()
	defer vm.cmdMu.Unlock()
	vm.mu.Lock()
	conn := vm.qmp
	vm.mu.Unlock()
	if conn == nil {
		return nil, errors.New("QMP not connected")
	}
	b, _ := json.Marshal(map[string]string{"execute": command})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	select {
	case r := <-vm.replies:
		if r.Error != nil {
			return nil, fmt.Errorf("QMP %s: %s: %s", command, r.Error.Class, r.Error.Desc)
		}
		return r.Return, nil
	case <-vm.exited:
		return nil, fmt.Errorf("QMP %s: qemu exited: %v", command, vm.exitErr())
	case <-ctx.Done():
		return nil, fmt.Errorf("QMP %s: %w", command, ctx.Err())
	}
}

// Status returns QMP's query-status "status": "running", "shutdown", ...
func (vm *QemuVM) Status(ctx context.Context) (string, error) {
	r, err := vm.execute(ctx, "query-status")
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	err = json.Unmarshal(r, &s)
	return s.Status, err
}

// Quit stops QEMU through QMP ("quit": the guest is not shut down; what it
// had not written is lost) and waits for it to exit.
func (vm *QemuVM) Quit(ctx context.Context) error {
	select {
	case <-vm.exited:
		return nil
	default:
	}
	if _, err := vm.execute(ctx, "quit"); err != nil {
		select {
		case <-vm.exited: // gone before its reply: that is a quit too
		default:
			return err
		}
	}
	select {
	case <-vm.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qemu did not exit after quit: %w", ctx.Err())
	}
}

// Kill cuts the power: SIGKILL to QEMU, then waits for it to be gone. The
// guest gets no warning; see StartQemu for what reaches the disk.
func (vm *QemuVM) Kill() {
	select {
	case <-vm.exited:
	default:
		vm.cmd.Process.Signal(syscall.SIGKILL)
		<-vm.exited
	}
	vm.mu.Lock()
	if vm.qmp != nil {
		vm.qmp.Close()
	}
	vm.mu.Unlock()
}

// Exited is closed when QEMU has exited.
func (vm *QemuVM) Exited() <-chan struct{} { return vm.exited }

// Wait waits for QEMU to exit by itself (a guest poweroff, with
// -action defaults) and returns its exit error.
func (vm *QemuVM) Wait(ctx context.Context) error {
	select {
	case <-vm.exited:
		return vm.exitErr()
	case <-ctx.Done():
		return fmt.Errorf("qemu still running: %w", ctx.Err())
	}
}

func (vm *QemuVM) exitErr() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.waitErr
}

// SerialLog returns the serial console's output so far.
func (vm *QemuVM) SerialLog() string {
	b, _ := os.ReadFile(vm.SerialPath)
	return string(b)
}

// WaitSerial waits until re matches the serial console's output after the
// previous match, and returns the match and its submatches (as
// FindStringSubmatch). It fails when ctx ends or QEMU exits first. The
// console is written a byte at a time: end re with \n to match whole lines
// only.
func (vm *QemuVM) WaitSerial(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		select {
		case <-vm.exited:
			// One last look: QEMU wrote everything before it exited.
			if m := vm.matchSerial(re); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("qemu exited (%v) before the serial console showed %q", vm.exitErr(), re)
		default:
		}
		if m := vm.matchSerial(re); m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %q on the serial console: %w", re, ctx.Err())
		case <-vm.exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (vm *QemuVM) matchSerial(re *regexp.Regexp) []string {
	log := vm.SerialLog()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.serialPos > len(log) {
		return nil
	}
	loc := re.FindStringSubmatchIndex(log[vm.serialPos:])
	if loc == nil {
		return nil
	}
	m := make([]string, len(loc)/2)
	for i := range m {
		if loc[2*i] >= 0 {
			m[i] = log[vm.serialPos+loc[2*i] : vm.serialPos+loc[2*i+1]]
		}
	}
	vm.serialPos += loc[1]
	return m
}

// guestStall is what the guest kernel prints when a CPU made no progress
// for 20 s or more (soft lockup, RCU stall).
var guestStall = regexp.MustCompile(`soft lockup - CPU#\d+ stuck|rcu: INFO: rcu_\w+ (self-detected )?stall|rcu_\w+ kthread starved`)

// GuestStalled reports whether the guest kernel has reported a stalled CPU
// on the console. Under TCG on an overloaded host a guest very rarely hangs
// this way while booting (both vCPUs spinning, seen about once in 150
// boots); it is the emulation's failure, not the software's under test, and
// tests may power-cycle the VM (Kill, StartQemu) and go on.
func (vm *QemuVM) GuestStalled() bool {
	return guestStall.MatchString(vm.SerialLog())
}

// Events returns the QMP events so far, oldest first.
func (vm *QemuVM) Events() []QemuEvent {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return slices.Clone(vm.events)
}

func (vm *QemuVM) eventNames() string {
	var names []string
	for _, e := range vm.Events() {
		names = append(names, e.Name+string(e.Data))
	}
	return strings.Join(names, " ")
}

// WaitEvent waits for the next QMP event called name after the previous one
// WaitEvent returned, and returns it. It fails when ctx ends or QEMU exits
// first.
func (vm *QemuVM) WaitEvent(ctx context.Context, name string) (QemuEvent, error) {
	for {
		vm.mu.Lock()
		for i := vm.eventPos; i < len(vm.events); i++ {
			if vm.events[i].Name == name {
				vm.eventPos = i + 1
				e := vm.events[i]
				vm.mu.Unlock()
				return e, nil
			}
		}
		vm.mu.Unlock()
		select {
		case <-ctx.Done():
			return QemuEvent{}, fmt.Errorf("waiting for QMP event %s (seen: %s): %w", name, vm.eventNames(), ctx.Err())
		case <-vm.exited:
			// The reader may still be draining the last events.
			time.Sleep(50 * time.Millisecond)
			vm.mu.Lock()
			found := slices.ContainsFunc(vm.events[vm.eventPos:], func(e QemuEvent) bool { return e.Name == name })
			vm.mu.Unlock()
			if !found {
				return QemuEvent{}, fmt.Errorf("qemu exited (%v) before QMP event %s (seen: %s)", vm.exitErr(), name, vm.eventNames())
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
}
