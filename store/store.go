// Package store keeps everything ota-agent holds on the device's disk for
// one app: its state, the lock, staged downloads, kept releases, and the
// switch of a release into the app directory that survives a power cut.
// It knows nothing of HTTP or systemd.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ota-agent/ota-agent/wire"
	"github.com/rs/zerolog"
)

// Mode is how a release is installed into the app directory.
type Mode string

// Install modes. The zero value means InPlace.
const (
	InPlace Mode = "in-place" // files renamed into app_dir, others left alone
	Symlink Mode = "symlink"  // app_dir is a symlink to releases/<version>/
)

// SchemaVersion is the state.json format this build writes and reads.
const SchemaVersion = 1

// File is one installed file of a release.
type File struct {
	Path   string      `json:"path"`
	Size   int64       `json:"size"`
	SHA256 string      `json:"sha256"`
	Mode   fs.FileMode `json:"mode"`
}

// State is state.json: what is installed. It is rewritten only on state
// transitions (an install), never on a routine check, to spare the SD card.
type State struct {
	Schema      int       `json:"schema"`
	Version     string    `json:"version"`
	InstalledAt time.Time `json:"installed_at"`
	Install     Mode      `json:"install"`
	Previous    string    `json:"previous,omitempty"`
	// Releases lists the directories under releases/ kept for rollback,
	// newest first.
	Releases []string `json:"releases,omitempty"`
	Files    []File   `json:"files"`
	// Sequence is the highest sequence of a signed manifest accepted for
	// this app (replay protection); 0 when none was.
	Sequence uint64 `json:"sequence,omitempty"`
	// Trial is open while the release is on probation (see Trial).
	Trial *Trial `json:"trial,omitempty"`
	// Bad lists the releases not to install again while the server names
	// them; LastRollback is the last switch back.
	Bad          []BadVersion `json:"bad_versions,omitempty"`
	LastRollback *Rollback    `json:"last_rollback,omitempty"`
}

// Store is one app's state directory and the app directory it manages.
type Store struct {
	dir    string // <state_dir>/<app>
	appDir string
	mode   Mode
	keep   int
	log    zerolog.Logger
}

// Options configure Open.
type Options struct {
	Mode         Mode // InPlace (default) or Symlink
	KeepReleases int  // releases kept for rollback, at least 1
	Log          zerolog.Logger
}

// Open prepares the state directory dir for the app directory appDir. dir
// is created if missing: 0700 in in-place mode; in symlink mode 0711, since
// the app reads its files through it (app_dir -> dir/releases/<v>/) whatever
// user it runs as. Its missing parents are created 0755. In in-place mode
// appDir is created if missing; in symlink mode its parent must exist. The
// two may be on different mounts or filesystems: a switch then copies what
// it would otherwise link.
func Open(dir, appDir string, o Options) (*Store, error) {
	if o.Mode == "" {
		o.Mode = InPlace
	}
	if o.KeepReleases < 1 {
		o.KeepReleases = 1
	}
	s := &Store{dir: filepath.Clean(dir), appDir: filepath.Clean(appDir), mode: o.Mode, keep: o.KeepReleases, log: o.Log}
	perm := fs.FileMode(0o700)
	if s.mode == Symlink {
		perm = 0o711
	}
	if err := os.MkdirAll(filepath.Dir(s.dir), 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.Mkdir(s.dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	fi, err := os.Stat(s.dir)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if s.mode == Symlink && fi.Mode().Perm()&0o011 != 0o011 {
		// Made private by an earlier in-place Open, or by hand.
		if err := os.Chmod(s.dir, fi.Mode().Perm()|0o011); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	if s.mode == InPlace {
		if err := os.MkdirAll(s.appDir, 0o755); err != nil {
			return nil, fmt.Errorf("app dir: %w", err)
		}
	} else {
		if _, err := os.Stat(filepath.Dir(s.appDir)); err != nil {
			return nil, fmt.Errorf("app dir: %w", err)
		}
		s.warnUnsearchable()
	}
	return s, nil
}

// Dir is the app's state directory.
func (s *Store) Dir() string { return s.dir }

// AppDir is the app directory.
func (s *Store) AppDir() string { return s.appDir }

func (s *Store) statePath() string   { return filepath.Join(s.dir, "state.json") }
func (s *Store) stagingDir() string  { return filepath.Join(s.dir, "staging") }
func (s *Store) releasesDir() string { return filepath.Join(s.dir, "releases") }
func (s *Store) journalPath() string { return filepath.Join(s.dir, "journal") }

// ErrCorruptState marks a state.json that cannot be used: it does not
// parse, or names a tag or a path that is not safe.
var ErrCorruptState = errors.New("corrupt state")

// ReadState returns the installed state. A missing state.json is the zero
// State (Version ""): not installed, so the first run always installs. What
// it names passes the checks a server's answer gets (ErrCorruptState).
func ReadState(dir string) (State, error) {
	var st State
	path := filepath.Join(dir, "state.json")
	b, err := readQuietly(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("%w: %s: %v", ErrCorruptState, path, err)
	}
	if st.Schema > SchemaVersion {
		return State{}, fmt.Errorf("%s: schema %d is newer than this agent's %d", path, st.Schema, SchemaVersion)
	}
	if err := st.check(); err != nil {
		return State{}, fmt.Errorf("%w: %s: %v", ErrCorruptState, path, err)
	}
	return st, nil
}

// check refuses a state whose tags or paths are unsafe: they name
// directories and files the agent writes and removes.
func (st *State) check() error {
	for _, v := range append([]string{st.Version, st.Previous}, st.Releases...) {
		if v == "" {
			continue
		}
		if err := wire.CheckTag(strings.TrimPrefix(v, "_before-")); err != nil {
			return err
		}
	}
	for _, f := range st.Files {
		if err := wire.CheckPath(f.Path); err != nil {
			return err
		}
	}
	if t := st.Trial; t != nil {
		for _, v := range []string{t.Version, t.From} {
			if err := wire.CheckTag(v); v != "" && err != nil {
				return err
			}
		}
	}
	return nil
}

// State returns the installed state (see ReadState). A corrupt state.json
// is moved aside to state.json.corrupt, with a warning, and the app counts
// as not installed: the next update installs the published release.
func (s *Store) State() (State, error) {
	st, err := ReadState(s.dir)
	if !errors.Is(err, ErrCorruptState) {
		return st, err
	}
	aside := s.statePath() + ".corrupt"
	if rerr := os.Rename(s.statePath(), aside); rerr != nil {
		return State{}, errors.Join(err, rerr)
	}
	if rerr := syncDir(s.dir); rerr != nil {
		return State{}, rerr
	}
	s.log.Warn().Err(err).Str("moved_to", aside).Msg("state.json is corrupt and was moved aside; the app counts as not installed, so this update installs the published release")
	return State{}, nil
}

func jsonOf(st State) ([]byte, error) { return json.Marshal(st) }

func (s *Store) writeState(st State) error {
	st.Schema = SchemaVersion
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(s.statePath(), append(b, '\n'), 0o644)
}
