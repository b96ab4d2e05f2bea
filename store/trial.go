package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ota-agent/ota-agent/wire"
)

// A release is on trial after its switch until it proves healthy (the agent
// commits it) or not (the agent switches back to the release it replaced and
// marks it bad). The trial, the bad versions and the last rollback live in
// state.json, written only on these transitions, so a crash or a reboot
// during a trial leaves it open for the next start to judge.

// Trial is a release on probation.
type Trial struct {
	Version string    `json:"version"`
	From    string    `json:"from"` // what a rollback reinstates; "" after a first install
	Since   time.Time `json:"since"`
	// BootID is the boot (/proc/sys/kernel/random/boot_id) in which the
	// trial was last seen open; BootAttempts counts the boots that started
	// with it open, but the one the agent asked for (RebootPending).
	BootID        string `json:"boot_id,omitempty"`
	BootAttempts  int    `json:"boot_attempts"`
	RebootPending bool   `json:"reboot_pending,omitempty"`
}

// BadVersion is a release that failed its trial (or that an operator
// rolled back by hand): not installed again while the server names it.
type BadVersion struct {
	Version string    `json:"version"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// Rollback is a switch back from a release.
type Rollback struct {
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// InstallOptions say what else the state records with a switch, in the
// same durable write.
type InstallOptions struct {
	// Trial opens a trial of the new release.
	Trial *Trial
	// Rollback records the switch as a rollback from Rollback.From, which
	// is marked bad with Rollback.Reason.
	Rollback *Rollback
}

// ErrNotKept is returned by StageRelease for a release that is not kept.
var ErrNotKept = errors.New("release not kept")

// Bad returns the mark of version, if it is marked bad.
func (st *State) BadMark(version string) (BadVersion, bool) {
	for _, b := range st.Bad {
		if b.Version == version {
			return b, true
		}
	}
	return BadVersion{}, false
}

// markBad records version as bad, replacing an older mark of it.
func (st *State) markBad(version, reason string, at time.Time) {
	st.Bad = slices.DeleteFunc(st.Bad, func(b BadVersion) bool { return b.Version == version })
	st.Bad = append(st.Bad, BadVersion{Version: version, Reason: reason, At: at})
}

// Edit changes the installed state with fn and writes it durably, for a
// transition that switches nothing (a commit, a boot counted, a mark
// cleared). fn's error leaves the state as it was. The caller holds the
// lock. An unchanged state is not written.
func (s *Store) Edit(fn func(*State) error) error {
	st, err := s.State()
	if err != nil {
		return err
	}
	before, err := jsonOf(st)
	if err != nil {
		return err
	}
	if err := fn(&st); err != nil {
		return err
	}
	after, err := jsonOf(st)
	if err != nil || string(after) == string(before) {
		return err
	}
	return s.writeState(st)
}

// StageRelease stages the kept release version from releases/<version>/
// for a switch back to it (a rollback): each file is copied into staging
// and hashed as a download is. In-place, releases/<version>/ holds what
// the switch away from it displaced: its whole release.
func (s *Store) StageRelease(version string) (*Stage, error) {
	if err := wire.CheckTag(version); err != nil {
		return nil, err
	}
	src := filepath.Join(s.releasesDir(), version)
	// In symlink mode the switch removes releases/<version>/ before it
	// moves the staged copy there, so the kept release is set aside first
	// (below). A crash in between left it there: put it back.
	aside := filepath.Join(s.releasesDir(), "."+version+".ota-kept")
	if _, err := os.Lstat(src); s.mode == Symlink && errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Lstat(aside); err == nil {
			crashPoint("put back kept release")
			if err := os.Rename(aside, src); err != nil {
				return nil, err
			}
			if err := syncDir(s.releasesDir()); err != nil {
				return nil, err
			}
		}
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not in %s", ErrNotKept, version, s.releasesDir())
	}
	st, err := s.Stage(version)
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		if rel == indexName || isTempName(e.Name()) || !e.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		_, err = st.Write(rel, f, fi.Size(), max(fi.Size(), 1))
		return err
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("stage kept release %s: %w", version, err)
	}
	if len(st.Files()) == 0 {
		st.Close()
		return nil, fmt.Errorf("%w: %s holds no files", ErrNotKept, src)
	}
	if s.mode == Symlink {
		// Until the switch has moved the staged copy in, the kept release
		// stays whole under another name; prune removes it after the switch.
		err := os.RemoveAll(aside)
		if err == nil {
			crashPoint("set aside kept release")
			err = os.Rename(src, aside)
		}
		if err == nil {
			err = syncDir(s.releasesDir())
		}
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("stage kept release %s: %w", version, err)
		}
	}
	return st, nil
}
