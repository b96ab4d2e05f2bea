package main

// The daemon part of the benchmark: what `ota-agent run` costs while it
// idles between checks and for each check that finds nothing new. It starts
// the real daemon against an in-process server (plain HTTP, and HTTPS with
// a throwaway certificate chain the agent trusts through ca_file), lets the
// first check install a small release, then watches N unchanged checks:
//
//   - memory: VmRSS (split into RssAnon and RssFile) and VmHWM from
//     /proc/PID/status, a while after the first check and after the N-th;
//   - CPU: the delta over the N checks of the daemon's on-CPU time, from
//     /proc/PID/task/*/schedstat (nanoseconds) and from utime+stime in
//     /proc/PID/stat (clock ticks, 10 ms each: a cross-check);
//   - the wire: requests, their status and body bytes, connections, TCP
//     payload bytes both ways (TLS records included) and TLS handshakes,
//     full or resumed, as the server saw them;
//   - persistent storage: what the N checks wrote, as the daemon's
//     /proc/PID/io and as the state dir's own disk (a loop device) count it
//     (disk.go).
//
// The server closes idle connections after a short IdleTimeout, so each
// check opens a new connection, as on a board checking every 15 minutes
// (the agent's own idle timeout is 90 s). Variants: HTTPS with session
// tickets (resumed handshakes), HTTPS without (full handshakes), and both
// schemes with keep-alive (a long IdleTimeout: no handshake at all).

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Goals of the daemon table.
const goalIdleRSSMiB = 8.0

const (
	daemonProject  = "d"
	daemonApp      = "dapp"
	daemonFile     = "app.bin"
	daemonFileSize = 1 << 20 // the release the first check installs

	newConnIdle   = 300 * time.Millisecond // server IdleTimeout: a new connection per check (at most a third of the interval)
	keepAliveIdle = 10 * time.Minute       // server IdleTimeout: one connection for all checks
	userHZ        = 100                    // clock ticks per second in /proc/PID/stat (USER_HZ; 100 on Linux)
)

// daemonVariant is one server configuration the daemon checks against.
type daemonVariant struct {
	name      string
	tls       bool
	tickets   bool   // the server issues session tickets (resumption possible)
	keepAlive bool   // the server keeps idle connections (else it closes them quickly)
	godebug   string // added to the daemon's GODEBUG
}

var daemonVariants = []daemonVariant{
	{name: "http"},
	{name: "https", tls: true, tickets: true},
	{name: "https, no session tickets", tls: true},
	{name: "http, keep-alive", keepAlive: true},
	{name: "https, keep-alive", tls: true, tickets: true, keepAlive: true},
	// Go's TLS offers the post-quantum hybrid X25519MLKEM768 by default:
	// 1.2 KB of key share up and 1.1 KB down on every new connection.
	{name: "https, tlsmlkem=0", tls: true, tickets: true, godebug: "tlsmlkem=0"},
}

type memSample struct{ rss, hwm, anon, file int64 } // KiB

type cpuSample struct {
	ns    int64 // sum of the threads' sum_exec_runtime (schedstat)
	ticks int64 // utime + stime
}

// dcounts is what the server saw up to a moment.
type dcounts struct {
	counts
	full, resumed        int64
	status304, status200 int64
	conditional          int64
	other                int64 // any other status
}

func (a dcounts) sub(b dcounts) dcounts {
	return dcounts{
		counts: counts{a.requests - b.requests, a.body - b.body, a.conns - b.conns, a.sent - b.sent, a.recv - b.recv, a.busy - b.busy},
		full:   a.full - b.full, resumed: a.resumed - b.resumed,
		status304: a.status304 - b.status304, status200: a.status200 - b.status200,
		conditional: a.conditional - b.conditional, other: a.other - b.other,
	}
}

type daemonResult struct {
	v          daemonVariant
	checks     int           // unchanged checks measured
	first      memSample     // a while after the first check (the install)
	last       memSample     // a while after the last unchanged check
	cpu        cpuSample     // delta over the unchanged checks
	wire       dcounts       // delta over the unchanged checks
	install    dcounts       // the first check
	proto      string        // HTTP version of the last request
	late       int           // samples taken after the next check had begun
	settle     time.Duration // from the end of a check to a sample
	textRSS    int64         // KiB resident of the binary's r-xp and r--p mappings
	textRef    int64         // KiB of those the unchanged checks touched (-1: unknown)
	textMapped int64         // KiB size of those mappings
	io         ioSample      // written to storage over the unchanged checks
	ioFirst    ioSample      // of which by the first unchanged check
}

// daemonBench runs the daemon part.
type daemonBench struct {
	agent    string
	work     string
	checks   int
	interval time.Duration
	connIdle time.Duration // the server's IdleTimeout when it closes connections between checks
	runRoot  string        // where the runtime_dirs go: a tmpfs, as /run/ota-agent is on a board
	disk     *loopDisk     // where state_dir and app_dir go, if not nil: an ext4 of their own
	progress func(string, ...any)
}

func (b *bench) runDaemon() error {
	d := &daemonBench{agent: b.agent, work: filepath.Join(b.work, "daemon"), checks: b.daemonChecks, interval: b.daemonInterval,
		connIdle: min(newConnIdle, b.daemonInterval/3), progress: b.progress}
	if err := os.MkdirAll(d.work, 0o755); err != nil {
		return err
	}
	// Every check rewrites <runtime_dir>/<app>.json. On a board that is
	// /run, a tmpfs; creating the file on ext4 instead costs this VM about
	// a millisecond of CPU per check.
	d.runRoot = d.work
	for _, dir := range []string{os.Getenv("XDG_RUNTIME_DIR"), "/run", "/dev/shm"} {
		if fs, _, err := filesystem(dir); dir != "" && err == nil && fs == "tmpfs" {
			if tmp, err := os.MkdirTemp(dir, "ota-bench-run-"); err == nil {
				d.runRoot = tmp
				if !b.keep {
					defer os.RemoveAll(tmp)
				}
				break
			}
		}
	}
	// The state dirs on a disk of their own, so that what the device
	// writes is the daemon's doing.
	if os.Geteuid() == 0 {
		disk, err := newLoopDisk(d.work)
		if err != nil {
			d.progress("daemon: no loop device for the state dir (%v): sectors written are not measured", err)
		} else {
			d.disk = disk
			stopOnInterrupt(disk.close)
			defer disk.close()
		}
	} else {
		d.progress("daemon: not root: no loop device for the state dir, sectors written are not measured")
	}
	ca, chain, err := d.certs()
	if err != nil {
		return err
	}
	fmt.Printf("\n## The daemon: `ota-agent run`, idle and unchanged checks\n\n")
	fmt.Printf("- interval %v (±10%% jitter), %d unchanged checks per variant after a first check that installs a %d KiB release\n", d.interval, d.checks, daemonFileSize>>10)
	fmt.Printf("- memory and CPU sampled %v after a check ended (the next one starts at least %v after it)\n", settleOf(d.interval), time.Duration(0.9*float64(d.interval)))
	fmt.Printf("- the server closes idle connections after %v (keep-alive variants: %v); HTTPS: TLS 1.3, ECDSA P-256 chain of %d B (leaf + intermediate), root in ca_file, host an IP (no SNI)\n", d.connIdle, keepAliveIdle, chainLen(chain))
	runFS, _, _ := filesystem(d.runRoot)
	stateRoot := d.work
	if d.disk != nil {
		stateRoot = d.disk.String()
	}
	fmt.Printf("- state_dir and app_dir under %s, runtime_dir under %s (%s)\n", stateRoot, d.runRoot, runFS)
	fmt.Printf("- load average before: %s\n\n", loadAvg())
	var rs []*daemonResult
	for _, v := range daemonVariants {
		r, err := d.measure(v, ca, chain)
		if err != nil {
			return fmt.Errorf("daemon, %s: %w", v.name, err)
		}
		rs = append(rs, r)
	}
	printDaemonTable(rs, d.checks)
	fmt.Printf("Load average at the end: %s (on %d cores).\n", loadAvg(), runtime.NumCPU())
	return nil
}

func settleOf(interval time.Duration) time.Duration {
	return time.Duration(0.75 * float64(interval))
}

func chainLen(chain tls.Certificate) int {
	n := 0
	for _, c := range chain.Certificate {
		n += len(c)
	}
	return n
}

// measure runs one daemon against one server variant.
func (d *daemonBench) measure(v daemonVariant, caFile string, chain tls.Certificate) (*daemonResult, error) {
	dir, err := os.MkdirTemp(d.work, strings.NewReplacer(" ", "", ",", "-").Replace(v.name)+"-")
	if err != nil {
		return nil, err
	}
	root := filepath.Join(dir, "srv")
	if err := os.MkdirAll(filepath.Join(root, daemonProject), 0o755); err != nil {
		return nil, err
	}
	if err := randomFile(filepath.Join(root, daemonProject, "v1_"+daemonFile), daemonFileSize, 0xd); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, daemonProject, "version"), []byte("v1\n"), 0o644); err != nil {
		return nil, err
	}
	idle := d.connIdle
	if v.keepAlive {
		idle = keepAliveIdle
	}
	srv, err := startDaemonServer(root, v, idle, chain)
	if err != nil {
		return nil, err
	}
	defer srv.Close()

	scheme := "http"
	if v.tls {
		scheme = "https"
	}
	runDir := filepath.Join(d.runRoot, filepath.Base(dir))
	stateBase := dir
	if d.disk != nil {
		stateBase = filepath.Join(d.disk.dir, filepath.Base(dir))
	}
	cfg := fmt.Sprintf(`state_dir = %q
runtime_dir = %q
interval = %q

[[app]]
name = %q
host = %q
project = %q
files = [%q]
app_dir = %q
`, filepath.Join(stateBase, "state"), runDir, d.interval.String(), daemonApp, scheme+"://"+srv.Addr(), daemonProject, daemonFile, filepath.Join(stateBase, "app"))
	if v.tls {
		cfg += fmt.Sprintf("ca_file = %q\n", caFile)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()

	cmd := exec.Command(d.agent, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Not under systemd: no sd_notify socket, no watchdog.
	godebug := v.godebug
	for _, e := range os.Environ() {
		if g, ok := strings.CutPrefix(e, "GODEBUG="); ok && godebug != "" {
			godebug = g + "," + godebug
		} else if !strings.HasPrefix(e, "NOTIFY_SOCKET=") && !strings.HasPrefix(e, "WATCHDOG_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	if godebug != "" {
		cmd.Env = append(cmd.Env, "GODEBUG="+godebug)
	}
	d.progress("daemon, %s: starting `ota-agent run` (%v interval, %d checks)", v.name, d.interval, d.checks)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
	}
	defer stop()
	pid := cmd.Process.Pid
	logTail := func() string {
		b, _ := os.ReadFile(logf.Name())
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		return string(b)
	}

	r := &daemonResult{v: v, checks: d.checks, settle: settleOf(d.interval)}
	w := &statusWatcher{path: filepath.Join(runDir, daemonApp+".json"), exited: exited}
	deadline := d.interval*3 + 30*time.Second
	st, err := w.next(deadline)
	if err != nil {
		return nil, fmt.Errorf("first check: %w\n%s", err, logTail())
	}
	if st.Outcome != "updated" {
		return nil, fmt.Errorf("first check: outcome %q (%s), want updated\n%s", st.Outcome, st.Error, logTail())
	}
	// sample reads memory, CPU and the server's counts settle after the
	// check that just ended, and notes if the next one began meanwhile.
	sample := func() (memSample, cpuSample, dcounts, error) {
		before := srv.snapshot()
		time.Sleep(time.Until(w.seen.Add(r.settle)))
		m, err := readMem(pid)
		if err != nil {
			return m, cpuSample{}, dcounts{}, err
		}
		c, err := readCPU(pid)
		after := srv.snapshot()
		if after.requests != before.requests || w.changed() {
			r.late++
		}
		return m, c, after, err
	}
	m0, c0, s0, err := sample()
	if err != nil {
		return nil, err
	}
	r.first, r.install = m0, s0
	io0, err := d.readIO(pid)
	if err != nil {
		return nil, err
	}
	// Clear the pages' referenced bits, so the Referenced figures of
	// smaps after the checks say what they touched.
	clearedRefs := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("1"), 0) == nil
	for i := 0; i < d.checks; i++ {
		st, err := w.next(deadline)
		if err != nil {
			return nil, fmt.Errorf("check %d: %w\n%s", i+2, err, logTail())
		}
		if st.Outcome != "up-to-date" {
			return nil, fmt.Errorf("check %d: outcome %q (%s), want up-to-date\n%s", i+2, st.Outcome, st.Error, logTail())
		}
		if i == 0 {
			// The first read of what the install wrote may update an
			// atime (relatime): told apart from what every check writes.
			io, err := d.readIO(pid)
			if err != nil {
				return nil, err
			}
			r.ioFirst = io.sub(io0)
		}
	}
	m1, c1, s1, err := sample()
	if err != nil {
		return nil, err
	}
	r.last = m1
	io1, err := d.readIO(pid)
	if err != nil {
		return nil, err
	}
	r.io = io1.sub(io0)
	r.cpu = cpuSample{ns: c1.ns - c0.ns, ticks: c1.ticks - c0.ticks}
	r.wire = s1.sub(s0)
	r.proto = srv.lastProto()
	bin, err := filepath.EvalSymlinks(d.agent)
	if err != nil {
		bin = d.agent
	}
	r.textRSS, r.textRef, r.textMapped = readText(pid, bin)
	if !clearedRefs {
		r.textRef = -1
	}
	stop()
	d.progress("daemon, %s: RSS %.1f -> %.1f MiB (anon %.1f, file %.1f), HWM %.1f MiB, CPU %.2f ms/check, %d req, %d conns, %d+%d B, handshakes %d full %d resumed",
		v.name, kib2mib(r.first.rss), kib2mib(r.last.rss), kib2mib(r.last.anon), kib2mib(r.last.file), kib2mib(r.last.hwm),
		float64(r.cpu.ns)/1e6/float64(r.checks), r.wire.requests, r.wire.conns, r.wire.recv, r.wire.sent, r.wire.full, r.wire.resumed)
	return r, nil
}

// readIO reads what the daemon wrote so far, and, with a loop disk, what
// that disk wrote (after a syncfs).
func (d *daemonBench) readIO(pid int) (ioSample, error) {
	s, err := readIO(pid)
	if err != nil || d.disk == nil {
		return s, err
	}
	s.sectors, err = d.disk.sectors()
	return s, err
}

// ---- watching the daemon ----

// runStatus is the part of <runtime_dir>/<app>.json (store.Status) read here.
type runStatus struct {
	At      time.Time `json:"at"`
	Outcome string    `json:"outcome"`
	Error   string    `json:"error"`
}

// statusWatcher sees each check end: the daemon rewrites its status file
// (by rename) at the end of every check.
type statusWatcher struct {
	path   string
	last   time.Time // At of the last status seen
	seen   time.Time // when it was seen (within the poll period of the check's end)
	exited <-chan error
}

func (w *statusWatcher) read() (runStatus, bool) {
	var st runStatus
	b, err := os.ReadFile(w.path)
	if err != nil || json.Unmarshal(b, &st) != nil {
		return st, false
	}
	return st, true
}

// changed reports whether another check ended since the last next.
func (w *statusWatcher) changed() bool {
	st, ok := w.read()
	return ok && !st.At.Equal(w.last)
}

// next waits for the next check to end and returns its status.
func (w *statusWatcher) next(timeout time.Duration) (runStatus, error) {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		select {
		case err := <-w.exited:
			return runStatus{}, fmt.Errorf("the daemon exited: %v", err)
		default:
		}
		if st, ok := w.read(); ok && !st.At.Equal(w.last) {
			w.last, w.seen = st.At, time.Now()
			return st, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return runStatus{}, fmt.Errorf("no check ended within %v", timeout)
}

// ---- /proc ----
