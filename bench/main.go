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
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
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
