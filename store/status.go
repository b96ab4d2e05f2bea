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
// purpose: no fsync, a plain temp file and rename so readers never see half.
func WriteStatus(dir, app string, st Status) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, app+".json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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

// ReleaseDirs lists the release directories kept under the app's state dir.
func ReleaseDirs(stateDir string) []string {
	entries, _ := os.ReadDir(filepath.Join(stateDir, "releases"))
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}
