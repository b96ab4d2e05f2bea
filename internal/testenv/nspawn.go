package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Exit statuses of systemd-nspawn --boot: why the container stopped.
const (
	NspawnPoweroff = 0   // poweroff, halt, or an orderly stop (Stop)
	NspawnReboot   = 133 // reboot: `systemctl reboot`, reboot.target, FailureAction=reboot*
)

// Bounds of a container's life in a test.
const (
	containerStartTimeout = 30 * time.Second // nspawn start until its systemd runs
	containerStopGrace    = 20 * time.Second // orderly poweroff until SIGKILL
	nsenterTimeout        = 2 * time.Minute  // one Exec without a deadline of its own
)

// ContainerOptions configures BootContainer.
type ContainerOptions struct {
	// Root is the container's root directory: a copy of a Rootfs made
	// with CopyTree, never the cached tree itself. It is booted read-write,
	// so what the container writes stays there and the next BootContainer
	// of the same Root (after this one stopped) sees it, as a disk does
	// across a reboot.
	Root string
	// BindRO and Bind are "HOST:CONTAINER" paths, as systemd-nspawn's
	// --bind-ro= and --bind= take them (a missing mount point is created).
	BindRO, Bind []string
}

// Container is a Debian booted with `systemd-nspawn --boot` for one test:
// its own cgroup, PID, mount, IPC, UTS and
// network namespaces (--private-network: only a loopback interface), a
// system bus reachable from the host, and its console in a file.
type Container struct {
	// Root is the booted directory (ContainerOptions.Root).
	Root string
	// Machine is the container's name (and host name), unique on the host.
	Machine string
	// BusDir is a host directory bound at the container's /run/dbus: its
	// system_bus_socket appears there once dbus runs inside.
	BusDir string
	// BusAddress is DBUS_SYSTEM_BUS_ADDRESS for host clients of the
	// container's system bus (go-systemd's NewSystemConnectionContext).
	BusAddress string
	// ConsolePath is the container's console (--console=pipe): systemd's
	// and nspawn's messages. Its tail is logged when the test fails.
	ConsolePath string
	// PID is the container's init (systemd, PID 1 inside) as the host sees
	// it: the target of nsenter.
	PID int

	dir     string
	cgroups []string
	cmd     *exec.Cmd
	exited  chan struct{}
	status  int // nspawn's exit status, or -1 when a signal ended it
	waitErr error
	stopped bool
}

var containerSeq atomic.Int64

// BootContainer starts `systemd-nspawn --boot` on o.Root, from a cgroup of
// its own (on the unified and, on a hybrid host, the name=systemd
// hierarchy), with --register=no --keep-unit (there is no machined here),
// --private-network, --console=pipe, a bus directory bound at /run/dbus,
// and o's binds. It returns once the container's systemd runs (before
// it booted: see WaitBooted). The container is stopped and its cgroups
// removed when the test ends (Stop).
//
// It needs Linux, root, cgroupfs, systemd-nspawn (Debian's
// systemd-container package) and nsenter; when any is missing or the
// container does not start, the test is skipped, or fails when CI is
// "true" (Require).
func BootContainer(t testing.TB, o ContainerOptions) *Container {
	t.Helper()
	Require(t, "systemd-nspawn (Linux only)", runtime.GOOS == "linux")
	Require(t, "systemd-nspawn (needs root)", os.Geteuid() == 0)
	nspawn, err := lookPathSbin("systemd-nspawn")
	Require(t, "systemd-nspawn (apt-get install --no-install-recommends systemd-container)", err == nil)
	_, err = lookPathSbin("nsenter")
	Require(t, "nsenter (util-linux)", err == nil)
	roots, err := cgroupRoots()
	Require(t, fmt.Sprintf("systemd-nspawn (%v)", err), err == nil)
	if o.Root == "" {
		t.Fatal("BootContainer: no Root")
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		t.Fatal(err)
	}

	c := &Container{Root: root, exited: make(chan struct{}), status: -1}
	if err := c.start(nspawn, roots, o); err != nil {
		c.Stop(t)
		Require(t, fmt.Sprintf("systemd-nspawn (%v)", err), false)
	}
	t.Cleanup(func() { c.Stop(t) })
	if err := c.findInit(); err != nil {
		Require(t, fmt.Sprintf("systemd-nspawn (%v; console:\n%s)", err, c.consoleTail()), false)
	}
	return c
}

// start lays out the bus directory and cgroups and starts nspawn.
func (c *Container) start(nspawn string, roots []string, o ContainerOptions) error {
	seq := containerSeq.Add(1)
	c.Machine = fmt.Sprintf("ota-test-%d-%d", os.Getpid(), seq)
	// A socket path is at most 108 bytes: keep the bus dir short.
	dir, err := os.MkdirTemp("/tmp", "ota-ns-")
	if err != nil {
		return err
	}
	c.dir = dir
	c.BusDir = filepath.Join(dir, "dbus")
	if err := os.Mkdir(c.BusDir, 0o755); err != nil {
		return err
	}
	c.BusAddress = "unix:path=" + filepath.Join(c.BusDir, "system_bus_socket")
	c.ConsolePath = filepath.Join(dir, "console.log")
	for _, r := range roots {
		cg := filepath.Join(r, c.Machine)
		if err := os.Mkdir(cg, 0o755); err != nil {
			return fmt.Errorf("own cgroup: %w", err)
		}
		c.cgroups = append(c.cgroups, cg)
	}

	args := []string{
		"-D", c.Root, "--boot", "--machine=" + c.Machine,
		// Without both, nspawn asks machined, which is not running, and
		// exits 1.
		"--register=no", "--keep-unit",
		"--private-network", "--console=pipe",
		"--bind=" + c.BusDir + ":/run/dbus",
	}
	for _, b := range o.BindRO {
		args = append(args, "--bind-ro="+b)
	}
	for _, b := range o.Bind {
		args = append(args, "--bind="+b)
	}
	var quoted []string
	for _, a := range append([]string{nspawn}, args...) {
		quoted = append(quoted, shellQuote(a))
	}
	var cgs []string
	for _, cg := range c.cgroups {
		cgs = append(cgs, shellQuote(filepath.Join(cg, "cgroup.procs")))
	}
	// The shell moves itself into the cgroups and execs nspawn, which
	// keeps its PID and so its cgroups.
	script := "set -e\nfor p in " + strings.Join(cgs, " ") + "; do echo $$ > \"$p\"; done\nexec " +
		strings.Join(quoted, " ") + "\n"

	console, err := os.Create(c.ConsolePath)
	if err != nil {
		return err
	}
	defer console.Close() // the child holds its own
	c.cmd = exec.Command("/bin/sh", "-c", script)
	c.cmd.Stdout, c.cmd.Stderr = console, console
	// A clean environment: nspawn passes none of it to the container, but
	// SYSTEMD_* variables would change how nspawn itself behaves.
	c.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if err := c.cmd.Start(); err != nil {
		return err
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		c.status = c.cmd.ProcessState.ExitCode()
		close(c.exited)
	}()
	return nil
}

// findInit waits for the container's init: the child of nspawn that runs
// systemd.
func (c *Container) findInit() error {
	deadline := time.Now().Add(containerStartTimeout)
	nspawnPID := c.cmd.Process.Pid
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("systemd-nspawn exited with status %d during start", c.status)
		default:
		}
		if pid := childNamed(nspawnPID, "systemd"); pid > 0 {
			c.PID = pid
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no systemd in the container after %v", containerStartTimeout)
}

// childNamed returns a child of parent whose command name is comm, or 0.
func childNamed(parent int, comm string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(string(b[rp+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) || string(b[lp+1:rp]) != comm {
			continue
		}
		return pid
	}
	return 0
}

// WaitBooted waits until the container's system bus is up and its systemd
// finished booting (`systemctl is-system-running --wait` inside), at most
// timeout, and returns the state: "running", or "degraded" when a unit
// failed. It fails the test if the container stops meanwhile, or the time
// runs out.
func (c *Container) WaitBooted(t testing.TB, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	socket := filepath.Join(c.BusDir, "system_bus_socket")
	for !fileExists(socket) {
		select {
		case <-c.exited:
			t.Fatalf("container %s stopped (status %d) before its system bus came up; console:\n%s", c.Machine, c.status, c.consoleTail())
		case <-ctx.Done():
			t.Fatalf("container %s: no system bus after %v; console:\n%s", c.Machine, timeout, c.consoleTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// is-system-running exits non-zero for every state but running, and
	// the host's own systemctl says "offline" (the host is not booted with
	// systemd): ask the container's, and read the state it prints.
	out, err := c.Exec(ctx, "systemctl", "is-system-running", "--wait")
	state := strings.TrimSpace(string(out))
	select {
	case <-c.exited:
		t.Fatalf("container %s stopped (status %d) while booting; console:\n%s", c.Machine, c.status, c.consoleTail())
	default:
	}
	if state != "running" && state != "degraded" {
		t.Fatalf("container %s: is-system-running = %q (%v) after boot; console:\n%s", c.Machine, state, err, c.consoleTail())
	}
	return state
}

// Command returns `nsenter -t PID -a name args...`: the command runs in
// every namespace of the container (its file system, PIDs, network, bus),
// as root, with a clean environment (PATH, HOME=/root, LANG=C.UTF-8), and in
// the test's cgroup rather than one of the container's units (see
// ScopeCommand for one that may outlive the container). ctx kills it.
func (c *Container) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.PID), "-a", name}, args...)...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
	}
	return cmd
}

// ScopeCommand is Command with the command in a transient scope unit of the
// container's systemd (`systemd-run --scope`), where a login session's
// commands are: the container's shutdown stops it with the other units
// (SIGTERM, SIGKILL after 90 s). Use it for a command that may still run
// when the container shuts down or reboots. A plain Command's process is in
// no unit, so only systemd-shutdown's final broadcast (SIGSTOP, SIGTERM,
// SIGCONT to every process) reaches it; nsenter, which waits for it from
// outside the container, then stops itself on seeing the SIGSTOP and never
// reaps it, and the shutdown waits 90 s for the zombie.
func (c *Container) ScopeCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return c.Command(ctx, "systemd-run", append([]string{"--scope", "--quiet", "--collect", "--", name}, args...)...)
}

// Exec runs a command in the container (see Command) and returns its
// standard output, and an error carrying its exit status and standard
// error when it fails.
func (c *Container) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := c.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), c.Machine, err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Run is Exec for commands that must succeed, within 2 minutes: it returns
// standard output without surrounding white space and fails the test
// otherwise.
func (c *Container) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nsenterTimeout)
	defer cancel()
	out, err := c.Exec(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// Exited is closed when systemd-nspawn has exited: the container stopped.
func (c *Container) Exited() <-chan struct{} { return c.exited }

// Wait waits at most timeout for the container to stop by itself and
// returns nspawn's exit status (NspawnReboot, NspawnPoweroff, or the
// status the container's systemd exited with). It fails the test when the
// time runs out (the container is then stopped by Stop at the end).
func (c *Container) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.exited: // first: a zero timeout is ready at once too
		return c.status
	default:
	}
	select {
	case <-c.exited:
		return c.status
	case <-time.After(timeout):
		t.Fatalf("container %s still running after %v; console:\n%s", c.Machine, timeout, c.consoleTail())
		return -1
	}
}

// Stop ends the container if it still runs: SIGTERM to nspawn, which asks
// the container's systemd for an orderly poweroff, then SIGKILL after 20 s.
// Then it kills whatever is left in the container's cgroups and removes
// them, and the bus directory. It logs the console's tail when the test
// failed. Safe to call more than once and on a partial start; BootContainer
// registers it with t.Cleanup.
func (c *Container) Stop(t testing.TB) {
	if c.stopped {
		return
	}
	c.stopped = true
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.exited:
			case <-time.After(containerStopGrace):
				t.Logf("container %s did not stop within %v of SIGTERM; killing it", c.Machine, containerStopGrace)
				c.cmd.Process.Kill()
				<-c.exited
			}
		}
	}
	if t.Failed() && c.ConsolePath != "" {
		t.Logf("container %s console (%s):\n%s", c.Machine, c.ConsolePath, c.consoleTail())
	}
	for _, cg := range c.cgroups {
		if err := removeCgroup(cg); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	}
	if c.Machine != "" {
		// nspawn removes it when it exits normally, not when killed.
		os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", c.Machine))
	}
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("remove %s: %v", c.dir, err)
		}
	}
}

// consoleTail is the end of the console log, for failure messages.
func (c *Container) consoleTail() string {
	b, err := os.ReadFile(c.ConsolePath)
	if err != nil {
		return err.Error()
	}
	return string(tail(b, 16<<10))
}
