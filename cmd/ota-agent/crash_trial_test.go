package main

// Crashes during a trial's commit and during a rollback (issue 12), against
// the real binary built with -tags faultinject (see crash_test.go): the
// agent is killed at each durable step of
//
//   - `ota-agent rollback --to v1` from v2 (the switch back, by hand);
//   - an update to v2 whose health_command fails (no unit, reset = "none"):
//     the switch to v2 with its trial, the verdict, the switch back to v1
//     and v2 marked bad (the automatic rollback);
//   - an update to v2 whose health_command passes: the switch with its
//     trial, then the commit.
//
// After each kill the app dir holds one whole release (in-place: or a mix
// while a journal is there to finish it), state.json parses and names the
// release in place; the next start completes the operation: `recover` then
// the operator's `rollback --to` again for the rollback by hand, and the
// daemon (`ota-agent run`, which judges a trial it finds open) for the
// others. In the end the app dir is exactly the release the operation
// leads to, state.json lists it, no trial is open, and the rolled-back
// release is marked bad.
//
// A rollback in symlink mode adds two steps to crash_test.go's table:
//
//	set aside kept release    releases/<v> -> releases/.<v>.ota-kept,      fsync dir releases
//	                          once staged, before the switch removes
//	                          releases/<v> and moves the staged copy there
//	put back kept release     the reverse, at the next rollback's start,   fsync dir releases
//	                          if a crash left releases/<v> missing

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/store"
)

// crashTrialDaemonTimeout bounds the daemon's completion of an interrupted
// trial: a judgement (trial 50 ms, polled every 500 ms), a rollback, and
// its first check (1 s interval).
const crashTrialDaemonTimeout = 30 * time.Second

// crashTrialFlags is a trial judged by a health command alone: the app
// has no unit, reset = "none". The command passes when main.py is
// release want's (crashBody lines start with the version).
func crashTrialFlags(want string) []string {
	return []string{"--trial", "50ms", "--health-grace", "1ms", "--health-timeout", "10s",
		"--health-command", "/bin/grep", "--health-command", "-q",
		"--health-command", "^" + want + " main.py", "--health-command", "main.py"}
}

// A crashTrialScenario is an operation on a device at v2 (installed from
// v1, no trial) or at v1, killed at each of its durable steps.
type crashTrialScenario struct {
	name string
	mode store.Mode
	// at is the release installed before the operation; v1 only, or v1
	// then v2.
	at string
	// verb and args are the operation: `update` (with trial flags) or
	// `rollback --to v1`.
	verb string
	args []string
	// exit is the operation's exit code when nothing kills it.
	exit int
	// want is the release installed in the end; bad the release marked
	// bad by then ("" for none).
	want, bad string
	// byHand: the operator completes it (`recover`, then the same command
	// again if it had not switched yet); otherwise the daemon does.
	byHand bool
}

var crashTrialScenarios = []crashTrialScenario{
	{name: "rollback-to/in-place", mode: store.InPlace, at: "v2", verb: "rollback", args: []string{"--to", "v1"}, want: "v1", bad: "v2", byHand: true},
	{name: "rollback-to/symlink", mode: store.Symlink, at: "v2", verb: "rollback", args: []string{"--to", "v1"}, want: "v1", bad: "v2", byHand: true},
	{name: "auto-rollback/in-place", mode: store.InPlace, at: "v1", verb: "update", args: crashTrialFlags("v1"), exit: 1, want: "v1", bad: "v2"},
	{name: "auto-rollback/symlink", mode: store.Symlink, at: "v1", verb: "update", args: crashTrialFlags("v1"), exit: 1, want: "v1", bad: "v2"},
	{name: "commit/in-place", mode: store.InPlace, at: "v1", verb: "update", args: crashTrialFlags("v2"), want: "v2"},
	{name: "commit/symlink", mode: store.Symlink, at: "v1", verb: "update", args: crashTrialFlags("v2"), want: "v2"},
}

// crashTrialBefore is what the in-place app dir holds besides the
// releases: never touched by a switch, forward or back.
var crashTrialBefore = map[string]string{"settings.toml": "the user's", "data/db.txt": "the app's data"}

// trees returns the app dir's tree with v1 and with v2 installed on d.
func (sc crashTrialScenario) trees(t *testing.T, d *crashDevice) map[string]map[string]string {
	t.Helper()
	if sc.mode == store.Symlink {
		return map[string]map[string]string{"v1": crashOverlay(nil, "", "v1"), "v2": crashOverlay(nil, "", "v2")}
	}
	base := map[string]string{}
	for p, c := range crashTrialBefore {
		base[p] = crashFileDesc(0o644, c)
		for dir := filepath.Dir(p); dir != "."; dir = filepath.Dir(dir) {
			base[dir] = "dir"
		}
	}
	v1 := crashOverlay(base, "", "v1")
	return map[string]map[string]string{"v1": v1, "v2": crashOverlay(v1, "v1", "v2")}
}

// op is the operation under test, with OTA_AGENT_* settings in env.
func (sc crashTrialScenario) op(d *crashDevice, env ...string) (*exec.Cmd, *bytes.Buffer) {
	c, out := d.cmd(sc.verb, "v2", env...)
	c.Args = append(c.Args, sc.args...)
	return c, out
}

// crashTrialWorkers is how many kills of a scenario run at once: most of
// the time goes to the daemon's waits, not the CPU.
const crashTrialWorkers = 4

// firstKill is the step before the first one killed at: for an update,
// the write of state.json that ends its switch and opens the trial (the
// download and the switch before it are TestPowerCut's); for a rollback
// by hand, none.
func (sc crashTrialScenario) firstKill(steps []string) int {
	if sc.verb != "update" {
		return 0
	}
	for i, s := range steps {
		if s == "write state.json" {
			return i
		}
	}
	return len(steps)
}

func TestPowerCutTrial(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent and runs it a few hundred times")
	}
	faulty := buildAgentBinary(t, t.TempDir(), "ota-agent-faultinject", "faultinject")
	rs := newCrashServer(t)

	for _, sc := range crashTrialScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			project := "trial-" + strings.ReplaceAll(sc.name, "/", "-")
			tmpl := &crashDevice{bin: faulty, root: filepath.Join(t.TempDir(), "tmpl"), project: project, mode: sc.mode, host: rs.URL}
			before := crashScenario{mode: sc.mode, from: "v1"}
			if sc.mode == store.InPlace {
				before.before = crashTrialBefore
			}
			before.prepare(t, tmpl, rs)
			if sc.at == "v2" {
				rs.publish(project, "v2")
				tmpl.run(t, "update", "v2")
			}
			// The server names v2 from now on: the bad release, or the
			// one to commit.
			rs.publish(project, "v2")
			trees := sc.trees(t, tmpl)
			if now, err := crashTree(tmpl.appDir()); err != nil || !crashEqual(now, trees[sc.at]) {
				t.Fatalf("prepared device: the app dir is not %s (%v):%s", sc.at, err, crashDiff(now, trees[sc.at]))
			}

			count := *tmpl
			count.root = filepath.Join(t.TempDir(), "count")
			if err := crashCopy(tmpl.root, count.root); err != nil {
				t.Fatal(err)
			}
			log := filepath.Join(t.TempDir(), "steps")
			c, out := sc.op(&count, "OTA_AGENT_STEPS="+log)
			if err := c.Run(); crashExit(err) != sc.exit {
				t.Fatalf("%s = %v, want exit %d; output:\n%s", strings.Join(c.Args[1:2], " "), err, sc.exit, out)
			}
			sc.checkDone(t, &count, trees, "without a kill")
			steps := readStepLog(t, log)
			first := sc.firstKill(steps)
			t.Logf("%s: %d durable steps, killed at steps %d..%d", sc.name, len(steps), first+1, len(steps))

			// Subtests run from a few goroutines at once, not t.Parallel:
			// -parallel (GOMAXPROCS) would run two at a time.
			kills := make(chan int)
			var wg sync.WaitGroup
			for range crashTrialWorkers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := range kills {
						sc.kill(t, tmpl, trees, n, steps)
					}
				}()
			}
			for n := first + 1; n <= len(steps); n++ {
				kills <- n
			}
			close(kills)
			wg.Wait()
		})
	}
}

// kill runs the operation on a copy of tmpl, killed at step n, and checks
// the device after the kill and after the next start.
func (sc crashTrialScenario) kill(t *testing.T, tmpl *crashDevice, trees map[string]map[string]string, n int, steps []string) {
	name := fmt.Sprintf("%03d-%s", n, strings.ReplaceAll(crashStepName(steps, n), " ", "_"))
	t.Run(name, func(t *testing.T) {
		d := *tmpl
		d.root = filepath.Join(t.TempDir(), "dev")
		if err := crashCopy(tmpl.root, d.root); err != nil {
			t.Fatal(err)
		}
		c, out := sc.op(&d, "OTA_AGENT_CRASH_AT="+strconv.Itoa(n))
		if err := c.Run(); !killedBySIGKILL(err) {
			t.Fatalf("%s with a crash at step %d = %v, want killed by SIGKILL; output:\n%s", sc.verb, n, err, out)
		}
		sc.checkKilled(t, &d, trees, "after the kill")
		if sc.byHand {
			sc.completeByHand(t, &d, trees)
		} else {
			sc.completeByDaemon(t, &d)
		}
		sc.checkDone(t, &d, trees, "after the next start")
	})
}

// crashExit is a finished command's exit code (-1 if it did not exit).
func crashExit(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

func crashJournal(d *crashDevice) bool {
	_, err := os.Lstat(filepath.Join(d.stateDir(), "journal"))
	return err == nil
}

// checkKilled checks the device as a kill left it: state.json parses and
// names v1 or v2; the app dir is that release's tree, or, in-place, with
// a journal to finish it, a mix in which every file of both releases is
// one release's whole file.
func (sc crashTrialScenario) checkKilled(t *testing.T, d *crashDevice, trees map[string]map[string]string, when string) {
	t.Helper()
	st, ok := d.state(t, when)
	if !ok || (st.Version != "v1" && st.Version != "v2") {
		t.Fatalf("%s: state.json names %q (present: %v), want v1 or v2", when, st.Version, ok)
	}
	now, err := crashTree(d.appDir())
	if err != nil {
		t.Fatalf("%s: app dir: %v", when, err)
	}
	journal := crashJournal(d)
	if crashEqual(now, trees["v1"]) || crashEqual(now, trees["v2"]) {
		if !journal && !crashEqual(now, trees[st.Version]) {
			t.Fatalf("%s: state.json names %s, the app dir holds the other release, and no journal is left:%s", when, st.Version, crashDiff(now, trees[st.Version]))
		}
		return
	}
	if sc.mode == store.Symlink || !journal {
		t.Fatalf("%s: the app dir is neither v1 nor v2 (journal: %v):\n  against v1:%s\n  against v2:%s", when, journal,
			crashDiff(now, trees["v1"]), crashDiff(now, trees["v2"]))
	}
	for p, a := range trees["v1"] {
		if b, ok := trees["v2"][p]; ok && a != "dir" && b != "dir" && now[p] != a && now[p] != b {
			t.Fatalf("%s: mid-switch %s = %q, want v1's %q or v2's %q", when, p, now[p], a, b)
		}
	}
}

// completeByHand is what an operator does after the crash of `rollback
// --to`: the recover unit runs at boot (or `recover` by hand), which
// leaves one whole release; if that is still the one left, the same
// command again.
func (sc crashTrialScenario) completeByHand(t *testing.T, d *crashDevice, trees map[string]map[string]string) {
	t.Helper()
	d.run(t, "recover", "v1")
	if crashJournal(d) {
		t.Fatalf("after recover: the journal is still there")
	}
	st, _ := d.state(t, "after recover")
	now, err := crashTree(d.appDir())
	if err != nil || !crashEqual(now, trees[st.Version]) {
		t.Fatalf("after recover: state.json names %q, the app dir is not that release (%v):%s", st.Version, err, crashDiff(now, trees[st.Version]))
	}
	d.checkState(t, "after recover", st.Version)
	if st.Version != sc.want {
		c, out := sc.op(d)
		if err := c.Run(); err != nil {
			t.Fatalf("after recover at %s: %s again = %v, want exit 0; output:\n%s", st.Version, strings.Join(c.Args[1:2], " "), err, out)
		}
	}
}

// completeByDaemon starts the daemon, which judges a trial it finds open
// (and updates at its first check, if the kill came before the switch),
// and stops it once the device is where the operation leads.
func (sc crashTrialScenario) completeByDaemon(t *testing.T, d *crashDevice) {
	t.Helper()
	c, _ := d.cmd("run", "v2")
	c.Args = append(c.Args, append([]string{"--interval", "1s"}, sc.args...)...)
	out := &crashTrialOutput{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.After(crashTrialDaemonTimeout)
	for {
		select {
		case err := <-exited:
			t.Fatalf("the daemon exited (%v) before completing; output:\n%s", err, out)
		case <-deadline:
			c.Process.Signal(syscall.SIGKILL)
			<-exited
			st, _ := d.state(t, "daemon timed out")
			t.Fatalf("the daemon did not complete within %v: state.json at %s, trial %+v, bad %+v, journal %v; output:\n%s",
				crashTrialDaemonTimeout, st.Version, st.Trial, st.Bad, crashJournal(d), out)
		case <-time.After(50 * time.Millisecond):
		}
		// Stopped before it handles signals, it would die of SIGTERM.
		if strings.Contains(out.String(), "daemon running") && sc.done(t, d) {
			break
		}
	}
	c.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the daemon = %v after SIGTERM, want exit 0; output:\n%s", err, out)
		}
	case <-time.After(10 * time.Second):
		c.Process.Signal(syscall.SIGKILL)
		t.Fatalf("the daemon did not stop within 10s of SIGTERM; output:\n%s", out)
	}
}

// done reports whether state.json says the operation is complete.
func (sc crashTrialScenario) done(t *testing.T, d *crashDevice) bool {
	if _, err := os.Stat(filepath.Join(d.stateDir(), "state.json")); errors.Is(err, fs.ErrNotExist) || crashJournal(d) {
		return false
	}
	st, ok := d.state(t, "while the daemon runs")
	if !ok || st.Version != sc.want || st.Trial != nil {
		return false
	}
	_, bad := st.BadMark(sc.bad)
	return sc.bad == "" || bad
}

// checkDone checks the end: the app dir is exactly release want, state.json
// lists it, no trial is open and no journal left, bad is marked bad with
// the rollback recorded, and an update while the server names bad changes
// nothing.
func (sc crashTrialScenario) checkDone(t *testing.T, d *crashDevice, trees map[string]map[string]string, when string) {
	t.Helper()
	now, err := crashTree(d.appDir())
	if err != nil || !crashEqual(now, trees[sc.want]) {
		t.Fatalf("%s: the app dir is not %s (%v):%s", when, sc.want, err, crashDiff(now, trees[sc.want]))
	}
	if crashJournal(d) {
		t.Fatalf("%s: a journal is left", when)
	}
	d.checkState(t, when, sc.want)
	st, _ := d.state(t, when)
	if st.Trial != nil {
		t.Errorf("%s: a trial is still open: %+v", when, *st.Trial)
	}
	mark, marked := st.BadMark("v2")
	switch {
	case sc.bad == "" && len(st.Bad) > 0:
		t.Errorf("%s: bad versions %+v, want none", when, st.Bad)
	case sc.bad != "" && !marked:
		t.Errorf("%s: %s is not marked bad: %+v", when, sc.bad, st.Bad)
	case sc.bad != "" && (st.LastRollback == nil || st.LastRollback.From != sc.bad || st.LastRollback.To != sc.want):
		t.Errorf("%s: last rollback %+v, want from %s to %s", when, st.LastRollback, sc.bad, sc.want)
	}
	if sc.bad != "" {
		if when == "without a kill" {
			t.Logf("%s: %s marked bad: %s", when, sc.bad, mark.Reason)
		}
		// The server still names it: not installed again.
		d.run(t, "update", "v2")
		if now, _ := crashTree(d.appDir()); !crashEqual(now, trees[sc.want]) {
			t.Errorf("%s: an update while the server names the bad %s changed the app dir:%s", when, sc.bad, crashDiff(now, trees[sc.want]))
		}
	}
}

// crashTrialOutput collects a running command's output.
type crashTrialOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *crashTrialOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *crashTrialOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
