package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// journal records a switch before its first rename, so that a crash or a
// power cut at any later instant is finished (or undone) by Recover.
type journal struct {
	Schema int    `json:"schema"`
	Mode   string `json:"mode"`
	From   string `json:"from"`
	To     string `json:"to"`
	// Backup is the directory under releases/ that receives what the
	// switch displaces: replaced files (in-place) or a real app dir (symlink).
	Backup string `json:"backup"`
	State  State  `json:"state"` // written when the switch is complete
}

// ErrNothingStaged is returned by Install for a stage without files.
var ErrNothingStaged = errors.New("no files staged")

// Install switches the staged release into the app and records it in
// state.json. A crash at any instant leaves the old or the new release
// complete, and Recover (run at the next start) finishes the switch.
// The stage is consumed; the new State is returned.
func (s *Store) Install(st *Stage) (State, error) {
	files := st.Files()
	if len(files) == 0 {
		return State{}, ErrNothingStaged
	}
	// Finish a pending switch first: the new one starts from what it left.
	if err := s.Recover(); err != nil {
		return State{}, err
	}
	cur, err := s.State()
	if err != nil {
		return State{}, err
	}
	// The index stays until the switch is done: should Recover roll it
	// back, the files return to staging and are reused by the next run.
	st.Close()
	j := journal{Schema: SchemaVersion, Mode: s.mode, From: cur.Version, To: st.version}
	j.Backup = cur.Version
	if j.Backup == "" || j.Backup == st.version {
		j.Backup = "_before-" + st.version // '_' cannot start a tag: no clash
	}
	j.State = State{Version: st.version, InstalledAt: time.Now().UTC(), Install: s.mode, Previous: cur.Version, Files: files}
	j.State.Releases = keptReleases(j.Backup, cur.Releases, s.keep)
	if s.mode == Symlink {
		err = s.installSymlink(&j)
	} else {
		err = s.installInPlace(&j)
	}
	if err != nil {
		return State{}, err
	}
	// A first install that replaced nothing has nothing to roll back to.
	if s.mode == InPlace && os.Remove(filepath.Join(s.releasesDir(), j.Backup)) == nil &&
		len(j.State.Releases) > 0 && j.State.Releases[0] == j.Backup {
		j.State.Releases = j.State.Releases[1:]
	}
	if err := s.finish(&j); err != nil {
		return State{}, err
	}
	return j.State, nil
}

// keptReleases is the rollback history, newest first, with at most keep-1
// entries: the live release counts as one of keep.
func keptReleases(newest string, older []string, keep int) []string {
	out := []string{newest}
	for _, r := range older {
		if r != newest && len(out) < keep-1 {
			out = append(out, r)
		}
	}
	if keep-1 < len(out) {
		out = out[:keep-1]
	}
	return out
}

func (s *Store) writeJournal(j *journal) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return WriteFile(s.journalPath(), b, 0o600)
}

func (s *Store) readJournal() (*journal, error) {
	b, err := os.ReadFile(s.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		// WriteFile never leaves a torn journal; this one was edited by hand.
		return nil, fmt.Errorf("%s is corrupt (%v); move it away to continue", s.journalPath(), err)
	}
	return &j, nil
}

// finish records the new state, then drops the journal and what the
// switch left over. Only the state write must be durable before the
// journal goes: replaying a journal whose switch is done changes nothing.
func (s *Store) finish(j *journal) error {
	if err := s.writeState(j.State); err != nil {
		return err
	}
	crashPoint("remove journal")
	if err := os.Remove(s.journalPath()); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	// Leftovers, not needed for consistency: a crash here is harmless.
	os.RemoveAll(filepath.Join(s.stagingDir(), j.To))
	s.prune(j.State)
	return nil
}

// prune removes release directories that are neither live nor kept.
func (s *Store) prune(st State) {
	keep := map[string]bool{}
	for _, r := range st.Releases {
		keep[r] = true
	}
	if s.mode == Symlink {
		keep[st.Version] = true
	}
	entries, _ := os.ReadDir(s.releasesDir())
	for _, e := range entries {
		if !keep[e.Name()] {
			os.RemoveAll(filepath.Join(s.releasesDir(), e.Name()))
		}
	}
}

// Recover finishes a switch that a crash interrupted: forward when every
// new file is in staging or already in the app, else back to the old
// release. Without a journal it does nothing. Call it (under the lock)
// before anything else touches the app.
func (s *Store) Recover() error {
	j, err := s.readJournal()
	if err != nil || j == nil {
		return err
	}
	if j.Mode == Symlink {
		return s.recoverSymlink(j)
	}
	return s.recoverInPlace(j)
}

// PendingSwitch reports the switch an unfinished journal in the state dir
// records ("", "" when none): it is finished by the next Recover.
func PendingSwitch(stateDir string) (from, to string, err error) {
	j, err := (&Store{dir: stateDir}).readJournal()
	if err != nil || j == nil {
		return "", "", err
	}
	return j.From, j.To, nil
}

// ---- in-place ----

// installInPlace renames each staged file into the app dir, first moving
// the file it replaces into releases/<backup>/ (for rollback).
func (s *Store) installInPlace(j *journal) error {
	// Refuse before the journal what would fail half-way: a directory
	// where a file goes, a path through a symlink out of the app dir.
	for _, f := range j.State.Files {
		if _, err := s.targetMeta(f.Path); err != nil {
			return err
		}
	}
	// A backup left from an earlier switch away from this version is stale.
	if err := os.RemoveAll(filepath.Join(s.releasesDir(), j.Backup)); err != nil {
		return err
	}
	sw, err := s.openSwitch(j)
	if err != nil {
		return err
	}
	defer sw.close()
	if err := s.writeJournal(j); err != nil {
		return err
	}
	for _, f := range j.State.Files {
		if err := sw.forward(f.Path); err != nil {
			return fmt.Errorf("switch %s: %w (the next run of ota-agent finishes the switch)", f.Path, err)
		}
	}
	return nil
}

func (s *Store) recoverInPlace(j *journal) error {
	sw, err := s.openSwitch(j)
	if err != nil {
		return err
	}
	defer sw.close()
	complete := true
	for _, f := range j.State.Files {
		if !sw.isStaged(f.Path) && !sw.appHas(f) {
			complete = false
		}
	}
	if complete {
		s.log.Warn().Str("from", j.From).Str("to", j.To).Msg("an interrupted switch is rolled forward")
		for _, f := range j.State.Files {
			if err := sw.forward(f.Path); err != nil {
				return fmt.Errorf("recover %s: %w", f.Path, err)
			}
		}
		return s.finish(j)
	}
	s.log.Warn().Str("from", j.From).Str("to", j.To).Msg("new files are missing: an interrupted switch is rolled back")
	for _, f := range j.State.Files {
		if err := sw.back(f); err != nil {
			return fmt.Errorf("roll back %s: %w", f.Path, err)
		}
	}
	crashPoint("remove journal")
	if err := os.Remove(s.journalPath()); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// switcher holds the three trees of an in-place switch. The app tree is
// an os.Root: nothing it does can reach outside the app dir, whatever
// symlinks are placed in it or swapped in meanwhile.
type switcher struct {
	s                   *Store
	app, staged, backup *os.Root
	uid, gid            int
}

func (s *Store) openSwitch(j *journal) (*switcher, error) {
	backupDir := filepath.Join(s.releasesDir(), j.Backup)
	stagedDir := filepath.Join(s.stagingDir(), j.To)
	for _, d := range []string{backupDir, stagedDir} {
		if err := mkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	sw := &switcher{s: s}
	var err error
	if sw.app, err = os.OpenRoot(s.appDir); err != nil {
		return nil, err
	}
	fi, err := sw.app.Stat(".")
	if err != nil {
		sw.close()
		return nil, err
	}
	sw.uid, sw.gid = owner(fi)
	if sw.staged, err = os.OpenRoot(stagedDir); err != nil {
		sw.close()
		return nil, err
	}
	if sw.backup, err = os.OpenRoot(backupDir); err != nil {
		sw.close()
		return nil, err
	}
	return sw, nil
}

func (sw *switcher) close() {
	for _, r := range []*os.Root{sw.app, sw.staged, sw.backup} {
		if r != nil {
			r.Close()
		}
	}
}

func (sw *switcher) isStaged(p string) bool {
	_, err := sw.staged.Lstat(p)
	return err == nil
}

// appHas reports whether the app holds f's new content.
func (sw *switcher) appHas(f File) bool {
	fi, err := sw.app.Lstat(f.Path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != f.Size {
		return false
	}
	sum, _, err := hashFile(filepath.Join(sw.s.appDir, f.Path))
	return err == nil && sum == f.SHA256
}

// forward switches one file: the app's file (if any) into the backup, then
// the staged file into the app. Each rename is followed by fsyncs of both
// directories it touched, so it is durable before the next one starts.
// Idempotent: a file no longer in staging is already switched.
func (sw *switcher) forward(p string) error {
	if !sw.isStaged(p) {
		return nil
	}
	dir, base := path.Split(p)
	appParent, err := openDir(sw.app, dir, sw.uid, sw.gid)
	if err != nil {
		return err
	}
	defer appParent.Close()
	stagedParent, err := openDir(sw.staged, dir, -1, -1)
	if err != nil {
		return err
	}
	defer stagedParent.Close()
	if _, err := sw.app.Lstat(p); err == nil {
		backupParent, err := openDir(sw.backup, dir, -1, -1)
		if err != nil {
			return err
		}
		defer backupParent.Close()
		if err := renameSync("move old "+p, appParent, base, backupParent, base); err != nil {
			return err
		}
	}
	return renameSync("move new "+p, stagedParent, base, appParent, base)
}

// back undoes forward for one file: the new file returns to staging (so a
// later run can reuse it) and the old one comes back from the backup.
func (sw *switcher) back(f File) error {
	dir, base := path.Split(f.Path)
	appParent, err := openDir(sw.app, dir, sw.uid, sw.gid)
	if err != nil {
		return err
	}
	defer appParent.Close()
	if !sw.isStaged(f.Path) && sw.appHas(f) {
		stagedParent, err := openDir(sw.staged, dir, -1, -1)
		if err != nil {
			return err
		}
		defer stagedParent.Close()
		if err := renameSync("unmove new "+f.Path, appParent, base, stagedParent, base); err != nil {
			return err
		}
	}
	if _, err := sw.backup.Lstat(f.Path); err == nil {
		backupParent, err := openDir(sw.backup, dir, -1, -1)
		if err != nil {
			return err
		}
		defer backupParent.Close()
		return renameSync("unmove old "+f.Path, backupParent, base, appParent, base)
	}
	return nil
}

// openDir opens dir inside root, creating missing components (0755, owned
// by uid:gid when uid >= 0 and we are root). Each creation is fsynced in
// its parent before a file is renamed into it: the rename's own fsync pair
// covers the new directory's content, not its entry in the parent.
func openDir(root *os.Root, dir string, uid, gid int) (*os.File, error) {
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if dir != "." {
		parts := strings.Split(dir, "/")
		for i := range parts {
			sub := strings.Join(parts[:i+1], "/")
			if _, err := root.Lstat(sub); err == nil {
				continue
			}
			crashPoint("mkdir " + sub)
			err := root.Mkdir(sub, 0o755)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if uid >= 0 && os.Geteuid() == 0 {
				if err := root.Lchown(sub, uid, gid); err != nil {
					return nil, err
				}
			}
			if err := syncIn(root, path.Dir(sub)); err != nil {
				return nil, err
			}
		}
	}
	d, err := root.Open(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := d.Stat(); err != nil || !fi.IsDir() {
		d.Close()
		return nil, fmt.Errorf("%s in %s is not a directory", dir, root.Name())
	}
	return d, nil
}

// syncIn fsyncs the directory dir inside root.
func syncIn(root *os.Root, dir string) error {
	crashPoint("fsync dir " + path.Join(filepath.Base(root.Name()), dir))
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s/%s: %w", root.Name(), dir, err)
	}
	return nil
}

// renameSync renames between two open directories, then fsyncs both: the
// rename is durable before the caller goes on (its fsync pair).
func renameSync(step string, from *os.File, oldname string, to *os.File, newname string) error {
	crashPoint(step)
	if err := unix.Renameat(int(from.Fd()), oldname, int(to.Fd()), newname); err != nil {
		return fmt.Errorf("rename %s/%s to %s/%s: %w", from.Name(), oldname, to.Name(), newname, err)
	}
	crashPoint("fsync after " + step)
	if err := to.Sync(); err != nil {
		return err
	}
	return from.Sync()
}

// ---- symlink ----

func (s *Store) tmpLink() string { return s.appDir + ".ota-new" }

// installSymlink moves the staged tree to releases/<version>/ and points
// app_dir at it with one rename. A real directory at app_dir is swapped
// with the new symlink atomically (RENAME_EXCHANGE) and kept as a release.
func (s *Store) installSymlink(j *journal) error {
	rel := filepath.Join(s.releasesDir(), j.To)
	if target, _ := os.Readlink(s.appDir); target == rel {
		return s.writeJournal(j) // already live (state was lost): just record it
	}
	if err := mkdirAll(s.releasesDir(), 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(rel); err != nil {
		return err
	}
	// releases/<backup> receives a real app dir that the switch displaces.
	// When app_dir is already a symlink nothing is displaced, and
	// releases/<backup> is the live release: it must stay.
	if fi, err := os.Lstat(s.appDir); err == nil && fi.IsDir() {
		if err := os.RemoveAll(filepath.Join(s.releasesDir(), j.Backup)); err != nil {
			return err
		}
	}
	if err := syncDir(s.releasesDir()); err != nil {
		return err
	}
	// The index must not become part of the release the app sees. Losing
	// it now only costs a re-download if the switch is undone. The removal
	// is made durable before the move: the move's fsyncs (releases/,
	// staging/) do not cover the moved directory's own entries.
	crashPoint("remove index")
	if err := os.Remove(filepath.Join(s.stagingDir(), j.To, indexName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := syncDir(filepath.Join(s.stagingDir(), j.To)); err != nil {
		return err
	}
	// The whole tree moves with one rename; its files were fsynced in staging.
	crashPoint("move staged release")
	if err := os.Rename(filepath.Join(s.stagingDir(), j.To), rel); err != nil {
		return err
	}
	if err := syncDir(s.releasesDir()); err != nil {
		return err
	}
	if err := syncDir(s.stagingDir()); err != nil {
		return err
	}
	if err := s.writeJournal(j); err != nil {
		return err
	}
	return s.pointAt(j, rel)
}

// pointAt makes app_dir a symlink to rel.
func (s *Store) pointAt(j *journal, rel string) error {
	tmp := s.tmpLink()
	parent := filepath.Dir(s.appDir)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	crashPoint("create symlink")
	if err := os.Symlink(rel, tmp); err != nil {
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	fi, err := os.Lstat(s.appDir)
	if err == nil && fi.IsDir() {
		crashPoint("exchange app dir")
		if err := exchange(tmp, s.appDir); err != nil {
			return fmt.Errorf("swap %s with a symlink: %w", s.appDir, err)
		}
		if err := syncDir(parent); err != nil {
			return err
		}
		return s.keepOldDir(j)
	}
	crashPoint("rename symlink")
	if err := os.Rename(tmp, s.appDir); err != nil {
		return err
	}
	return syncDir(parent)
}

// keepOldDir moves a real app dir that a switch displaced (now at the
// temp name) into releases/<backup>/.
func (s *Store) keepOldDir(j *journal) error {
	crashPoint("keep old app dir")
	if err := os.Rename(s.tmpLink(), filepath.Join(s.releasesDir(), j.Backup)); err != nil {
		return err
	}
	if err := syncDir(s.releasesDir()); err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.appDir))
}

func (s *Store) recoverSymlink(j *journal) error {
	if fi, err := os.Lstat(s.tmpLink()); err == nil {
		if fi.IsDir() {
			if err := s.keepOldDir(j); err != nil {
				return err
			}
		} else if err := os.Remove(s.tmpLink()); err != nil {
			return err
		}
	}
	rel := filepath.Join(s.releasesDir(), j.To)
	if target, _ := os.Readlink(s.appDir); target == rel {
		s.log.Warn().Str("to", j.To).Msg("an interrupted switch is rolled forward")
		return s.finish(j)
	}
	s.log.Warn().Str("from", j.From).Str("to", j.To).Msg("an interrupted switch is rolled back")
	crashPoint("remove journal")
	if err := os.Remove(s.journalPath()); err != nil {
		return err
	}
	return syncDir(s.dir)
}
