package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/ota-agent/ota-agent/agent"
)

type statusOptions struct {
	apps   *appsCmd
	asJSON bool
}

func statusFlags(fs *flag.FlagSet) runFunc {
	o := &statusOptions{apps: newAppsCmd(fs)}
	fs.BoolVar(&o.asJSON, "json", false, "print JSON (shape in the README)")
	return func(ctx context.Context, g *globals, args []string) error { return runStatus(ctx, g, o, args) }
}

func runStatus(ctx context.Context, g *globals, o *statusOptions, args []string) (err error) {
	asJSON := &o.asJSON
	cfg, err := o.apps.setup(g, args)
	if err != nil {
		return err
	}
	var out []agent.Status
	var failed error
	for _, app := range cfg.Apps {
		s, err := agent.StatusOf(app, cfg.RuntimeDir)
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
		b, err := json.MarshalIndent(map[string]any{"board": boardIdentity(cfg.Identify == "serial"), "apps": out}, "", "  ")
		if err != nil {
			return err
		}
		g.printf("%s\n", b)
		return nil
	}
	printBoard(g, boardIdentity(cfg.Identify == "serial"))
	for _, s := range out {
		printStatus(g, s)
	}
	return nil
}

func printStatus(g *globals, s agent.Status) {
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
	if t := s.Trial; t != nil {
		g.printf("%son trial: %s since %s (commits at %s at the earliest; %d boot(s) with it open)\n", pad, t.Version,
			t.Since.Local().Format("15:04:05"), t.Deadline.Local().Format("15:04:05"), t.BootAttempts)
	}
	for _, b := range s.BadVersions {
		g.printf("%sbad: %s (%s, %s): not installed while the server names it; `ota-agent retry %s` clears it\n", pad, b.Version, b.Reason,
			b.At.Local().Format("2006-01-02 15:04"), s.Name)
	}
	if r := s.LastRollback; r != nil {
		g.printf("%slast rollback: %s -> %s at %s: %s\n", pad, r.From, r.To, r.At.Local().Format("2006-01-02 15:04"), r.Reason)
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
