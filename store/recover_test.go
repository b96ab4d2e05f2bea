package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Recover is tested on switches stopped by hand at the instants a crash
// can stop them: these helpers do what Install does, step by step, and the
// test stops after any of them. The crash test of cmd/ota-agent does the
// same with a real SIGKILL at every durable step.

// beginSwitch does what Install does up to the journal: the state is read,
// the stage's index closed, the journal (not yet written) made.
func beginSwitch(t *testing.T, s *Store, st *Stage) *journal {
	t.Helper()
	cur, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	files := st.Files()
	st.Close()
	j := s.newJournal(cur, st.version, files)
	return &j
}

// prepare does what an in-place Install does before its first change to
// the app: plan, backups, journal.
func prepare(t *testing.T, s *Store, st *Stage) *switcher {
	t.Helper()
	cur, err := s.State()
	mustDo(t, "State", err)
	j := beginSwitch(t, s, st)
	sw, err := s.prepareInPlace(j, cur)
	mustDo(t, "prepareInPlace", err)
	return sw
}

func mustDo(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Two releases that change shape both ways: conf is a file in v1 and a
// directory in v2, x a directory in v1 and a file in v2; gone.py leaves,
// new/only2.py arrives; shared.py does not change.
var (
	recoverV1 = map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util", "shared.py": "same in both",
		"gone.py": "v1 only", "conf": "v1 conf file", "x/y.py": "v1 x/y"}
	recoverV2 = map[string]string{"main.py": "v2 main", "lib/util.py": "v2 util", "shared.py": "same in both",
		"new/only2.py": "v2 only", "conf/a.txt": "v2 conf dir", "x": "v2 x file"}
)

// overlay is what an in-place app dir holds with mine (files no release
// has) and release.
func overlay(mine, release map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range mine {
		out[k] = v
	}
	for k, v := range release {
		out[k] = v
	}
	return out
}

// An in-place switch from v1 to v2, stopped after each of its steps (as a
// crash would), is finished by Recover; with a staged file lost (a power
// cut), it is undone, wherever it stopped and wherever an undo stopped.
func TestRecoverInPlace(t *testing.T) {
	mine := map[string]string{"mine.txt": "not in a release", "lib/local.py": "mine too"}
	setup := func(t *testing.T) (*Store, *switcher) {
		s := newStore(t, InPlace, 2)
		writeFiles(t, s.AppDir(), mine)
		install(t, s, "v1", recoverV1)
		return s, prepare(t, s, stageFiles(t, s, "v2", recoverV2))
	}
	_, probe := setup(t)
	nForward := len(probe.forwardSteps())
	nBack := len(probe.backSteps())
	probe.close()
	if nForward < len(recoverV2)+4 {
		t.Fatalf("forward has %d steps, want at least the %d files, a removal, two rmdirs and mkdirs", nForward, len(recoverV2))
	}

	check := func(t *testing.T, s *Store, version string, want map[string]string) {
		t.Helper()
		if d := diffTrees(files(t, s.AppDir()), want); d != "" {
			t.Errorf("after Recover(), app dir (want %s):%s", version, d)
		}
		st, err := s.State()
		if err != nil || st.Version != version {
			t.Errorf("after Recover(), State() = %q, %v; want %q", st.Version, err, version)
		}
		if _, err := os.Stat(s.journalPath()); err == nil {
			t.Errorf("after Recover(), the journal is still there")
		}
		if err := s.Recover(); err != nil {
			t.Errorf("second Recover() = %v, want nil", err)
		}
	}
	for k := 0; k <= nForward; k++ {
		t.Run(fmt.Sprintf("forward-%02d", k), func(t *testing.T) {
			t.Parallel()
			s, sw := setup(t)
			mustDo(t, "forward steps", run(sw.forwardSteps()[:k]))
			sw.close()
			mustDo(t, "Recover", s.Recover())
			check(t, s, "v2", overlay(mine, recoverV2))
			checkState(t, s, "v2", "v1", recoverV2)
			// What the switch displaced is kept for rollback.
			kept := files(t, filepath.Join(s.releasesDir(), "v1"))
			old := map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util", "shared.py": "same in both",
				"gone.py": "v1 only", "conf": "v1 conf file", "x/y.py": "v1 x/y"}
			if d := diffTrees(kept, old); d != "" {
				t.Errorf("after Recover(), releases/v1:%s", d)
			}
		})
		t.Run(fmt.Sprintf("lost-staged-file-after-%02d", k), func(t *testing.T) {
			t.Parallel()
			s, sw := setup(t)
			mustDo(t, "forward steps", run(sw.forwardSteps()[:k]))
			sw.close()
			mustDo(t, "lose", os.Remove(filepath.Join(s.stagingDir(), "v2", "x")))
			mustDo(t, "Recover", s.Recover())
			if k == nForward {
				// x is in the app already: nothing is missing.
				check(t, s, "v2", overlay(mine, recoverV2))
				return
			}
			check(t, s, "v1", overlay(mine, recoverV1))
			// The next update goes through.
			install(t, s, "v2", recoverV2)
			if d := diffTrees(files(t, s.AppDir()), overlay(mine, recoverV2)); d != "" {
				t.Errorf("after the next Install(v2), app dir:%s", d)
			}
		})
	}
	for m := 1; m < nBack; m += 3 {
		t.Run(fmt.Sprintf("undo-stopped-after-%02d", m), func(t *testing.T) {
			t.Parallel()
			s, sw := setup(t)
			mustDo(t, "forward", sw.forward())
			// The switch failed: undo marks the journal, then goes back.
			sw.j.Back = true
			mustDo(t, "writeJournal", s.writeJournal(sw.j))
			mustDo(t, "back steps", run(sw.backSteps()[:m]))
			sw.close()
			mustDo(t, "lose", os.Remove(filepath.Join(s.stagingDir(), "v2", "main.py")))
			mustDo(t, "Recover", s.Recover())
			check(t, s, "v1", overlay(mine, recoverV1))
		})
	}
}

// A staged file that vanished before the switch (first, in the middle, or
// last in switch order) fails the switch half-way with a real error: it is
// undone at once, the app is exactly v1 again, no journal is left, and the
// next run installs v2.
func TestInstallUndoneOnError(t *testing.T) {
	order := sortedKeys(recoverV2)
	for _, lost := range []string{order[0], order[len(order)/2], order[len(order)-1]} {
		t.Run(lost, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, InPlace, 2)
			mine := map[string]string{"mine.txt": "not in a release"}
			writeFiles(t, s.AppDir(), mine)
			install(t, s, "v1", recoverV1)
			before := tree(t, s.AppDir())
			st := stageFiles(t, s, "v2", recoverV2)
			mustDo(t, "lose", os.Remove(filepath.Join(s.stagingDir(), "v2", lost)))
			_, err := s.Install(st)
			if err == nil || !strings.Contains(err.Error(), lost) || !strings.Contains(err.Error(), "rolled back") {
				t.Fatalf("Install(v2) with %s gone from staging = %v, want an error naming it and saying it was rolled back", lost, err)
			}
			if d := diffTrees(tree(t, s.AppDir()), before); d != "" {
				t.Errorf("after the failed Install, app dir:%s", d)
			}
			if _, err := os.Stat(s.journalPath()); err == nil {
				t.Errorf("after the failed Install, a journal is left")
			}
			checkState(t, s, "v1", "", recoverV1)
			install(t, s, "v2", recoverV2)
			if d := diffTrees(files(t, s.AppDir()), overlay(mine, recoverV2)); d != "" {
				t.Errorf("after the next Install(v2), app dir:%s", d)
			}
		})
	}
}

func TestRecoverSymlink(t *testing.T) {
	type step func(t *testing.T, s *Store, j *journal)
	link := func(t *testing.T, s *Store, j *journal) {
		mustDo(t, "symlink", os.Symlink(filepath.Join(s.releasesDir(), j.To), s.tmpLink()))
	}
	renameLink := func(t *testing.T, s *Store, j *journal) {
		mustDo(t, "rename", os.Rename(s.tmpLink(), s.AppDir()))
	}
	exchange := func(t *testing.T, s *Store, j *journal) {
		mustDo(t, "exchange", unix.Renameat2(unix.AT_FDCWD, s.tmpLink(), unix.AT_FDCWD, s.AppDir(), unix.RENAME_EXCHANGE))
	}
	keepOld := func(t *testing.T, s *Store, j *journal) { mustDo(t, "keepOldDir", s.keepOldDir(j)) }
	writeState := func(t *testing.T, s *Store, j *journal) { mustDo(t, "writeState", s.writeState(j.State)) }

	tests := []struct {
		name    string
		realDir bool // app_dir starts as a real directory, not a symlink to v1
		crash   []step
		forward bool
	}{
		{"journal written, no link yet", false, nil, false},
		{"new link beside app dir", false, []step{link}, false},
		{"link renamed over app dir, state not written", false, []step{link, renameLink}, true},
		{"state written, journal not removed", false, []step{link, renameLink, writeState}, true},
		{"real dir: new link beside it", true, []step{link}, false},
		{"real dir: exchanged, old dir not yet kept", true, []step{link, exchange}, true},
		{"real dir: old dir kept, state not written", true, []step{link, exchange, keepOld}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, Symlink, 2)
			from, to := "v1", "v2"
			old, nw := recoverV1, recoverV2
			if tt.realDir {
				from, to = "", "v1"
				old = map[string]string{"main.py": "hand-copied", "data/db.txt": "data"}
				nw = recoverV1
				writeFiles(t, s.AppDir(), old)
			} else {
				install(t, s, "v1", recoverV1)
			}

			j := beginSwitch(t, s, stageFiles(t, s, to, nw))
			mustDo(t, "remove index", os.Remove(filepath.Join(s.stagingDir(), to, indexName)))
			mustDo(t, "mkdir releases", os.MkdirAll(s.releasesDir(), 0o755))
			rel := filepath.Join(s.releasesDir(), to)
			mustDo(t, "move staged release", os.Rename(filepath.Join(s.stagingDir(), to), rel))
			mustDo(t, "writeJournal", s.writeJournal(j))
			for _, step := range tt.crash {
				step(t, s, j)
			}

			if err := s.Recover(); err != nil {
				t.Fatalf("Recover() = %v, want nil", err)
			}
			want, version := old, from
			if tt.forward {
				want, version = nw, to
			}
			if d := diffTrees(files(t, s.AppDir()), want); d != "" {
				t.Errorf("after Recover(), app dir (want %q):%s", version, d)
			}
			if st, _ := s.State(); st.Version != version {
				t.Errorf("after Recover(), State().Version = %q, want %q", st.Version, version)
			}
			if _, err := os.Lstat(s.tmpLink()); err == nil {
				t.Errorf("after Recover(), %s is still there", s.tmpLink())
			}
			if _, err := os.Stat(s.journalPath()); err == nil {
				t.Errorf("after Recover(), the journal is still there")
			}
			if tt.realDir && tt.forward {
				if d := diffTrees(files(t, filepath.Join(s.releasesDir(), "_before-v1")), old); d != "" {
					t.Errorf("after Recover(), releases/_before-v1:%s", d)
				}
			}
			if !tt.realDir {
				if d := diffTrees(files(t, filepath.Join(s.releasesDir(), "v1")), recoverV1); d != "" {
					t.Errorf("after Recover(), releases/v1:%s", d)
				}
			}
			// The next update completes.
			install(t, s, to, nw)
			if d := diffTrees(files(t, s.AppDir()), nw); d != "" {
				t.Errorf("after the next Install(%q), app dir:%s", to, d)
			}
		})
	}
}

// Install finishes a pending switch before it reads what is installed: the
// new switch starts from the release Recover completed, not from the one
// state.json named before.
func TestInstallOverPendingSwitch(t *testing.T) {
	for _, mode := range []Mode{InPlace, Symlink} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			s := newStore(t, mode, 2)
			install(t, s, "v1", recoverV1)
			// v1 -> v2 crashed after the switch, before state.json.
			j := beginSwitch(t, s, stageFiles(t, s, "v2", recoverV2))
			if mode == InPlace {
				cur, _ := s.State()
				sw, err := s.prepareInPlace(j, cur)
				mustDo(t, "prepareInPlace", err)
				mustDo(t, "forward", sw.forward())
				sw.close()
			} else {
				mustDo(t, "remove index", os.Remove(filepath.Join(s.stagingDir(), "v2", indexName)))
				mustDo(t, "move staged release", os.Rename(filepath.Join(s.stagingDir(), "v2"), filepath.Join(s.releasesDir(), "v2")))
				mustDo(t, "writeJournal", s.writeJournal(j))
				mustDo(t, "pointAt", s.pointAt(j, filepath.Join(s.releasesDir(), "v2")))
			}

			v3 := map[string]string{"main.py": "v3 main"}
			st := install(t, s, "v3", v3)
			if st.Previous != "v2" || len(st.Releases) != 1 || st.Releases[0] != "v2" {
				t.Errorf("Install(v3) over a pending v1 -> v2 = previous %q, releases %v; want previous v2, releases [v2]", st.Previous, st.Releases)
			}
			// The kept release holds v2's files, under v2's name.
			kept := files(t, filepath.Join(s.releasesDir(), "v2"))
			if want := "v2 main"; kept["main.py"] != want {
				t.Errorf("releases/v2/main.py = %q, want %q", kept["main.py"], want)
			}
		})
	}
}
