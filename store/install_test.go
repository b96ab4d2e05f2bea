package store

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// inventory is the State.Files a release of files must produce.
func inventory(files map[string]string) []File {
	var out []File
	for _, p := range sortedKeys(files) {
		out = append(out, File{Path: p, Size: int64(len(files[p])), SHA256: sha(files[p]), Mode: 0o644})
	}
	return out
}

func checkState(t *testing.T, s *Store, version, previous string, files map[string]string) {
	t.Helper()
	st, err := s.State()
	if err != nil {
		t.Fatalf("State() = %v, want nil", err)
	}
	if st.Schema != SchemaVersion || st.Version != version || st.Previous != previous || st.Install != s.mode {
		t.Errorf("State() = schema %d, version %q, previous %q, install %q; want %d, %q, %q, %q",
			st.Schema, st.Version, st.Previous, st.Install, SchemaVersion, version, previous, s.mode)
	}
	want := inventory(files)
	if len(st.Files) != len(want) {
		t.Fatalf("State().Files = %+v, want %+v", st.Files, want)
	}
	for i := range want {
		if st.Files[i] != want[i] {
			t.Errorf("State().Files[%d] = %+v, want %+v", i, st.Files[i], want[i])
		}
	}
	if _, err := os.Stat(s.journalPath()); err == nil {
		t.Errorf("journal left after a finished install")
	}
}

func TestInstallInPlace(t *testing.T) {
	s := newStore(t, InPlace, 2)
	// Files that were there before ota-agent: one the release replaces,
	// others it must leave alone.
	writeFiles(t, s.AppDir(), map[string]string{"main.py": "pre", "settings.toml": "mine", "lib/local.py": "mine too"})
	v1 := map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util", "boot.py": "v1 boot"}
	v2 := map[string]string{"main.py": "v2 main", "lib/util.py": "v1 util", "lib/new/deep.py": "v2 deep"}
	v3 := map[string]string{"main.py": "v3 main"}
	steps := []struct {
		version string
		files   map[string]string
		app     map[string]string // the whole app dir afterwards
		backup  string            // releases/<backup>/ ...
		old     map[string]string // ... holds the replaced files
		kept    []string          // State.Releases
	}{
		{
			version: "v1", files: v1,
			app:    map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util", "boot.py": "v1 boot", "settings.toml": "mine", "lib/local.py": "mine too"},
			backup: "_before-v1", old: map[string]string{"main.py": "pre"},
			kept: []string{"_before-v1"},
		},
		{
			version: "v2", files: v2,
			// boot.py left the release: it moves to the backup.
			app:    map[string]string{"main.py": "v2 main", "lib/util.py": "v1 util", "lib/new/deep.py": "v2 deep", "settings.toml": "mine", "lib/local.py": "mine too"},
			backup: "v1", old: map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util", "boot.py": "v1 boot"},
			kept: []string{"v1"},
		},
		{
			version: "v3", files: v3,
			// lib/new goes with its only file; lib stays for the user's file.
			app:    map[string]string{"main.py": "v3 main", "settings.toml": "mine", "lib/local.py": "mine too"},
			backup: "v2", old: map[string]string{"main.py": "v2 main", "lib/util.py": "v1 util", "lib/new/deep.py": "v2 deep"},
			kept: []string{"v2"},
		},
	}
	prev := ""
	for _, step := range steps {
		got := install(t, s, step.version, step.files)
		if got.Version != step.version {
			t.Errorf("Install(%q) = version %q, want %q", step.version, got.Version, step.version)
		}
		if d := diffTrees(files(t, s.AppDir()), step.app); d != "" {
			t.Errorf("after Install(%q), app dir:%s", step.version, d)
		}
		backup := filepath.Join(s.releasesDir(), step.backup)
		if d := diffTrees(files(t, backup), step.old); d != "" {
			t.Errorf("after Install(%q), releases/%s:%s", step.version, step.backup, d)
		}
		entries, _ := os.ReadDir(s.releasesDir())
		if len(entries) != 1 || entries[0].Name() != step.backup {
			t.Errorf("after Install(%q), releases/ holds %v, want only %s (keep_releases 2)", step.version, names(entries), step.backup)
		}
		checkState(t, s, step.version, prev, step.files)
		if st, _ := s.State(); strings.Join(st.Releases, ",") != strings.Join(step.kept, ",") {
			t.Errorf("after Install(%q), State().Releases = %v, want %v", step.version, st.Releases, step.kept)
		}
		if _, err := os.Stat(filepath.Join(s.stagingDir(), step.version)); err == nil {
			t.Errorf("after Install(%q), staging/%s is left", step.version, step.version)
		}
		prev = step.version
	}
	if _, err := os.Stat(filepath.Join(s.AppDir(), "lib", "new")); err == nil {
		t.Errorf("after Install(v3), lib/new is left, emptied of the files that left the release")
	}
}

func TestInstallSymlink(t *testing.T) {
	s := newStore(t, Symlink, 2)
	releases := []struct {
		version string
		files   map[string]string
	}{
		{"v1", map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util"}},
		{"v2", map[string]string{"main.py": "v2 main", "lib/util.py": "v1 util", "extra.py": "v2 extra"}},
		{"v3", map[string]string{"main.py": "v3 main"}},
	}
	prev := ""
	for _, r := range releases {
		install(t, s, r.version, r.files)
		target, err := os.Readlink(s.AppDir())
		if want := filepath.Join(s.Dir(), "releases", r.version); err != nil || target != want {
			t.Fatalf("after Install(%q): Readlink(app dir) = %q, %v; want %q", r.version, target, err, want)
		}
		if d := diffTrees(files(t, s.AppDir()), r.files); d != "" {
			t.Errorf("after Install(%q), app dir:%s", r.version, d)
		}
		checkState(t, s, r.version, prev, r.files)
		// keep_releases 2: the live release and the one before it.
		want := map[string]bool{r.version: true}
		if prev != "" {
			want[prev] = true
		}
		entries, _ := os.ReadDir(s.releasesDir())
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if len(names) != len(want) || !want[names[0]] || !want[names[len(names)-1]] {
			t.Errorf("after Install(%q), releases/ holds %v, want %v", r.version, names, sortedKeys(want))
		}
		prev = r.version
	}
	// The kept release is whole, ready for a rollback.
	if d := diffTrees(files(t, filepath.Join(s.releasesDir(), "v2")), releases[1].files); d != "" {
		t.Errorf("kept release v2:%s", d)
	}
	if _, err := os.Lstat(s.tmpLink()); err == nil {
		t.Errorf("%s is left after the switch", s.tmpLink())
	}
}

// A release switched away from is the rollback target: it must survive the
// switch whole. (Install once removed releases/<previous version> before the
// switch in symlink mode: the live release, under the running app.)
func TestInstallSymlinkKeepsPreviousRelease(t *testing.T) {
	s := newStore(t, Symlink, 2)
	v1 := map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util"}
	install(t, s, "v1", v1)
	st := stageFiles(t, s, "v2", map[string]string{"main.py": "v2 main"})
	// Between staging and the switch, the running app must still see v1.
	if d := diffTrees(files(t, s.AppDir()), v1); d != "" {
		t.Fatalf("after staging v2, the live app dir changed:%s", d)
	}
	if _, err := s.Install(st); err != nil {
		t.Fatalf("Install(v2) = %v, want nil", err)
	}
	if d := diffTrees(files(t, filepath.Join(s.releasesDir(), "v1")), v1); d != "" {
		t.Errorf("after Install(v2), releases/v1 (the rollback target):%s", d)
	}
	// Rolling back to the kept release (an older tag in `version`).
	install(t, s, "v1", v1)
	if d := diffTrees(files(t, s.AppDir()), v1); d != "" {
		t.Errorf("after rollback to v1, app dir:%s", d)
	}
	if d := diffTrees(files(t, filepath.Join(s.releasesDir(), "v2")), map[string]string{"main.py": "v2 main"}); d != "" {
		t.Errorf("after rollback to v1, releases/v2:%s", d)
	}
}

func TestInstallSymlinkOverRealDir(t *testing.T) {
	s := newStore(t, Symlink, 2)
	before := map[string]string{"main.py": "hand-copied", "data/db.txt": "the app's data"}
	writeFiles(t, s.AppDir(), before)
	v1 := map[string]string{"main.py": "v1 main", "lib/util.py": "v1 util"}
	install(t, s, "v1", v1)
	fi, err := os.Lstat(s.AppDir())
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("after Install(v1): Lstat(app dir) = %v, %v; want a symlink", fi, err)
	}
	if d := diffTrees(files(t, s.AppDir()), v1); d != "" {
		t.Errorf("after Install(v1), app dir:%s", d)
	}
	if d := diffTrees(files(t, filepath.Join(s.releasesDir(), "_before-v1")), before); d != "" {
		t.Errorf("after Install(v1), releases/_before-v1 (the old real dir):%s", d)
	}
	checkState(t, s, "v1", "", v1)
	if st, _ := s.State(); len(st.Releases) != 1 || st.Releases[0] != "_before-v1" {
		t.Errorf("State().Releases = %v, want [_before-v1]", st.Releases)
	}
	// keep_releases 2: the next switch prunes the old real dir.
	install(t, s, "v2", map[string]string{"main.py": "v2 main"})
	entries, _ := os.ReadDir(s.releasesDir())
	if len(entries) != 2 || entries[0].Name() != "v1" || entries[1].Name() != "v2" {
		t.Errorf("after Install(v2), releases/ holds %v, want [v1 v2]", names(entries))
	}
}

func TestInstallNothingStaged(t *testing.T) {
	s := newStore(t, InPlace, 2)
	st, err := s.Stage("v1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(st); err != ErrNothingStaged {
		t.Errorf("Install(empty stage) = %v, want %v", err, ErrNothingStaged)
	}
}

func TestInstallDirectoryInTheWay(t *testing.T) {
	s := newStore(t, InPlace, 2)
	st := stageFiles(t, s, "v1", map[string]string{"main.py": "v1", "lib": "a file"})
	if err := os.MkdirAll(filepath.Join(s.AppDir(), "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := s.Install(st)
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("Install(file over a directory) = %v, want a 'is a directory' error", err)
	}
	if _, err := os.Stat(s.journalPath()); err == nil {
		t.Errorf("a refused install left a journal")
	}
	if _, err := os.Stat(filepath.Join(s.AppDir(), "main.py")); err == nil {
		t.Errorf("a refused install changed the app dir")
	}
}

func names(entries []os.DirEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// A release may turn a file into a directory two levels deep, and back.
func TestInstallDeepShapeChange(t *testing.T) {
	s := newStore(t, InPlace, 2)
	v1 := map[string]string{"a": "v1 a file", "main.py": "v1"}
	v2 := map[string]string{"a/b/c.txt": "v2 deep", "main.py": "v2"}
	for _, step := range []struct {
		v     string
		files map[string]string
	}{{"v1", v1}, {"v2", v2}, {"v3", v1}} {
		install(t, s, step.v, step.files)
		if d := diffTrees(files(t, s.AppDir()), step.files); d != "" {
			t.Errorf("after Install(%s), app dir:%s", step.v, d)
		}
	}
	if _, err := os.Stat(filepath.Join(s.AppDir(), "a", "b")); err == nil {
		t.Errorf("after Install(v3), a/b is left")
	}
}
