package agent

import (
	"time"

	"github.com/ota-agent/ota-agent/store"
)

// Status is one app as `status` shows it; its JSON is the documented shape
// of `status --json`.
type Status struct {
	Name        string        `json:"name"`
	AppDir      string        `json:"app_dir"`
	StateDir    string        `json:"state_dir"`
	Install     store.Mode    `json:"install"`
	Version     string        `json:"version"` // "" when nothing is installed
	InstalledAt *time.Time    `json:"installed_at"`
	Previous    string        `json:"previous"`
	Files       int           `json:"files"`
	Releases    []string      `json:"releases"` // directories kept for rollback
	Pending     *Pending      `json:"pending"`  // an interrupted switch, until recover runs
	LastCheck   *store.Status `json:"last_check"`
	// Trial is the release on trial, null when none; BadVersions the
	// releases not installed again while the server names them.
	Trial        *TrialStatus       `json:"trial"`
	BadVersions  []store.BadVersion `json:"bad_versions"`
	LastRollback *store.Rollback    `json:"last_rollback"`
	// Error says why this app's state could not be read.
	Error string `json:"error,omitempty"`
}

// TrialStatus is a release on trial.
type TrialStatus struct {
	Version      string    `json:"version"`
	Since        time.Time `json:"since"`
	Deadline     time.Time `json:"deadline"` // Since + the trial: the earliest commit
	BootAttempts int       `json:"boot_attempts"`
}

// Pending is an interrupted switch.
type Pending struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Failed string `json:"failed,omitempty"` // why the last attempt to finish it failed
}

// StatusOf reads app's status without its lock and without changing
// anything, so it answers while an update runs. The last check comes from
// runtimeDir. On an error the status holds what could be read.
func StatusOf(app App, runtimeDir string) (Status, error) {
	s := Status{Name: app.Name, AppDir: app.AppDir, StateDir: app.StateDir(), Install: app.Install, Releases: []string{}, BadVersions: []store.BadVersion{}}
	v, err := store.Inspect(app.StateDir())
	if err != nil {
		return s, err
	}
	st := v.State
	s.Version, s.Previous, s.Files, s.Releases = st.Version, st.Previous, len(st.Files), v.Releases
	if st.Version != "" {
		s.InstalledAt = &st.InstalledAt
		if st.Install != "" {
			s.Install = st.Install
		}
	}
	s.BadVersions, s.LastRollback = st.Bad, st.LastRollback
	if s.BadVersions == nil {
		s.BadVersions = []store.BadVersion{}
	}
	if t := st.Trial; t != nil {
		s.Trial = &TrialStatus{Version: t.Version, Since: t.Since, Deadline: t.Since.Add(app.Trial), BootAttempts: t.BootAttempts}
	}
	if p := v.Pending; p != nil {
		s.Pending = &Pending{From: p.From, To: p.To, Failed: p.Failed}
	}
	if last, ok, err := store.ReadStatus(runtimeDir, app.Name); err == nil && ok {
		s.LastCheck = &last
	}
	return s, nil
}
