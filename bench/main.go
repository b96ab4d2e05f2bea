// Command bench measures the real ota-agent binary against curl on this
// machine and prints a Markdown table: peak memory, wall time and CPU time
// of a full update for each release size, and what an up-to-date update and
// a check cost on the wire. It builds nothing: run `make build` first, or
// use bench/run, which does both.
//
//	go run ./bench [-agent bin/ota-agent] [-sizes 64,512] [-runs 3] [-dir DIR] [-keep]
//
// Everything happens on this machine: an in-process HTTP server on
// 127.0.0.1 serves release files from a temporary directory on a disk
// filesystem (not tmpfs), and the agent and curl both download from it over
// loopback. Each measured update switches between two releases (v1 <-> v2),
// so every run downloads, verifies, fsyncs and switches the whole file.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const project = "big"
const fileName = "blob.bin"

// Goals the table compares against.
const (
	goalRSSMiB    = 32.0
	goalWallRatio = 1.1
)

func main() {
	var (
		agentPath = flag.String("agent", "bin/ota-agent", "the ota-agent binary to measure (build it with `make build`)")
		sizesFlag = flag.String("sizes", "64,512", "release file sizes in MiB, comma-separated")
		runs      = flag.Int("runs", 3, "measured runs per size and tool; the table shows the median")
		parent    = flag.String("dir", "", "where to create the work directory (default $TMPDIR or /tmp; must not be tmpfs)")
		keep      = flag.Bool("keep", false, "keep the work directory (server files of the last size, each size's device dirs) instead of removing it")
		daemon    = flag.Bool("daemon", true, "after the update table, measure the daemon (`ota-agent run`): idle RSS, CPU and wire bytes per unchanged check")
		dChecks   = flag.Int("daemon-checks", 20, "unchanged checks the daemon part measures per variant")
		dInterval = flag.Duration("daemon-interval", 2*time.Second, "the daemon's check interval in the daemon part (memory is sampled at 3/4 of it after a check)")
	)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./bench [flags]\n\nMeasures bin/ota-agent (update, check) against curl+sync and prints a Markdown table.\n\n")
		flag.PrintDefaults()
	}
	if len(os.Args) > 2 && os.Args[1] == childFlag {
		childMain(os.Args[2:])
		return
	}
	flag.Parse()
	sizes, err := parseSizes(*sizesFlag)
	if err == nil && len(sizes) == 0 && !*daemon {
		err = errors.New("-sizes \"\" skips the update table, and -daemon=false the daemon's: nothing to do")
	}
	if err != nil || *runs < 1 || *dChecks < 1 || *dInterval < 100*time.Millisecond || flag.NArg() > 0 {
		if err == nil {
			err = errors.New("-runs and -daemon-checks must be at least 1, -daemon-interval at least 100ms, and there are no arguments")
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		flag.Usage()
		os.Exit(2)
	}
	b := &bench{sizes: sizes, runs: *runs, keep: *keep, daemon: *daemon, daemonChecks: *dChecks, daemonInterval: *dInterval}
	if err := b.run(*agentPath, *parent); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSuffix(f, "MiB"), "M"))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-sizes: %q is not a size in MiB", f)
		}
		out = append(out, n)
	}
	return out, nil // none: -sizes "" skips the update table
}

type bench struct {
	sizes []int
	runs  int
	keep  bool
	agent string // absolute path of the binary
	curl  string // "" when curl is missing
	work  string
	root  string // the server's document root
	srv   *server
	url   string

	// The daemon part (daemon.go).
	daemon         bool
	daemonChecks   int
	daemonInterval time.Duration
}

// sample is one measured process.
type sample struct {
	wall     time.Duration
	user     time.Duration
	sys      time.Duration
	maxRSS   int64 // KiB
	requests int64
	conns    int64
	body     int64         // response body bytes
	sent     int64         // bytes the server wrote (headers + bodies)
	recv     int64         // bytes the server read (requests)
	transfer time.Duration // time the server spent answering (request to last byte written)
	floor    int64         // KiB: the measuring helper's own peak RSS, below which maxRSS means nothing
}

func (s sample) String() string {
	return fmt.Sprintf("%.2f s (server busy %.2f s), peak RSS %.1f MiB, CPU %.2f s (user %.2f, sys %.2f)",
		s.wall.Seconds(), s.transfer.Seconds(), kib2mib(s.maxRSS), s.cpu().Seconds(), s.user.Seconds(), s.sys.Seconds())
}

func (s sample) cpu() time.Duration { return s.user + s.sys }

// sizeResult is everything measured for one release size.
type sizeResult struct {
	mib      int
	agent    []sample // full updates
	curl     []sample
	upToDate sample // update when nothing changed
	check    sample
}

func (b *bench) run(agentPath, parent string) error {
	var err error
	if b.agent, err = filepath.Abs(agentPath); err != nil {
		return err
	}
	if fi, err := os.Stat(b.agent); err != nil || fi.IsDir() {
		return fmt.Errorf("agent binary %s not found: run `make build` first, or use bench/run", agentPath)
	}
	agentVersion, _ := exec.Command(b.agent, "version").Output()
	if b.curl, err = exec.LookPath("curl"); err != nil {
		b.curl = ""
		fmt.Fprintln(os.Stderr, "bench: curl not found: the curl+sync baseline is skipped")
	}

	if parent == "" {
		parent = os.TempDir()
	}
	fsName, mnt, err := filesystem(parent)
	if err != nil {
		return err
	}
	if fsName == "tmpfs" || fsName == "ramfs" {
		fmt.Fprintf(os.Stderr, "bench: %s is %s (RAM): using /var/tmp so fsync and sync reach a disk\n", parent, fsName)
		parent = "/var/tmp"
		if fsName, mnt, err = filesystem(parent); err != nil {
			return err
		}
	}
	b.work, err = os.MkdirTemp(parent, "ota-bench-")
	if err != nil {
		return err
	}
	if b.keep {
		defer fmt.Fprintf(os.Stderr, "bench: work directory kept: %s\n", b.work)
	} else {
		defer os.RemoveAll(b.work)
	}
	// An interrupted run must not leave a gigabyte or a mounted loop
	// device behind either.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		interruptMu.Lock()
		for i := len(onInterrupt) - 1; i >= 0; i-- {
			onInterrupt[i]()
		}
		if !b.keep {
			os.RemoveAll(b.work)
			fmt.Fprintln(os.Stderr, "bench: interrupted; work directory removed")
		}
		os.Exit(130)
	}()
	b.root = filepath.Join(b.work, "srv")
	if err := os.MkdirAll(filepath.Join(b.root, project), 0o755); err != nil {
		return err
	}

	b.srv, err = startServer(b.root)
	if err != nil {
		return err
	}
	defer b.srv.Close()
	b.url = "http://" + b.srv.Addr()

	fmt.Printf("ota-agent benchmark, %s\n\n", time.Now().Format("2006-01-02 15:04 MST"))
	fmt.Printf("- agent: %s (%s)\n", agentPath, strings.TrimSpace(string(agentVersion)))
	fmt.Printf("- machine: %s, %d cores (nproc), %s RAM, %s %s, %s\n", cpuModel(), runtime.NumCPU(), memTotal(), runtime.GOOS, runtime.GOARCH, kernel())
	fmt.Printf("- work dir: %s on %s (%s, mounted on %s)\n", b.work, fsName, deviceOf(mnt), mnt)
	if len(b.sizes) > 0 {
		fmt.Printf("- server: net/http on %s, files served from disk (sendfile); agent and curl both read over loopback from it\n", b.url)
		fmt.Printf("- runs: %d per size and tool, alternating which goes first, median shown; sync before each; page cache not dropped (the release files are warm for both)\n", b.runs)
	}
	fmt.Printf("- load average at start: %s\n\n", loadAvg())

	var results []*sizeResult
	for _, mib := range b.sizes {
		r, err := b.measureSize(mib)
		if err != nil {
			return fmt.Errorf("%d MiB: %w", mib, err)
		}
		results = append(results, r)
	}
	if len(results) > 0 {
		b.printTable(results)
		fmt.Printf("Load average at the end: %s (on %d cores: a load above that makes every time figure noisy).\n", loadAvg(), runtime.NumCPU())
	}
	if b.daemon {
		return b.runDaemon()
	}
	return nil
}

var (
	interruptMu sync.Mutex
	onInterrupt []func()
)

// stopOnInterrupt registers f to run, last registered first, when the
// benchmark is interrupted (it then exits).
func stopOnInterrupt(f func()) {
	interruptMu.Lock()
	defer interruptMu.Unlock()
	onInterrupt = append(onInterrupt, f)
}

func (b *bench) progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
}

// measureSize publishes v1 and v2 of one file of mib MiB, installs v1, then
// alternates the published version so each measured update downloads the
// whole file; curl+sync fetches the same file just before or just after.
func (b *bench) measureSize(mib int) (*sizeResult, error) {
	r := &sizeResult{mib: mib}
	size := int64(mib) << 20
	proj := filepath.Join(b.root, project)
	b.progress("%d MiB: writing v1 and v2 of %s", mib, fileName)
	for i, tag := range []string{"v1", "v2"} {
		if err := randomFile(filepath.Join(proj, tag+"_"+fileName), size, uint64(mib)<<8|uint64(i)); err != nil {
			return nil, err
		}
	}
	dev := filepath.Join(b.work, fmt.Sprintf("dev-%d", mib))
	curlDir := filepath.Join(dev, "curl")
	if err := os.MkdirAll(curlDir, 0o755); err != nil {
		return nil, err
	}
	if !b.keep {
		// Free the disk before the next size.
		defer os.RemoveAll(dev)
		defer func() {
			for _, tag := range []string{"v1", "v2"} {
				os.Remove(filepath.Join(proj, tag+"_"+fileName))
			}
		}()
	}
	args := func(cmd string) []string {
		return []string{cmd, "--host", b.url, "--project", project, "--files", fileName,
			"--app-dir", filepath.Join(dev, "app"), "--state-dir", filepath.Join(dev, "state"),
			"--runtime-dir", filepath.Join(dev, "run"), "--log-level", "warn"}
	}

	// First install, not measured: it replaces nothing.
	tag := "v1"
	if err := b.publish(tag); err != nil {
		return nil, err
	}
	if _, err := b.runAgent(args("update"), 0); err != nil {
		return nil, fmt.Errorf("first install: %w", err)
	}
	agentRun := func(i int, tag string) error {
		s, err := b.runAgent(args("update"), 0)
		if err != nil {
			return fmt.Errorf("update to %s: %w", tag, err)
		}
		if err := b.verify(filepath.Join(dev, "app", fileName), tag); err != nil {
			return err
		}
		if want := size + int64(len(tag)+1); s.requests != 2 || s.body != want {
			b.progress("  note: the update made %d requests for %d body bytes (2 and %d expected)", s.requests, s.body, want)
		}
		r.agent = append(r.agent, s)
		b.progress("%d MiB run %d: update to %s  %s", mib, i+1, tag, s)
		return nil
	}
	curlRun := func(i int, tag string) error {
		c, err := b.runCurl(filepath.Join(curlDir, fileName), b.url+"/"+project+"/"+tag+"_"+fileName)
		if err != nil {
			return err
		}
		if err := b.verify(filepath.Join(curlDir, fileName), tag); err != nil {
			return err
		}
		r.curl = append(r.curl, c)
		b.progress("%d MiB run %d: curl+sync     %s", mib, i+1, c)
		return nil
	}
	for i := 0; i < b.runs; i++ {
		tag = map[string]string{"v1": "v2", "v2": "v1"}[tag]
		if err := b.publish(tag); err != nil {
			return nil, err
		}
		// Alternate who goes first, so neither always inherits the
		// other's leftovers (writeback, freed blocks).
		steps := []func(int, string) error{agentRun}
		if b.curl != "" {
			if i%2 == 0 {
				steps = append(steps, curlRun)
			} else {
				steps = []func(int, string) error{curlRun, agentRun}
			}
		}
		for _, step := range steps {
			if err := step(i, tag); err != nil {
				return nil, err
			}
		}
	}
	var err error
	if r.upToDate, err = b.runAgent(args("update"), 0); err != nil {
		return nil, fmt.Errorf("up-to-date update: %w", err)
	}
	if r.check, err = b.runAgent(args("check"), 0); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	return r, nil
}

// publish writes the version file the way an operator would: tag and a newline.
func (b *bench) publish(tag string) error {
	p := filepath.Join(b.root, project, "version")
	if err := os.WriteFile(p+".tmp", []byte(tag+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// verify checks that path holds the bytes of the published tag's file.
func (b *bench) verify(path, tag string) error {
	want := filepath.Join(b.root, project, tag+"_"+fileName)
	same, err := sameContent(path, want)
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("%s differs from %s", path, want)
	}
	return nil
}

// runAgent runs the agent once and measures it. want is the exit code expected.
func (b *bench) runAgent(args []string, want int) (sample, error) {
	return b.measure(exec.Command(b.agent, args...), want)
}

// runCurl is the baseline: download the file and sync it to disk, as one
// process tree (sh, curl, sync).
func (b *bench) runCurl(dst, url string) (sample, error) {
	os.Remove(dst) // truncating the previous copy is not part of the download
	return b.measure(exec.Command("sh", "-c", `curl -sS -o "$1" "$2" && sync`, "sh", dst, url), 0)
}

// measure runs cmd after a sync (so no dirty page of an earlier step is
// written back on its time) and returns its wall time, CPU time, peak RSS
// and what the server saw meanwhile.
//
// cmd runs under a copy of this program (see childMain): Go starts
// children with vfork, and Linux then folds the parent's peak RSS into the
// child's ru_maxrss, so a child started from here directly would report at
// least this process's peak. The helper is small and fresh; its own peak
// is reported as the floor.
func (b *bench) measure(cmd *exec.Cmd, want int) (sample, error) {
	self, err := os.Executable()
	if err != nil {
		return sample{}, err
	}
	helper := exec.Command(self, append([]string{childFlag}, cmd.Args...)...)
	helper.Path = self
	var stdout, stderr bytes.Buffer
	helper.Stdout, helper.Stderr = &stdout, &stderr
	syscall.Sync()
	before := b.srv.snapshot()
	err = helper.Run()
	after := b.srv.snapshot()
	var res childResult
	if err != nil || json.Unmarshal(stdout.Bytes(), &res) != nil {
		return sample{}, fmt.Errorf("measuring %s: %v\n%s%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	if res.Exit != want {
		return sample{}, fmt.Errorf("%s: exit %d, want %d\n%s", strings.Join(cmd.Args, " "), res.Exit, want, stderr.String())
	}
	return sample{
		wall:     time.Duration(res.WallNs),
		user:     time.Duration(res.UserNs),
		sys:      time.Duration(res.SysNs),
		maxRSS:   res.MaxRSS,
		floor:    res.Floor,
		requests: after.requests - before.requests,
		conns:    after.conns - before.conns,
		body:     after.body - before.body,
		sent:     after.sent - before.sent,
		recv:     after.recv - before.recv,
		transfer: time.Duration(after.busy - before.busy),
	}, nil
}

// childFlag, as the first argument, makes this program the measuring helper.
const childFlag = "-measure-child"

type childResult struct {
	Exit   int   `json:"exit"`
	WallNs int64 `json:"wall_ns"`
	UserNs int64 `json:"user_ns"`
	SysNs  int64 `json:"sys_ns"`
	MaxRSS int64 `json:"maxrss_kib"`
	Floor  int64 `json:"floor_kib"`
}

// childMain runs args, its stdout discarded and its stderr passed on, and
// prints its exit code, wall time, CPU times and peak RSS as JSON.
func childMain(args []string) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	floor := vmHWM()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	json.NewEncoder(os.Stdout).Encode(childResult{
		Exit:   cmd.ProcessState.ExitCode(),
		WallNs: int64(wall),
		UserNs: ru.Utime.Nano(),
		SysNs:  ru.Stime.Nano(),
		MaxRSS: int64(ru.Maxrss),
		Floor:  floor,
	})
}

// vmHWM is this process's own peak RSS in KiB (ru_maxrss would include the
// parent's, for the reason above).
func vmHWM() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// ---- the server ----

// server serves root over HTTP/1.1 on 127.0.0.1 and counts what it does:
// requests and response body bytes (at the ResponseWriter), and every
// byte written to and read from its connections (at the net.Conn), so
// header bytes are exact: sent - body.
type server struct {
	ln                net.Listener
	hs                *http.Server
	requests, body    atomic.Int64
	conns, sent, recv atomic.Int64
	busy              atomic.Int64 // nanoseconds spent in the handler
}

type counts struct{ requests, body, conns, sent, recv, busy int64 }

func startServer(root string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{}
	s.ln = &countingListener{Listener: ln, s: s}
	s.hs = &http.Server{Handler: s.handler(root), ReadHeaderTimeout: 10 * time.Second}
	go s.hs.Serve(s.ln)
	return s, nil
}

func (s *server) Addr() string { return s.ln.Addr().String() }
func (s *server) Close() error { return s.hs.Close() }

func (s *server) snapshot() counts {
	return counts{s.requests.Load(), s.body.Load(), s.conns.Load(), s.sent.Load(), s.recv.Load(), s.busy.Load()}
}

func (s *server) handler(root string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.requests.Add(1)
		cw := &countingWriter{ResponseWriter: w, s: s}
		http.ServeFile(cw, r, filepath.Join(root, filepath.FromSlash(path.Clean("/"+r.URL.Path))))
		s.busy.Add(int64(time.Since(start)))
	})
}

// countingWriter counts response body bytes. It keeps ReadFrom, so the
// server still uses sendfile and spends no CPU copying the file.
type countingWriter struct {
	http.ResponseWriter
	s *server
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.s.body.Add(int64(n))
	return n, err
}

func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := w.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	w.s.body.Add(n)
	return n, err
}

type countingListener struct {
	net.Listener
	s *server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.conns.Add(1)
	return &countingConn{Conn: c, s: l.s}, nil
}

// countingConn counts bytes both ways. ReadFrom passes through to the TCP
// connection, which sends a file with sendfile(2).
type countingConn struct {
	net.Conn
	s *server
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.recv.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.s.sent.Add(int64(n))
	return n, err
}

func (c *countingConn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.Conn.(io.ReaderFrom).ReadFrom(r)
	c.s.sent.Add(n)
	return n, err
}

// ---- files ----

// randomFile writes size pseudo-random bytes (incompressible, reproducible
// from seed) to path and fsyncs it.
func randomFile(path string, size int64, seed uint64) error {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	src := rand.NewChaCha8(key)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		src.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra != nil || errb != nil {
			if (erra == io.EOF || erra == io.ErrUnexpectedEOF) && (errb == io.EOF || errb == io.ErrUnexpectedEOF) {
				return true, nil
			}
			return false, errors.Join(erra, errb)
		}
	}
}

// ---- the machine ----

// filesystem names the filesystem type of dir and its mount point, from
// the longest matching mount point in /proc/self/mounts.
func filesystem(dir string) (fsType, mountPoint string, err error) {
	abs, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", "", err
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "unknown", "/", nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		mp := unescapeMount(fields[1])
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(mountPoint) {
			mountPoint, fsType = mp, fields[2]
		}
	}
	if mountPoint == "" {
		return "unknown", "/", nil
	}
	return fsType, mountPoint, nil
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func deviceOf(mountPoint string) string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "?"
	}
	dev := "?"
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && unescapeMount(f[1]) == mountPoint {
			dev = f[0]
		}
	}
	return dev
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "? GiB"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown kernel"
	}
	return "Linux " + strings.TrimSpace(string(b))
}

// ---- the table ----

func kib2mib(k int64) float64 { return float64(k) / 1024 }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func med(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return median(xs)
}

func wallOf(s sample) float64 { return s.wall.Seconds() }
func cpuOf(s sample) float64  { return s.cpu().Seconds() }
func userOf(s sample) float64 { return s.user.Seconds() }
func sysOf(s sample) float64  { return s.sys.Seconds() }
func rssOf(s sample) float64  { return kib2mib(s.maxRSS) }
func transferOf(s sample) float64 {
	return s.transfer.Seconds()
}

func (b *bench) printTable(rs []*sizeResult) {
	var verdicts []string
	row := func(measure string, goal string, cell func(r *sizeResult) string) {
		cells := []string{measure}
		for _, r := range rs {
			cells = append(cells, cell(r))
		}
		cells = append(cells, goal)
		fmt.Printf("| %s |\n", strings.Join(cells, " | "))
	}
	head := []string{"measure"}
	for _, r := range rs {
		head = append(head, fmt.Sprintf("%d MiB", r.mib))
	}
	head = append(head, "goal")
	fmt.Printf("| %s |\n", strings.Join(head, " | "))
	fmt.Printf("|%s\n", strings.Repeat("---|", len(head)))

	// Memory.
	row("peak RSS of update", fmt.Sprintf("< %.0f MiB, flat", goalRSSMiB), func(r *sizeResult) string {
		v := med(r.agent, rssOf)
		if v >= goalRSSMiB {
			verdicts = append(verdicts, fmt.Sprintf("MISSED: peak RSS of update at %d MiB is %.1f MiB (goal < %.0f MiB)", r.mib, v, goalRSSMiB))
		}
		return fmt.Sprintf("%.1f MiB", v)
	})
	if len(rs) > 1 {
		lo, hi := med(rs[0].agent, rssOf), med(rs[len(rs)-1].agent, rssOf)
		if hi > lo*1.25+2 {
			verdicts = append(verdicts, fmt.Sprintf("MISSED: peak RSS grows with the file: %.1f MiB at %d MiB, %.1f MiB at %d MiB (goal: flat)", lo, rs[0].mib, hi, rs[len(rs)-1].mib))
		}
	}
	if b.curl != "" {
		row("peak RSS of curl+sync", "(reference)", func(r *sizeResult) string { return fmt.Sprintf("%.1f MiB", med(r.curl, rssOf)) })
	}

	// Time.
	if b.curl != "" {
		row("wall time update / curl+sync", fmt.Sprintf("<= %.1fx", goalWallRatio), func(r *sizeResult) string {
			a, c := med(r.agent, wallOf), med(r.curl, wallOf)
			ratio := a / c
			if ratio > goalWallRatio {
				verdicts = append(verdicts, fmt.Sprintf("MISSED: update takes %.2fx curl+sync at %d MiB (goal <= %.1fx)", ratio, r.mib, goalWallRatio))
			}
			return fmt.Sprintf("%.2f s / %.2f s (%.2fx)", a, c, ratio)
		})
		row("of which the server was sending: update / curl", "(reference)", func(r *sizeResult) string {
			return fmt.Sprintf("%.2f s / %.2f s", med(r.agent, transferOf), med(r.curl, transferOf))
		})
		row("throughput update / curl+sync", "(reference)", func(r *sizeResult) string {
			return fmt.Sprintf("%.0f / %.0f MiB/s", float64(r.mib)/med(r.agent, wallOf), float64(r.mib)/med(r.curl, wallOf))
		})
	} else {
		row("wall time update / curl+sync", fmt.Sprintf("<= %.1fx", goalWallRatio), func(r *sizeResult) string {
			return fmt.Sprintf("%.2f s / curl not found", med(r.agent, wallOf))
		})
	}
	row("CPU time of update (user + sys)", "(reference)", func(r *sizeResult) string {
		return fmt.Sprintf("%.2f s (%.2f + %.2f)", med(r.agent, cpuOf), med(r.agent, userOf), med(r.agent, sysOf))
	})
	if b.curl != "" {
		row("CPU time of curl+sync (user + sys)", "(reference)", func(r *sizeResult) string {
			return fmt.Sprintf("%.2f s (%.2f + %.2f)", med(r.curl, cpuOf), med(r.curl, userOf), med(r.curl, sysOf))
		})
	}

	// Wire.
	row("requests / body bytes of an update", "2 / file + version", func(r *sizeResult) string {
		s := r.agent[len(r.agent)-1]
		return fmt.Sprintf("%d / %d B", s.requests, s.body)
	})
	wire := func(name string, pick func(*sizeResult) sample) {
		row("requests / body bytes of "+name, "1 / version body", func(r *sizeResult) string {
			s := pick(r)
			if s.requests != 1 {
				verdicts = append(verdicts, fmt.Sprintf("MISSED: %s made %d requests at %d MiB (goal 1)", name, s.requests, r.mib))
			}
			return fmt.Sprintf("%d / %d B", s.requests, s.body)
		})
		row("response header / request bytes of "+name, "(reference)", func(r *sizeResult) string {
			s := pick(r)
			return fmt.Sprintf("%d B / %d B (%d conn)", s.sent-s.body, s.recv, s.conns)
		})
		row("wall time / peak RSS of "+name, "(reference)", func(r *sizeResult) string {
			s := pick(r)
			return fmt.Sprintf("%.0f ms / %.1f MiB", s.wall.Seconds()*1000, kib2mib(s.maxRSS))
		})
	}
	wire("an up-to-date update", func(r *sizeResult) sample { return r.upToDate })
	wire("a check", func(r *sizeResult) sample { return r.check })

	fmt.Println()
	var floor int64
	for _, r := range rs {
		for _, s := range append(slices.Clone(r.agent), r.curl...) {
			floor = max(floor, s.floor)
		}
	}
	fmt.Printf("Peak RSS is ru_maxrss of the process tree, taken by a small helper process; a figure at or below its own peak (%.1f MiB) only says \"at most that\".\n", kib2mib(floor))
	switch {
	case len(verdicts) == 0 && b.curl == "":
		fmt.Println("Goals met, but the wall-time goal was not checked: curl not found.")
	case len(verdicts) == 0:
		fmt.Println("All goals met.")
	case b.curl == "":
		fmt.Println("Wall-time goal not checked: curl not found.")
	}
	for _, v := range verdicts {
		fmt.Println(v)
	}
}
