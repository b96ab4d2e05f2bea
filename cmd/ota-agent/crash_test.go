package main

// Power cuts and crashes, against the real binary.
//
// The claim (README, "The switch"): power loss at any instant leaves the old
// or the new release complete, never a mix, and never a corrupt state file;
// the next run completes the update. The argument has two halves.
//
// Order: every step that changes the disk is recorded before the next
// starts, so stopping the process between any two steps leaves something
// Recover can finish or undo. A SIGKILL stops it exactly there, losing
// nothing the kernel already has. TestPowerCut/every-step kills the agent
// (built with -tags faultinject) at each durable step N = 1..S of an update
// in turn; TestPowerCut/random-sigkill kills the plain binary at random
// instants, downloads included.
//
// Durability: a power cut also loses what the kernel had not written, so
// each step must be durable before the next one starts. Every rename or
// other change of a directory has its fsync pair, and every file its fsync
// before it is renamed or named in an index. The pairs, as the step log
// names them (TestPowerCut/fsync-pairs checks that every step is followed
// by its fsync before anything else happens):
//
//	step (store.crashPoint)        what changes                              its fsync pair
//	write X / fsync X              temp file of X (state.json, journal,      the temp file itself, before the rename
//	                               staging .ota-index)
//	rename X                       temp -> X in the same directory           fsync dir <X's dir>
//	mkdir D                        a directory a file will land in           fsync dir <D's parent>, before anything
//	                               (staging, app, releases/<old>/)           is renamed into D or indexed in it
//	write staged P                 staging/<v>/P                             fsync staged P (the file)
//	append index P                 .ota-index names P                        fsync index P: first P's directory (the
//	                                                                         entry), then the index, so an index line
//	                                                                         never names a file that a power cut lost
//	place backup P (in-place)      app/P linked (or copied and fsynced) to   fsync backup P (the temp file), then
//	replace backup P               a temp name in releases/<old>/, renamed   fsync after replace backup P: the dir
//	                               over P there; before the journal
//	remove old P                   a file that left the release goes         fsync after remove old P: its dir
//	rmdir D / mkdir D              a directory emptied / needed (shape)      fsync after rmdir D / fsync dir <parent>
//	place new P                    staging/<v>/P linked (or copied) to a     fsync new P (the temp file)
//	                               temp name beside app/P
//	replace new P                  the temp renamed over app/P               fsync after replace new P: app/P's dir
//	restore P / remove new P       the undo: backup placed back the same     fsync ... as above
//	                               way, or a new file removed
//	remove journal                 the switch is over                        fsync dir <state dir>, and only after
//	                                                                         state.json's own rename pair
//	move staged release (symlink)  staging/<v> -> releases/<v>               fsync dir releases, fsync dir staging
//	create symlink                 <app>.ota-new -> releases/<v>             fsync dir <app's parent>
//	rename symlink                 <app>.ota-new -> <app> (the switch)       fsync dir <app's parent>
//	exchange app dir               RENAME_EXCHANGE of a real dir and the     fsync dir <app's parent>
//	                               new link (the switch)
//	keep old app dir               <app>.ota-new (the old dir) ->            fsync dir releases, fsync dir <app's parent>
//	                               releases/_before-<v>
//
// What the in-place journal adds: the release's files are switched one
// rename at a time, so a mix of releases exists between "write journal" and
// "remove journal" (each file whole: a rename over it); the journal is
// durable first, and Recover (run by `ota-agent recover` at boot before any
// app starts, and at the start of every update) finishes or undoes it. In
// symlink mode the switch is one rename and the app dir is never a mix,
// not even before Recover.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/store"
)

// Two releases with sub-paths, a file that does not change, one file only
// in v1 and one only in v2, and a path that is a file in v1 and a
// directory in v2.
var crashReleases = map[string]map[string]string{
	"v1": {
		"main.py":         crashBody("v1", "main.py", 3000),
		"lib/util.py":     crashBody("v1", "lib/util.py", 20000),
		"lib/sub/deep.py": crashBody("v1", "lib/sub/deep.py", 500),
		"shared.txt":      crashBody("both", "shared.txt", 8000),
		"only1.py":        crashBody("v1", "only1.py", 100),
		"conf":            crashBody("v1", "conf", 300), // a directory in v2
	},
	"v2": {
		"main.py":         crashBody("v2", "main.py", 3100),
		"lib/util.py":     crashBody("v2", "lib/util.py", 19000),
		"lib/sub/deep.py": crashBody("v2", "lib/sub/deep.py", 700),
		"shared.txt":      crashBody("both", "shared.txt", 8000),
		"only2/new.py":    crashBody("v2", "only2/new.py", 4000),
		"conf/app.toml":   crashBody("v2", "conf/app.toml", 600), // a file in v1
	},
}

func crashBody(v, file string, n int) string {
	line := v + " " + file + "\n"
	return strings.Repeat(line, n/len(line)+1)[:n]
}

func crashFiles(v string) string {
	return strings.Join(slices.Sorted(maps.Keys(crashReleases[v])), ",")
}

// releaseServer publishes crashReleases in the micropython-ota layout:
// /<project>/version and /<project>/<v>_<file>. Each project has its own
// published version; projects named "slow-*" dribble their files out, so
// that a download takes a few milliseconds and random kills land in it.
type crashServer struct {
	*httptest.Server
	mu      sync.Mutex
	version map[string]string
}

const crashSlowChunk = 2 * time.Millisecond

func newCrashServer(t *testing.T) *crashServer {
	rs := &crashServer{version: map[string]string{}}
	rs.Server = httptest.NewServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *crashServer) publish(project, v string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.version[project] = v
}

func (rs *crashServer) serve(w http.ResponseWriter, r *http.Request) {
	project, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if rest == "version" {
		rs.mu.Lock()
		v := rs.version[project]
		rs.mu.Unlock()
		if v == "" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, v)
		return
	}
	tag, file, _ := strings.Cut(rest, "_")
	b, ok := crashReleases[tag][file]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if !strings.HasPrefix(project, "slow-") {
		w.Write([]byte(b))
		return
	}
	for i := 0; i < len(b); i += len(b)/2 + 1 {
		w.Write([]byte(b[i:min(i+len(b)/2+1, len(b))]))
		w.(http.Flusher).Flush()
		time.Sleep(crashSlowChunk)
	}
}

// device is one board: an app dir and a state dir under root, managed by
// the agent binary bin for project (the app's name too).
type crashDevice struct {
	bin, root, project, host string
	mode                     store.Mode
}

func (d *crashDevice) appDir() string   { return filepath.Join(d.root, "app") }
func (d *crashDevice) stateDir() string { return filepath.Join(d.root, "state", d.project) }

// cmd is `ota-agent <verb>` for the app, with the file list of release v.
func (d *crashDevice) cmd(verb, v string, env ...string) (*exec.Cmd, *bytes.Buffer) {
	c := exec.Command(d.bin, verb,
		"--host", d.host, "--project", d.project, "--files", crashFiles(v),
		"--app-dir", d.appDir(), "--state-dir", filepath.Join(d.root, "state"),
		"--runtime-dir", filepath.Join(d.root, "run"), "--install", string(d.mode), "--log-level", "debug")
	c.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	return c, &out
}

// run runs `ota-agent <verb>` to its end and fails the test unless it
// exits 0.
func (d *crashDevice) run(t *testing.T, verb, v string, env ...string) {
	t.Helper()
	c, out := d.cmd(verb, v, env...)
	if err := c.Run(); err != nil {
		t.Fatalf("%s(%q) = %v, want exit 0; output:\n%s", verb, v, err, out)
	}
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// tree describes everything under dir (through dir itself if it is a
// symlink): "dir", "-> target" for a symlink, else the file's permission
// bits and content hash.
func crashTree(dir string) (map[string]string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case e.IsDir():
			out[rel] = "dir"
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			out[rel] = "-> " + target
			return err
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			out[rel] = crashFileDesc(fi.Mode().Perm(), string(b))
		}
		return nil
	})
	return out, err
}

func crashFileDesc(perm fs.FileMode, content string) string {
	sum := sha256.Sum256([]byte(content))
	return fmt.Sprintf("%v %d %s", perm, len(content), hex.EncodeToString(sum[:8]))
}

// overlay is base with release v's files written over it, as an in-place
// install leaves the app dir: the files of release from that are not in v
// are gone, with the directories they alone filled.
func crashOverlay(base map[string]string, from, v string) map[string]string {
	out := map[string]string{}
	for k, x := range base {
		out[k] = x
	}
	for p := range crashReleases[from] {
		if _, ok := crashReleases[v][p]; ok {
			continue
		}
		delete(out, p)
		for dir := filepath.Dir(p); dir != "."; dir = filepath.Dir(dir) {
			empty := true
			for k := range out {
				if strings.HasPrefix(k, dir+"/") {
					empty = false
				}
			}
			if empty {
				delete(out, dir)
			}
		}
	}
	for p, content := range crashReleases[v] {
		out[p] = crashFileDesc(0o644, content)
		for dir := filepath.Dir(p); dir != "."; dir = filepath.Dir(dir) {
			out[dir] = "dir"
		}
	}
	return out
}

func crashDiff(got, want map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			fmt.Fprintf(&b, "\n    missing %s", k)
		} else if g != want[k] {
			fmt.Fprintf(&b, "\n    %s = %s, want %s", k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "\n    unexpected %s", k)
		}
	}
	return b.String()
}

func crashEqual(a, b map[string]string) bool { return crashDiff(a, b) == "" }

// update is one update under test, from release from ("" for a first
// install) to release to: the app dir's tree before and after.
type crashUpdate struct {
	from, to string
	old, new map[string]string
}

func (d *crashDevice) expect(t *testing.T, from, to string) crashUpdate {
	t.Helper()
	old, err := crashTree(d.appDir())
	if err != nil {
		t.Fatalf("app dir before the update: %v", err)
	}
	u := crashUpdate{from: from, to: to, old: old, new: crashOverlay(old, from, to)}
	if d.mode == store.Symlink {
		u.new = crashOverlay(nil, "", to) // the release dir alone
	}
	return u
}

// outcome says where a kill left an update.
type crashOutcome struct {
	journal bool // a switch was in progress: Recover had work to do
	done    bool // the new release was in place after Recover
}

// checkCrash checks the device after the agent was killed during u, then
// that the next run completes the update:
//   - at once, state.json (if there) parses and names the old or the new
//     release, and the new one only once all its files are in place;
//   - symlink mode: at once, the app dir is exactly the old or the new tree;
//   - in-place: the app dir is a mix only while a journal is there;
//   - with viaRecover, after `ota-agent recover`: the app dir is exactly the
//     old or the new tree, no journal is left, and state.json names the
//     release that is there, with its inventory;
//   - `ota-agent update` (which recovers first by itself) then exits 0 with
//     the new release in place.
func (d *crashDevice) checkCrash(t *testing.T, u crashUpdate, viaRecover bool) crashOutcome {
	t.Helper()
	var o crashOutcome
	_, err := os.Stat(filepath.Join(d.stateDir(), "journal"))
	o.journal = err == nil
	now, err := crashTree(d.appDir())
	if err != nil {
		t.Fatalf("after the kill: app dir: %v (neither %s nor %s is there)", err, crashVersionName(u.from), u.to)
	}
	isOld, isNew := crashEqual(now, u.old), crashEqual(now, u.new)
	if d.mode == store.Symlink && !isOld && !isNew {
		t.Fatalf("after the kill: the app dir is neither %s nor %s:\n  against %s:%s\n  against %s:%s",
			crashVersionName(u.from), u.to, crashVersionName(u.from), crashDiff(now, u.old), u.to, crashDiff(now, u.new))
	}
	if d.mode == store.InPlace && !isOld && !isNew && !o.journal {
		t.Fatalf("after the kill: the app dir is a mix of %s and %s without a journal to finish it:%s",
			crashVersionName(u.from), u.to, crashDiff(now, u.new))
	}
	// A file of both releases is never missing, nor anything but one
	// release's whole file, even mid-switch. (A path that changes shape,
	// a file that becomes a directory, cannot change in one step.)
	for p, want := range u.new {
		if old, ok := u.old[p]; ok && old != "dir" && want != "dir" && now[p] != want && now[p] != old {
			t.Fatalf("after the kill: %s = %q, want %s's %q or %s's %q", p, now[p], crashVersionName(u.from), old, u.to, want)
		}
	}
	if st, ok := d.state(t, "after the kill"); ok {
		switch {
		case st.Version != u.from && st.Version != u.to:
			t.Fatalf("after the kill: state.json names %q, want %s or %s", st.Version, crashVersionName(u.from), u.to)
		case st.Version == u.to && !isNew:
			t.Fatalf("after the kill: state.json names %s before all its files are in place:%s", u.to, crashDiff(now, u.new))
		}
	}

	if viaRecover {
		d.run(t, "recover", u.to)
		now, err = crashTree(d.appDir())
		if err != nil {
			t.Fatalf("after recover: app dir: %v", err)
		}
		isOld, isNew = crashEqual(now, u.old), crashEqual(now, u.new)
		if !isOld && !isNew {
			t.Fatalf("after recover: the app dir is neither %s nor %s:\n  against %s:%s\n  against %s:%s",
				crashVersionName(u.from), u.to, crashVersionName(u.from), crashDiff(now, u.old), u.to, crashDiff(now, u.new))
		}
		o.done = isNew && !isOld
		if _, err := os.Stat(filepath.Join(d.stateDir(), "journal")); err == nil {
			t.Errorf("after recover: the journal is still there")
		}
		want := u.from
		if o.done {
			want = u.to
		}
		d.checkState(t, "after recover", want)
	}

	d.run(t, "update", u.to)
	now, err = crashTree(d.appDir())
	if err != nil {
		t.Fatalf("after the next update: app dir: %v", err)
	}
	if !crashEqual(now, u.new) {
		t.Fatalf("after the next update: app dir is not %s:%s", u.to, crashDiff(now, u.new))
	}
	d.checkState(t, "after the next update", u.to)
	return o
}

// state reads state.json; ok is false if there is none. It must parse:
// WriteFile never leaves a torn one.
func (d *crashDevice) state(t *testing.T, when string) (st store.State, ok bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.stateDir(), "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, false
	}
	if err != nil {
		t.Fatalf("%s: state.json: %v", when, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s: state.json does not parse: %v\n%s", when, err, b)
	}
	if st.Schema != store.SchemaVersion {
		t.Fatalf("%s: state.json has schema %d, want %d", when, st.Schema, store.SchemaVersion)
	}
	return st, true
}

// checkState checks that state.json names release v (absent or empty when
// v is ""), and that its inventory is what the app dir holds.
func (d *crashDevice) checkState(t *testing.T, when, v string) {
	t.Helper()
	st, ok := d.state(t, when)
	if !ok && v == "" {
		return
	}
	if !ok || st.Version != v {
		t.Fatalf("%s: state.json names version %q (present: %v), want %q: the files of %s are there",
			when, st.Version, ok, v, crashVersionName(v))
	}
	if v == "" {
		return
	}
	if len(st.Files) != len(crashReleases[v]) {
		t.Errorf("%s: state.json lists %d files, want the %d of %s", when, len(st.Files), len(crashReleases[v]), v)
	}
	for _, f := range st.Files {
		b, err := os.ReadFile(filepath.Join(d.appDir(), f.Path))
		sum := sha256.Sum256(b)
		if err != nil || int64(len(b)) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
			t.Errorf("%s: state.json lists %s (%d bytes, sha256 %.12s), the app dir does not hold it (%v)", when, f.Path, f.Size, f.SHA256, err)
		}
	}
}

func crashVersionName(v string) string {
	if v == "" {
		return "(nothing installed)"
	}
	return v
}

// copyTree copies a device's root, making symlinks that pointed into it
// point into the copy (the symlink mode's app dir is an absolute link).
func crashCopy(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			return os.MkdirAll(to, fi.Mode().Perm())
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if rest, ok := strings.CutPrefix(target, src+"/"); ok {
				target = filepath.Join(dst, rest)
			}
			return os.Symlink(target, to)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, fi.Mode().Perm())
		}
	})
}

// buildAgent builds cmd/ota-agent into dir with the given build tags.
func buildAgentBinary(t *testing.T, dir, name string, tags ...string) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(gomod)) == 0 {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	c := exec.Command("go", append(args, "./cmd/ota-agent")...)
	c.Dir = filepath.Dir(string(bytes.TrimSpace(gomod)))
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(c.Args[1:], " "), err, out)
	}
	return bin
}

// A scenario is a device state and the update to crash: prepare brings a
// fresh device to release from.
type crashScenario struct {
	name     string
	mode     store.Mode
	from, to string
	// before is the app dir's content before anything is installed:
	// files not in any release (in-place leaves them alone) or a real
	// directory (symlink mode swaps it for the link and keeps it).
	before map[string]string
}

var crashScenarios = []crashScenario{
	{"in-place/v1-to-v2", store.InPlace, "v1", "v2", map[string]string{"settings.toml": "the user's", "data/db.txt": "the app's data"}},
	{"in-place/first-install", store.InPlace, "", "v1", map[string]string{"main.py": "hand-copied", "settings.toml": "the user's"}},
	{"symlink/v1-to-v2", store.Symlink, "v1", "v2", nil},
	{"symlink/real-dir-to-v1", store.Symlink, "", "v1", map[string]string{"main.py": "hand-copied", "data/db.txt": "the app's data"}},
}

// prepare makes a device at root with sc.before in its app dir and sc.from
// installed.
func (sc crashScenario) prepare(t *testing.T, d *crashDevice, rs *crashServer) {
	t.Helper()
	for p, content := range sc.before {
		full := filepath.Join(d.appDir(), p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(d.root, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	if sc.from != "" {
		rs.publish(d.project, sc.from)
		d.run(t, "update", sc.from)
	}
}

func readStepLog(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("step log: %v", err)
	}
	defer f.Close()
	var steps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n, what, _ := strings.Cut(sc.Text(), " ")
		if n != strconv.Itoa(len(steps)+1) {
			t.Fatalf("step log line %q: want step %d", sc.Text(), len(steps)+1)
		}
		steps = append(steps, what)
	}
	return steps
}

func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent and runs it about 1300 times")
	}
	bins := t.TempDir()
	faulty := buildAgentBinary(t, bins, "ota-agent-faultinject", "faultinject")
	plain := buildAgentBinary(t, bins, "ota-agent")
	rs := newCrashServer(t)

	// every-step: for each scenario, count the durable steps S of the
	// update, then kill it at each step N = 1..S on a fresh copy of the
	// prepared device, and check that it is the old or the new release
	// and that the next run completes.
	stepLogs := map[string][]string{}
	var mu sync.Mutex
	t.Run("every-step", func(t *testing.T) {
		for _, sc := range crashScenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				project := strings.ReplaceAll(sc.name, "/", "-")
				tmpl := &crashDevice{bin: faulty, root: filepath.Join(t.TempDir(), "tmpl"), project: project, mode: sc.mode, host: rs.URL}
				sc.prepare(t, tmpl, rs)
				rs.publish(project, sc.to)

				count := *tmpl
				count.root = filepath.Join(t.TempDir(), "count")
				if err := crashCopy(tmpl.root, count.root); err != nil {
					t.Fatal(err)
				}
				log := filepath.Join(t.TempDir(), "steps")
				count.run(t, "update", sc.to, "OTA_AGENT_STEPS="+log)
				steps := readStepLog(t, log)
				mu.Lock()
				stepLogs[sc.name] = steps
				mu.Unlock()
				t.Logf("%s: %d durable steps", sc.name, len(steps))

				for n := 1; n <= len(steps)+1; n++ {
					name := fmt.Sprintf("%02d-%s", n, strings.ReplaceAll(crashStepName(steps, n), " ", "_"))
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						d := *tmpl
						d.root = filepath.Join(t.TempDir(), "dev")
						if err := crashCopy(tmpl.root, d.root); err != nil {
							t.Fatal(err)
						}
						u := d.expect(t, sc.from, sc.to)
						c, out := d.cmd("update", sc.to, "OTA_AGENT_CRASH_AT="+strconv.Itoa(n))
						err := c.Run()
						if n > len(steps) {
							// One past the last step: the update completes.
							if err != nil {
								t.Fatalf("update(%q) with a crash after the last step = %v, want exit 0; output:\n%s", sc.to, err, out)
							}
						} else if !killedBySIGKILL(err) {
							t.Fatalf("update(%q) with a crash at step %d = %v, want killed by SIGKILL; output:\n%s", sc.to, n, err, out)
						}
						d.checkCrash(t, u, true)
					})
				}
			})
		}
	})

	// fsync-pairs: in every step log, anything that changes the disk is
	// followed by its fsync before the next change (see the table above).
	t.Run("fsync-pairs", func(t *testing.T) {
		if len(stepLogs) != len(crashScenarios) {
			t.Skip("every-step did not log every scenario")
		}
		for _, name := range slices.Sorted(maps.Keys(stepLogs)) {
			steps := stepLogs[name]
			for i, s := range steps {
				if strings.HasPrefix(s, "fsync") {
					continue
				}
				next := ""
				if i+1 < len(steps) {
					next = steps[i+1]
				}
				if !strings.HasPrefix(next, "fsync") {
					t.Errorf("%s: step %d %q is followed by %q, want its fsync", name, i+1, s, next)
				}
			}
		}
	})

	// random-sigkill: the plain binary, killed at a random instant of an
	// update (v1 to v2, then back), downloads dribbling in so that kills
	// land in the download, the switch, and everything between.
	t.Run("random-sigkill", func(t *testing.T) {
		const chains, perChain = 4, 25 // 100 kills per mode
		seed := time.Now().UnixNano()
		if s, err := strconv.ParseInt(os.Getenv("OTA_CRASH_SEED"), 10, 64); err == nil {
			seed = s
		}
		t.Logf("seed %d (set OTA_CRASH_SEED to repeat)", seed)
		for _, mode := range []store.Mode{store.InPlace, store.Symlink} {
			t.Run(string(mode), func(t *testing.T) {
				t.Parallel()
				// How long an update takes here sets the range of the kills.
				probe := &crashDevice{bin: plain, root: filepath.Join(t.TempDir(), "probe"), project: "slow-probe-" + string(mode), mode: mode, host: rs.URL}
				crashScenario{from: "v1"}.prepare(t, probe, rs)
				var took []time.Duration
				for _, v := range []string{"v2", "v1", "v2"} {
					rs.publish(probe.project, v)
					start := time.Now()
					probe.run(t, "update", v)
					took = append(took, time.Since(start))
				}
				slices.Sort(took)
				typical := took[1]
				t.Logf("an update takes %v (median of %v); kills land in 0..%v", typical, took, typical*5/4)
				// In-place leaves files that are in no release alone.
				sc := crashScenario{from: "v1"}
				if mode == store.InPlace {
					sc.before = map[string]string{"settings.toml": "the user's", "data/db.txt": "the app's data"}
				}

				var mu sync.Mutex
				var total, journal, recovered, done, finished int
				for c := range chains {
					t.Run(fmt.Sprintf("chain%d", c), func(t *testing.T) {
						t.Parallel()
						rng := rand.New(rand.NewPCG(uint64(seed), uint64(c)))
						d := &crashDevice{bin: plain, root: filepath.Join(t.TempDir(), "dev"), project: fmt.Sprintf("slow-%s-%d", mode, c), mode: mode, host: rs.URL}
						sc.prepare(t, d, rs)
						cur := "v1"
						for i := range perChain {
							to := map[string]string{"v1": "v2", "v2": "v1"}[cur]
							rs.publish(d.project, to)
							u := d.expect(t, cur, to)
							cmd, out := d.cmd("update", to)
							if err := cmd.Start(); err != nil {
								t.Fatal(err)
							}
							delay := time.Duration(rng.Int64N(int64(typical*5/4) + 1))
							time.Sleep(delay)
							cmd.Process.Signal(syscall.SIGKILL)
							err := cmd.Wait()
							if err != nil && !killedBySIGKILL(err) {
								t.Fatalf("kill %d (%s -> %s after %v): update = %v, want exit 0 or killed; output:\n%s", i, cur, to, delay, err, out)
							}
							// Every other kill, `update` finds the
							// interrupted switch itself, as after a
							// power cut on a board without the recover unit.
							o := d.checkCrash(t, u, i%2 == 0)
							mu.Lock()
							total++
							if err == nil {
								finished++
							}
							if o.journal {
								journal++
							}
							if i%2 == 0 {
								recovered++
							}
							if o.done {
								done++
							}
							mu.Unlock()
							cur = to
						}
					})
				}
				t.Cleanup(func() {
					t.Logf("%s: %d kills: %d mid-switch (journal left), %d runs finished before the kill; "+
						"%d checked after `recover` (%d of them with the new release in place), the others recovered by `update`",
						mode, total, journal, finished, recovered, done)
				})
			})
		}
	})
}

func crashStepName(steps []string, n int) string {
	if n > len(steps) {
		return "after-the-last-step"
	}
	return steps[n-1]
}
