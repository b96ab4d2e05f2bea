package store

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Recover is tested on switches stopped by hand at the instants a crash
// can stop them: these helpers do what Install does, step by step, and the
// test stops after any of them. The crash test of cmd/ota-agent does the
// same with a real SIGKILL at every durable step.

// beginSwitch does what Install does up to the journal: the state is read,
// the stage's index dropped, the journal (not yet written) made.
func beginSwitch(t *testing.T, s *Store, st *Stage) *journal {
	t.Helper()
	cur, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	files := st.Files()
	st.Close()
	if err := os.Remove(filepath.Join(st.dir, indexName)); err != nil {
		t.Fatal(err)
	}
	j := &journal{Schema: SchemaVersion, Mode: s.mode, From: cur.Version, To: st.version, Backup: cur.Version}
	if j.Backup == "" {
		j.Backup = "_before-" + st.version
	}
	j.State = State{Version: st.version, InstalledAt: time.Now().UTC(), Install: s.mode, Previous: cur.Version, Files: files}
	j.State.Releases = keptReleases(j.Backup, cur.Releases, s.keep)
	return j
}

func mustDo(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

var (
	recoverV1 = map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util", "shared.py": "same in both"}
	recoverV2 = map[string]string{"main.py": "v2 main", "lib/util.py": "v2 util", "shared.py": "same in both", "new/only2.py": "v2 only"}
)

func TestRecoverInPlace(t *testing.T) {
	// Files in switch order (sorted): lib/util.py, main.py, new/only2.py, shared.py.
	forwardN := func(n int) func(*testing.T, *Store, *journal, *switcher) {
		return func(t *testing.T, s *Store, j *journal, sw *switcher) {
			for _, f := range j.State.Files[:n] {
				mustDo(t, "forward "+f.Path, sw.forward(f.Path))
			}
		}
	}
	lose := func(p string) func(*testing.T, *Store, *journal, *switcher) {
		return func(t *testing.T, s *Store, j *journal, sw *switcher) {
			mustDo(t, "lose "+p, os.Remove(filepath.Join(s.stagingDir(), j.To, p)))
		}
	}
	tests := []struct {
		name    string
		crash   []func(*testing.T, *Store, *journal, *switcher) // what happened before the crash
		forward bool                                            // Recover must finish (else undo) the switch
	}{
		{"journal written, nothing moved", nil, true},
		{"old file moved aside, new one not yet in", []func(*testing.T, *Store, *journal, *switcher){
			func(t *testing.T, s *Store, j *journal, sw *switcher) {
				mustDo(t, "mkdir", os.MkdirAll(filepath.Join(s.releasesDir(), j.Backup, "lib"), 0o755))
				mustDo(t, "rename", os.Rename(filepath.Join(s.AppDir(), "lib/util.py"), filepath.Join(s.releasesDir(), j.Backup, "lib/util.py")))
			},
		}, true},
		{"two of four files switched", []func(*testing.T, *Store, *journal, *switcher){forwardN(2)}, true},
		{"all switched, state not written", []func(*testing.T, *Store, *journal, *switcher){forwardN(4)}, true},
		{"state written, journal not removed", []func(*testing.T, *Store, *journal, *switcher){
			forwardN(4),
			func(t *testing.T, s *Store, j *journal, sw *switcher) { mustDo(t, "writeState", s.writeState(j.State)) },
		}, true},
		// A power cut can lose a staged file whose directory fsync had not
		// happened; without every new file the switch cannot go forward.
		{"a staged file lost, none switched", []func(*testing.T, *Store, *journal, *switcher){lose("main.py")}, false},
		// The app already holds that file's new content: nothing is missing.
		{"an unchanged staged file lost", []func(*testing.T, *Store, *journal, *switcher){lose("shared.py")}, true},
		{"a staged file lost, two switched", []func(*testing.T, *Store, *journal, *switcher){forwardN(2), lose("new/only2.py")}, false},
		{"a staged file lost, roll back interrupted", []func(*testing.T, *Store, *journal, *switcher){
			forwardN(2), lose("new/only2.py"),
			func(t *testing.T, s *Store, j *journal, sw *switcher) {
				mustDo(t, "back", sw.back(j.State.Files[1]))
			},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, InPlace, 2)
			writeFiles(t, s.AppDir(), map[string]string{"mine.txt": "not in a release"})
			install(t, s, "v1", recoverV1)
			before := files(t, s.AppDir())
			stateBefore, _ := s.State()
			after := files(t, s.AppDir())
			for p, body := range recoverV2 {
				after[p] = body
			}

			j := beginSwitch(t, s, stageFiles(t, s, "v2", recoverV2))
			mustDo(t, "remove stale backup", os.RemoveAll(filepath.Join(s.releasesDir(), j.Backup)))
			sw, err := s.openSwitch(j)
			mustDo(t, "openSwitch", err)
			mustDo(t, "writeJournal", s.writeJournal(j))
			for _, step := range tt.crash {
				step(t, s, j, sw)
			}
			sw.close()

			if err := s.Recover(); err != nil {
				t.Fatalf("Recover() = %v, want nil", err)
			}
			want, version := before, "v1"
			if tt.forward {
				want, version = after, "v2"
			}
			if d := diffTrees(files(t, s.AppDir()), want); d != "" {
				t.Errorf("after Recover(), app dir (want %s):%s", version, d)
			}
			st, _ := s.State()
			if st.Version != version {
				t.Errorf("after Recover(), State().Version = %q, want %q", st.Version, version)
			}
			if _, err := os.Stat(s.journalPath()); err == nil {
				t.Errorf("after Recover(), the journal is still there")
			}
			if tt.forward {
				checkState(t, s, "v2", "v1", recoverV2)
				// The replaced files are kept for rollback (shared.py only
				// when it was switched: otherwise the app's copy stayed).
				kept := files(t, filepath.Join(s.releasesDir(), "v1"))
				old := map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util", "shared.py": "same in both"}
				if _, ok := kept["shared.py"]; !ok {
					delete(old, "shared.py")
				}
				if d := diffTrees(kept, old); d != "" {
					t.Errorf("after Recover(), releases/v1:%s", d)
				}
			} else if !reflect.DeepEqual(st, stateBefore) {
				t.Errorf("after a roll back, State() = %+v, want it unchanged: %+v", st, stateBefore)
			}
			// Recover is idempotent, and the next update goes through.
			if err := s.Recover(); err != nil {
				t.Errorf("second Recover() = %v, want nil", err)
			}
			if !tt.forward {
				install(t, s, "v2", recoverV2)
				if d := diffTrees(files(t, s.AppDir()), after); d != "" {
					t.Errorf("after the next Install(v2), app dir:%s", d)
				}
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
	for _, mode := range []string{InPlace, Symlink} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, mode, 2)
			install(t, s, "v1", recoverV1)
			// v1 -> v2 crashed after the switch, before state.json.
			j := beginSwitch(t, s, stageFiles(t, s, "v2", recoverV2))
			if mode == InPlace {
				sw, err := s.openSwitch(j)
				mustDo(t, "openSwitch", err)
				mustDo(t, "writeJournal", s.writeJournal(j))
				for _, f := range j.State.Files {
					mustDo(t, "forward "+f.Path, sw.forward(f.Path))
				}
				sw.close()
			} else {
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
