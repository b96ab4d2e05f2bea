package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/store"
)

func init() {
	commands["status"] = command{cmdStatus, "show what is installed, the last check and the releases kept (--json)"}
}

// appStatus is one app in `status --json`; the README documents the shape.
type appStatus struct {
	Name        string        `json:"name"`
	AppDir      string        `json:"app_dir"`
	StateDir    string        `json:"state_dir"`
	Install     string        `json:"install"`
	Version     string        `json:"version"` // "" when nothing is installed
	InstalledAt *time.Time    `json:"installed_at"`
	Previous    string        `json:"previous"`
	Files       int           `json:"files"`
	Releases    []string      `json:"releases"` // directories kept for rollback
	Pending     *pendingJSON  `json:"pending"`  // an interrupted switch, until recover runs
	LastCheck   *store.Status `json:"last_check"`
	// Error says why this app's state could not be read; the other apps
	// are shown all the same.
	Error string `json:"error,omitempty"`
}

type pendingJSON struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Failed string `json:"failed,omitempty"` // why the last attempt to finish it failed
}

func cmdStatus(ctx context.Context, g *globals, args []string) (err error) {
	a := newAppsCmd(g, "status", "Shows each app's installed version, its last check since boot, the releases kept, and an interrupted switch.")
	asJSON := a.fs.Bool("json", false, "print JSON (shape in the README)")
	cfg, err := a.parse(g, args)
	if err != nil {
		return err
	}
	var out []appStatus
	var failed error
	for _, app := range cfg.Apps {
		s, err := statusOf(app, cfg.RuntimeDir)
		if err != nil {
			s.Error = err.Error()
			failed = exitCodeError{ExitFailed}
		}
		out = append(out, s)
	}
	defer func() {
		if err == nil {
			err = failed
		}
	}()
	if *asJSON {
		b, err := json.MarshalIndent(map[string]any{"apps": out}, "", "  ")
		if err != nil {
			return err
		}
		g.printf("%s\n", b)
		return nil
	}
	for _, s := range out {
		printStatus(g, s)
	}
	return nil
}

func statusOf(app agent.App, runtimeDir string) (appStatus, error) {
	s := appStatus{Name: app.Name, AppDir: app.AppDir, StateDir: app.StateDir(), Install: app.Install, Releases: []string{}}
	st, err := store.ReadState(app.StateDir())
	if err != nil {
		return s, err
	}
	s.Version, s.Previous, s.Files = st.Version, st.Previous, len(st.Files)
	if st.Version != "" {
		s.InstalledAt = &st.InstalledAt
		if st.Install != "" {
			s.Install = st.Install
		}
	}
	for _, r := range store.ReleaseDirs(app.StateDir()) {
		if r != st.Version {
			s.Releases = append(s.Releases, r)
		}
	}
	p, err := store.PendingSwitch(app.StateDir())
	if err != nil {
		return s, err
	}
	if p != nil {
		s.Pending = &pendingJSON{From: p.From, To: p.To, Failed: p.Failed}
	}
	if last, ok, err := store.ReadStatus(runtimeDir, app.Name); err == nil && ok {
		s.LastCheck = &last
	}
	return s, nil
}

func printStatus(g *globals, s appStatus) {
	pad := strings.Repeat(" ", len(s.Name)+2)
	if s.Error != "" {
		g.printf("%s: %s\n", s.Name, s.Error)
		return
	}
	if s.Version == "" {
		g.printf("%s: nothing installed yet (%s, %s)\n", s.Name, s.Install, s.AppDir)
	} else {
		g.printf("%s: %s, installed %s (%s, %d files in %s)\n", s.Name, s.Version,
			s.InstalledAt.Local().Format("2006-01-02 15:04"), s.Install, s.Files, s.AppDir)
	}
	if c := s.LastCheck; c != nil {
		line := fmt.Sprintf("%slast check %s: %s", pad, c.At.Local().Format("2006-01-02 15:04:05"), c.Outcome)
		if c.Remote != "" {
			line += " (server: " + c.Remote + ")"
		}
		if c.Error != "" {
			line += ": " + c.Error
		}
		g.printf("%s\n", line)
	} else {
		g.printf("%sno check since boot\n", pad)
	}
	if len(s.Releases) > 0 {
		g.printf("%skept for rollback: %s\n", pad, strings.Join(s.Releases, ", "))
	}
	if p := s.Pending; p != nil {
		g.printf("%sinterrupted switch %s -> %s: run `ota-agent recover`\n", pad, orNone(p.From), p.To)
		if p.Failed != "" {
			g.printf("%slast attempt failed: %s\n", pad, p.Failed)
		}
	}
}
