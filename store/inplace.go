package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// An in-place switch, in order:
//
//  1. plan: what the release changes, checked through the app dir's root
//     before anything changes (planInPlace);
//  2. backup: everything the switch displaces is linked (or copied) into
//     releases/<backup>/, durably; the app is untouched;
//  3. journal: the plan is written to the journal;
//  4. forward: installed files that left the release are removed, then
//     directories removed and made, then each new file is linked (or
//     copied) from staging beside its target and renamed over it.
//
// Staging and the backup are only ever read, so from the journal on the
// switch can be redone (forward) or undone (back) from any instant, each
// step as often as needed. Any error in forward undoes it: the app is left
// whole on the old release and the journal removed.

// installInPlace switches the staged release into the app dir.
func (s *Store) installInPlace(j *journal, cur State) error {
	sw, err := s.prepareInPlace(j, cur)
	if err != nil {
		return err
	}
	defer sw.close()
	if err := sw.forward(); err != nil {
		return s.undo(sw, fmt.Errorf("switch to %s: %w", j.To, err))
	}
	return nil
}

// prepareInPlace plans the switch, backs up what it displaces and writes
// the journal: from its return on, the switch can go either way.
func (s *Store) prepareInPlace(j *journal, cur State) (*switcher, error) {
	app, err := s.openApp()
	if err != nil {
		return nil, err
	}
	j.plan, err = s.planInPlace(app, cur, filePaths(j.State.Files))
	app.Close()
	if err != nil {
		return nil, err
	}
	// A backup left from an earlier switch away from this version is stale.
	if err := os.RemoveAll(filepath.Join(s.releasesDir(), j.Backup)); err != nil {
		return nil, err
	}
	sw, err := s.openSwitch(j)
	if err != nil {
		return nil, err
	}
	if err := sw.checkFree(); err != nil {
		sw.close()
		return nil, err
	}
	for _, p := range j.Displaced {
		if err := sw.backupFile(p); err != nil {
			sw.close()
			return nil, fmt.Errorf("back up %s: %w", p, err)
		}
	}
	if err := s.writeJournal(j); err != nil {
		sw.close()
		return nil, err
	}
	return sw, nil
}

// undo rolls a failed switch back and drops its journal. If the rollback
// fails too, the journal stays with the cause, for Recover and `status`.
func (s *Store) undo(sw *switcher, cause error) error {
	j := sw.j
	if !j.Back {
		j.Back = true
		// Should this write fail (a full disk), the undo goes on: a
		// crash before it ends then tries forward first, as before.
		s.writeJournal(j)
	}
	if err := sw.back(); err != nil {
		j.Failed = fmt.Sprintf("%v; rolling back: %v", cause, err)
		if werr := s.writeJournal(j); werr != nil {
			err = errors.Join(err, werr)
		}
		return fmt.Errorf("%w; rolling back to %s failed too: %w (ota-agent recover retries)", cause, versionName(j.From), err)
	}
	// A crash after state.json named the new release, then a failed
	// attempt to finish: the old state comes back with the old files.
	if st, err := ReadState(s.dir); err == nil && st.Version == j.To && j.From != j.To {
		if err := s.writeState(j.Old); err != nil {
			return errors.Join(cause, err)
		}
	}
	if err := s.dropJournal(); err != nil {
		return errors.Join(cause, err)
	}
	return fmt.Errorf("%w; rolled back: the app is on %s as before", cause, versionName(j.From))
}

// recoverInPlace finishes the journal's switch, or undoes it when it
// cannot be finished (a staged file lost to a power cut, a new error).
func (s *Store) recoverInPlace(j *journal) error {
	sw, err := s.openSwitch(j)
	if err != nil {
		return err
	}
	defer sw.close()
	if j.Back {
		err = errors.New("an undo was interrupted")
	} else {
		err = sw.forward()
	}
	if err == nil {
		s.log.Warn().Str("from", j.From).Str("to", j.To).Msg("an interrupted switch is rolled forward")
		return s.finish(j)
	}
	s.log.Warn().Err(err).Str("from", j.From).Str("to", j.To).Msg("an interrupted switch cannot be finished: it is rolled back")
	j.Failed = ""
	err = s.undo(sw, fmt.Errorf("finish the switch to %s: %w", j.To, err))
	if j.Failed == "" {
		return nil // rolled back: the app is whole on the old release
	}
	return err
}

// switcher holds the three trees of an in-place switch. The app tree is
// an os.Root: nothing it does can reach outside the app dir, whatever
// symlinks are placed in it or swapped in meanwhile.
type switcher struct {
	s                   *Store
	j                   *journal
	app, staged, backup *os.Root
	uid, gid            int
	displaced           map[string]bool // paths with a backup
}

func (s *Store) openSwitch(j *journal) (*switcher, error) {
	backupDir := filepath.Join(s.releasesDir(), j.Backup)
	stagedDir := filepath.Join(s.stagingDir(), j.To)
	// The staged dir is gone once a switch is complete and a later run
	// staged another version: placeNew then finds the files in place.
	for _, d := range []string{backupDir, stagedDir} {
		if err := mkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	sw := &switcher{s: s, j: j}
	sw.displaced = make(map[string]bool, len(j.Displaced))
	for _, p := range j.Displaced {
		sw.displaced[p] = true
	}
	var err error
	if sw.app, err = os.OpenRoot(s.appDir); err != nil {
		return nil, err
	}
	sw.uid, sw.gid = s.appOwner(sw.app)
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

// checkFree fails with ErrNoSpace when the bytes the switch must copy
// (across mounts) do not fit: new files on the app dir's filesystem,
// backups on the state dir's.
func (sw *switcher) checkFree() error {
	app, err := sw.app.Open(".")
	if err != nil {
		return err
	}
	defer app.Close()
	staged, err := sw.staged.Open(".")
	if err != nil {
		return err
	}
	defer staged.Close()
	backup, err := sw.backup.Open(".")
	if err != nil {
		return err
	}
	defer backup.Close()
	if !sameMount(staged, app) {
		var need int64
		for _, f := range sw.j.State.Files {
			need += f.Size
		}
		if err := (&Store{dir: sw.s.appDir}).CheckFree(need); err != nil {
			return err
		}
	}
	if !sameMount(app, backup) {
		var need int64
		for _, p := range sw.j.Displaced {
			if fi, err := sw.app.Lstat(p); err == nil {
				need += fi.Size()
			}
		}
		if err := sw.s.CheckFree(need); err != nil {
			return err
		}
	}
	return nil
}

// backupFile keeps the app's entry at p in the backup, the app untouched.
func (sw *switcher) backupFile(p string) error {
	dir, base := path.Split(p)
	from, err := sw.app.Open(dirOrDot(dir))
	if err != nil {
		return err
	}
	defer from.Close()
	to, err := openDir(sw.backup, dir, -1, -1)
	if err != nil {
		return err
	}
	defer to.Close()
	_, err = placeFile("backup "+p, from, base, to, base)
	return err
}

// forward does the switch; every step may be done again.
func (sw *switcher) forward() error { return run(sw.forwardSteps()) }

// back undoes forward from wherever it stopped; every step may be done
// again. The old files come back from the backup, which stays whole.
func (sw *switcher) back() error { return run(sw.backSteps()) }

func run(steps []func() error) error {
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// forwardSteps are forward's steps in order: installed files that left the
// release go, then directories go and come, then each new file is placed.
func (sw *switcher) forwardSteps() []func() error {
	var steps []func() error
	for _, p := range sw.j.Remove {
		steps = append(steps, func() error { return sw.removeFile("old "+p, p) })
	}
	for _, d := range sw.j.Rmdirs {
		steps = append(steps, func() error { return sw.rmdir(d.Path) })
	}
	for _, d := range sw.j.Mkdirs {
		steps = append(steps, func() error { return sw.mkdir(d) })
	}
	for _, f := range sw.j.State.Files {
		steps = append(steps, func() error { return sw.placeNew(f) })
	}
	return steps
}

// backSteps are back's steps in order: the new files go (or the old ones
// come back over them), then directories, then the removed files return.
func (sw *switcher) backSteps() []func() error {
	var steps []func() error
	for _, f := range slices.Backward(sw.j.State.Files) {
		steps = append(steps, func() error { return sw.restore(f.Path, true) })
	}
	for _, d := range slices.Backward(sw.j.Mkdirs) {
		steps = append(steps, func() error {
			// Something else in it (the app's own file) keeps it.
			if err := sw.rmdir(d.Path); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTDIR) {
				return err
			}
			return nil
		})
	}
	for _, d := range slices.Backward(sw.j.Rmdirs) {
		steps = append(steps, func() error { return sw.mkdir(d) })
	}
	for _, p := range sw.j.Remove {
		steps = append(steps, func() error { return sw.restore(p, false) })
	}
	return steps
}

// placeNew places the staged file f in the app. A staged file that is
// gone is fine only where the app already holds its content.
func (sw *switcher) placeNew(f File) error {
	p := f.Path
	dir, base := path.Split(p)
	if _, err := sw.staged.Lstat(p); errors.Is(err, fs.ErrNotExist) && sw.appHas(f) {
		return nil
	}
	from, err := sw.staged.Open(dirOrDot(dir))
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer from.Close()
	to, err := openDir(sw.app, dir, sw.uid, sw.gid)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer to.Close()
	if _, err := placeFile("new "+p, from, base, to, base); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// restore puts the backup's entry for p back in the app; without one, p
// was new (isNew) and is removed.
func (sw *switcher) restore(p string, isNew bool) error {
	dir, base := path.Split(p)
	if !sw.displaced[p] {
		if !isNew {
			return nil
		}
		to, err := sw.app.Open(dirOrDot(dir))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return nil // its directory was never made
		}
		if err != nil {
			return err
		}
		defer to.Close()
		if err := unlinkIfExists(to, tmpName(base)); err != nil {
			return err
		}
		if fi, err := sw.app.Lstat(p); err != nil || fi.IsDir() {
			return nil
		}
		return removeEntry("new "+p, to, base)
	}
	if sw.unchanged(p) {
		// Never replaced: copying it back could only fail (a full disk).
		return nil
	}
	from, err := sw.backup.Open(dirOrDot(dir))
	if err != nil {
		return err
	}
	defer from.Close()
	to, err := openDir(sw.app, dir, sw.uid, sw.gid)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer to.Close()
	if _, err := placeFile("restore "+p, from, base, to, base); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// unchanged reports whether the app's entry at p is still the one the
// backup holds: the same file (linked), or a file or symlink just like it
// (copied).
func (sw *switcher) unchanged(p string) bool {
	a, err := sw.app.Lstat(p)
	if err != nil {
		return false
	}
	b, err := sw.backup.Lstat(p)
	if err != nil || a.Mode() != b.Mode() || a.Size() != b.Size() {
		return false
	}
	if os.SameFile(a, b) {
		return true
	}
	if a.Mode()&fs.ModeSymlink != 0 {
		x, err1 := sw.app.Readlink(p)
		y, err2 := sw.backup.Readlink(p)
		return err1 == nil && err2 == nil && x == y
	}
	if !a.Mode().IsRegular() {
		return false
	}
	sum := func(r *os.Root) string {
		f, err := r.Open(p)
		if err != nil {
			return ""
		}
		defer f.Close()
		h, _ := hashReader(f)
		return h
	}
	x := sum(sw.app)
	return x != "" && x == sum(sw.backup)
}

// appHas reports whether the app holds f's content.
func (sw *switcher) appHas(f File) bool {
	fi, err := sw.app.Lstat(f.Path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != f.Size {
		return false
	}
	r, err := sw.app.Open(f.Path)
	if err != nil {
		return false
	}
	defer r.Close()
	sum, err := hashReader(r)
	return err == nil && sum == f.SHA256
}

// removeFile removes the app's file at p (its backup is made).
func (sw *switcher) removeFile(step, p string) error {
	dir, base := path.Split(p)
	d, err := sw.app.Open(dirOrDot(dir))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return nil // its directory went already
	}
	if err != nil {
		return err
	}
	defer d.Close()
	if fi, err := sw.app.Lstat(p); err != nil || fi.IsDir() {
		return nil
	}
	return removeEntry(step, d, base)
}

// rmdir removes the empty directory p of the app, if it is there (a file
// there is what the switch put in its place).
func (sw *switcher) rmdir(p string) error {
	if fi, err := sw.app.Lstat(p); err != nil || !fi.IsDir() {
		return nil
	}
	d, err := sw.app.Open(path.Dir(p))
	if err != nil {
		return err
	}
	if err != nil {
		return err
	}
	defer d.Close()
	crashPoint("rmdir " + p)
	if err := unix.Unlinkat(int(d.Fd()), path.Base(p), unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove directory %s in %s: %w", p, sw.s.appDir, err)
	}
	crashPoint("fsync after rmdir " + p)
	return d.Sync()
}

// mkdir makes the directory d of the app with its mode and owner, if it
// is not there.
func (sw *switcher) mkdir(d dirMeta) error {
	if fi, err := sw.app.Lstat(d.Path); err == nil && fi.IsDir() {
		return nil
	}
	crashPoint("mkdir " + d.Path)
	if err := sw.app.Mkdir(d.Path, d.Mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("make directory %s in %s: %w", d.Path, sw.s.appDir, err)
	}
	if err := sw.app.Chmod(d.Path, d.Mode); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := sw.app.Lchown(d.Path, d.UID, d.GID); err != nil {
			return err
		}
	}
	return syncIn(sw.app, path.Dir(d.Path))
}

func dirOrDot(dir string) string {
	if dir == "" {
		return "."
	}
	return path.Clean(dir)
}

func filePaths(files []File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Path
	}
	return out
}

func versionName(v string) string {
	if v == "" {
		return "what was there before"
	}
	return v
}
