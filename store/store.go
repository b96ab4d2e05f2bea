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
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Install modes.
const (
	InPlace = "in-place" // files renamed into app_dir, others left alone
	Symlink = "symlink"  // app_dir is a symlink to releases/<version>/
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
	Install     string    `json:"install"`
	Previous    string    `json:"previous,omitempty"`
	// Releases lists the directories under releases/ kept for rollback,
	// newest first.
	Releases []string `json:"releases,omitempty"`
	Files    []File   `json:"files"`
}

// Store is one app's state directory and the app directory it manages.
type Store struct {
	dir    string // <state_dir>/<app>
	appDir string
	mode   string
	keep   int
	log    zerolog.Logger
}

// Options configure Open.
type Options struct {
	Mode         string // InPlace (default) or Symlink
	KeepReleases int    // releases kept for rollback, at least 1
	Log          zerolog.Logger
}

// ErrCrossDevice is returned by Open when the state dir and the app dir are
// on different filesystems, where a switch could not be a single rename.
var ErrCrossDevice = errors.New("state dir and app dir are on different filesystems")

// Open prepares the state directory dir for the app directory appDir and
// checks that both are on one filesystem. dir is created if missing: 0700
// in in-place mode; in symlink mode 0711, since the app reads its files
// through it (app_dir -> dir/releases/<v>/) whatever user it runs as. Its
// missing parents are created 0755. In in-place mode appDir is created if
// missing; in symlink mode its parent must exist.
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
	probe := filepath.Dir(s.appDir)
	if s.mode == InPlace {
		if err := os.MkdirAll(s.appDir, 0o755); err != nil {
			return nil, fmt.Errorf("app dir: %w", err)
		}
		probe = s.appDir
	}
	var a, b unix.Stat_t
	if err := unix.Stat(s.dir, &a); err != nil {
		return nil, &os.PathError{Op: "stat", Path: s.dir, Err: err}
	}
	if err := unix.Stat(probe, &b); err != nil {
		return nil, &os.PathError{Op: "stat", Path: probe, Err: err}
	}
	if a.Dev != b.Dev {
		return nil, fmt.Errorf("%w: %s is on device %d:%d, %s on %d:%d; set state_dir to a directory on the app dir's filesystem (for example %s)",
			ErrCrossDevice, s.dir, unix.Major(uint64(a.Dev)), unix.Minor(uint64(a.Dev)), probe, unix.Major(uint64(b.Dev)), unix.Minor(uint64(b.Dev)),
			filepath.Join(filepath.Dir(s.appDir), ".ota-agent"))
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

// ReadState returns the installed state. A missing state.json is the zero
// State (Version ""): not installed, so the first run always installs.
func ReadState(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, "state.json"), err)
	}
	if st.Schema > SchemaVersion {
		return st, fmt.Errorf("%s: schema %d is newer than this agent's %d", filepath.Join(dir, "state.json"), st.Schema, SchemaVersion)
	}
	return st, nil
}

// State returns the installed state (see ReadState).
func (s *Store) State() (State, error) { return ReadState(s.dir) }

func (s *Store) writeState(st State) error {
	st.Schema = SchemaVersion
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(s.statePath(), append(b, '\n'), 0o644)
}
