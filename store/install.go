package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ota-agent/ota-agent/wire"
)

// journal records a switch before it changes the app, so that a crash or
// a power cut at any later instant is finished (or undone) by Recover.
type journal struct {
	Schema int    `json:"schema"`
	Mode   Mode   `json:"mode"`
	From   string `json:"from"`
	To     string `json:"to"`
	// Backup is the directory under releases/ that receives what the
	// switch displaces: replaced files (in-place) or a real app dir (symlink).
	Backup string `json:"backup"`
	State  State  `json:"state"` // written when the switch is complete
	Old    State  `json:"old"`   // the state before, put back by a rollback
	plan          // in-place: what else the switch changes
	// Back is set once the switch is being undone: Recover goes on
	// undoing it rather than try the way that failed again.
	Back bool `json:"back,omitempty"`
	// Failed says why the last attempt to finish or undo the switch
	// failed: `status` shows it until a later attempt succeeds.
	Failed string `json:"failed,omitempty"`
}

// ErrNothingStaged is returned by Install for a stage without files.
var ErrNothingStaged = errors.New("no files staged")

// Install switches the staged release into the app and records it in
// state.json. It is all or nothing: on an error the app is left whole on
// the old release (the error says so) and the stage is kept for the next
// run; a crash at any instant leaves the old or the new release complete,
// and Recover (run at the next start) finishes or undoes the switch. On
// success the stage is consumed and the new State returned.
func (s *Store) Install(st *Stage) (State, error) { return s.InstallWith(st, InstallOptions{}) }

// InstallWith is Install, with what o says recorded in the new state.
func (s *Store) InstallWith(st *Stage, o InstallOptions) (State, error) {
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
	// The index stays until the switch is done: should it be undone, the
	// staged files are reused by the next run.
	st.Close()
	j := s.newJournal(cur, st.version, files)
	j.State.Sequence = max(cur.Sequence, st.sequence) // never lowered, not even by a rollback
	j.State.Trial = o.Trial
	if r := o.Rollback; r != nil {
		j.State.LastRollback = r
		j.State.markBad(r.From, r.Reason, r.At)
	}
	if s.mode == Symlink {
		err = s.installSymlink(&j)
	} else {
		err = s.installInPlace(&j, cur)
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

// newJournal is the journal of a switch from cur to release version.
func (s *Store) newJournal(cur State, version string, files []File) journal {
	j := journal{Schema: SchemaVersion, Mode: s.mode, From: cur.Version, To: version, Old: cur}
	j.Backup = cur.Version
	if j.Backup == "" || j.Backup == version {
		j.Backup = "_before-" + version // '_' cannot start a tag: no clash
	}
	j.State = State{Version: version, InstalledAt: time.Now().UTC(), Install: s.mode, Previous: cur.Version, Files: files,
		Bad: cur.Bad, LastRollback: cur.LastRollback}
	j.State.Releases = keptReleases(j.Backup, cur.Releases, s.keep)
	return j
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

// readJournal returns the pending switch, nil if none. Its tags and paths
// pass the checks the server's get: a journal names directories to write.
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
	if err := j.check(); err != nil {
		return nil, fmt.Errorf("%s is not a journal ota-agent wrote (%v); move it away to continue", s.journalPath(), err)
	}
	return &j, nil
}

func (j *journal) check() error {
	if err := wire.CheckTag(j.To); err != nil {
		return err
	}
	if j.From != "" {
		if err := wire.CheckTag(j.From); err != nil {
			return err
		}
	}
	if err := wire.CheckTag(strings.TrimPrefix(j.Backup, "_before-")); err != nil {
		return err
	}
	if j.Mode != InPlace && j.Mode != Symlink {
		return fmt.Errorf("install mode %q", j.Mode)
	}
	if err := j.State.check(); err != nil {
		return err
	}
	if err := j.Old.check(); err != nil {
		return err
	}
	for _, p := range append(append(slices.Clone(j.Remove), j.Displaced...), append(rmdirPaths(j.Rmdirs), rmdirPaths(j.Mkdirs)...)...) {
		if err := wire.CheckPath(p); err != nil {
			return err
		}
	}
	return nil
}

// dropJournal ends a switch: the journal goes, durably.
func (s *Store) dropJournal() error {
	crashPoint("remove journal")
	if err := os.Remove(s.journalPath()); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// finish records the new state, then drops the journal and what the
// switch left over. Only the state write must be durable before the
// journal goes: replaying a journal whose switch is done changes nothing.
func (s *Store) finish(j *journal) error {
	if err := s.writeState(j.State); err != nil {
		return err
	}
	if err := s.dropJournal(); err != nil {
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

// Recover finishes a switch that a crash interrupted, or undoes it when it
// cannot be finished. Without a journal it does nothing. An error means the
// app may hold a mix of releases: the journal stays, with the cause (see
// PendingSwitch), for the next attempt. Call it (under the lock) before
// anything else touches the app.
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

// Pending is a switch an unfinished journal records: Recover finishes it.
type Pending struct {
	From, To string
	Failed   string // why the last attempt failed, "" if none did
}

// PendingSwitch reports the switch an unfinished journal in the state dir
// records (nil when none).
func PendingSwitch(stateDir string) (*Pending, error) {
	j, err := (&Store{dir: stateDir}).readJournal()
	if err != nil || j == nil {
		return nil, err
	}
	return &Pending{From: j.From, To: j.To, Failed: j.Failed}, nil
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
