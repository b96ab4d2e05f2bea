package store

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// DefaultRuntimeDir holds what changes at every check. It is a tmpfs on
// systemd boards (RuntimeDirectory=), so routine checks never wear the SD card.
const DefaultRuntimeDir = "/run/ota-agent"

// Check outcomes recorded in Status.
const (
	OutcomeUpToDate    = "up-to-date"
	OutcomeAvailable   = "update-available"
	OutcomeUpdated     = "updated"
	OutcomeUnreachable = "unreachable"
	OutcomeFailed      = "failed"
)

// Status is the last check of one app, kept in <runtime_dir>/<app>.json.
type Status struct {
	At       time.Time `json:"at"`
	Outcome  string    `json:"outcome"`
	Remote   string    `json:"remote,omitempty"`
	Error    string    `json:"error,omitempty"`
	ETag     string    `json:"etag,omitempty"`
	Modified string    `json:"last_modified,omitempty"`
}

// WriteStatus records app's last check under dir. It is volatile on
// purpose (the runtime dir is a tmpfs): written whole under a temp name and
// renamed, so readers never see half, but not fsynced.
func WriteStatus(dir, app string, st Status) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, app+".json"), b, 0o644, false)
}

// ReadStatus returns app's last check; ok is false if none was recorded
// since boot.
func ReadStatus(dir, app string) (st Status, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, app+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	return st, true, json.Unmarshal(b, &st)
}

// View is what the state dir of one app holds, read without its lock and
// changing nothing: what `status` shows while an update may run.
type View struct {
	State State
	// Releases are the release directories kept for rollback, the live
	// one (symlink mode) left out.
	Releases []string
	Pending  *Pending // an unfinished switch, nil if none
}

// Inspect reads the view of the app whose state dir is stateDir.
func Inspect(stateDir string) (View, error) {
	var v View
	var err error
	if v.State, err = ReadState(stateDir); err != nil {
		return v, err
	}
	entries, _ := os.ReadDir(filepath.Join(stateDir, "releases"))
	v.Releases = []string{}
	for _, e := range entries {
		if e.IsDir() && e.Name() != v.State.Version && !isTempName(e.Name()) {
			v.Releases = append(v.Releases, e.Name())
		}
	}
	v.Pending, err = PendingSwitch(stateDir)
	return v, err
}
