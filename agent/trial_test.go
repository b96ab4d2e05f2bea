package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/ota-agent/ota-agent/store"
)

// openTrial marks the installed release of e as on trial since another
// boot, as a hard reset leaves it.
func openTrial(t *testing.T, e *env, from string, rebootPending bool) {
	t.Helper()
	s, err := store.Open(e.app.StateDir(), e.appDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Edit(func(st *store.State) error {
		st.Trial = &store.Trial{Version: st.Version, From: from, BootID: "an-earlier-boot", RebootPending: rebootPending}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func trialOf(t *testing.T, e *env) *store.Trial {
	t.Helper()
	st, err := store.ReadState(e.app.StateDir())
	if err != nil {
		t.Fatal(err)
	}
	return st.Trial
}

// Each boot that starts with a trial open counts, but the reboot the agent
// asked for; at max_boot_attempts, Recover (at boot, before the app starts)
// switches back to the release before and marks the one on trial bad.
func TestBootsCountedThenRolledBack(t *testing.T) {
	if bootID() == "" {
		t.Skip("no /proc/sys/kernel/random/boot_id")
	}
	files := sample()
	files["/sample/version"] = "v1.0.0\n"
	srv := newServer(t, files)
	e := newEnv(t, srv.URL)
	e.app.MaxBootAttempts = 2
	a := e.agent(t)
	ctx := context.Background()
	if _, err := a.Update(ctx); err != nil {
		t.Fatal(err)
	}
	srv.set("/sample/version", "v1.0.1\n")
	if _, err := a.Update(ctx); err != nil {
		t.Fatal(err)
	}

	// The boot after the agent's own reboot is not an attempt.
	openTrial(t, e, "v1.0.0", true)
	if err := a.Recover(ctx); err != nil {
		t.Fatalf("Recover() = %v", err)
	}
	if tr := trialOf(t, e); tr == nil || tr.BootAttempts != 0 || tr.RebootPending || tr.BootID != bootID() {
		t.Fatalf("after the agent's own reboot, trial = %+v; want 0 attempts, this boot, no reboot pending", tr)
	}
	// Recover again in the same boot counts nothing.
	if err := a.Recover(ctx); err != nil || trialOf(t, e).BootAttempts != 0 {
		t.Fatalf("a second Recover in one boot: %v, attempts %d; want 0", err, trialOf(t, e).BootAttempts)
	}

	// Another boot with it open: one attempt.
	openTrial(t, e, "v1.0.0", false)
	if err := a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if tr := trialOf(t, e); tr == nil || tr.BootAttempts != 1 {
		t.Fatalf("after one more boot, trial = %+v; want 1 attempt", tr)
	}
	wantApp(t, e, "v1.0.1")

	// The second attempt is the last: rolled back before the app starts.
	err := (func() error {
		s, err := store.Open(e.app.StateDir(), e.appDir, store.Options{})
		if err != nil {
			return err
		}
		return s.Edit(func(st *store.State) error { st.Trial.BootID = "yet-another-boot"; return nil })
	})()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Recover(ctx); err != nil {
		t.Fatalf("Recover() at the last attempt = %v", err)
	}
	wantApp(t, e, "v1.0.0")
	st, err := store.ReadState(e.app.StateDir())
	if err != nil {
		t.Fatal(err)
	}
	mark, bad := st.BadMark("v1.0.1")
	if st.Version != "v1.0.0" || st.Trial != nil || !bad || !strings.Contains(mark.Reason, "2 boots") || st.LastRollback == nil {
		t.Fatalf("after the last attempt: state %+v; want v1.0.0, no trial, v1.0.1 bad for its boots, a rollback recorded", st)
	}
	// The server still names v1.0.1: not installed again.
	res, err := a.Update(ctx)
	if err != nil || res.Updated || res.Bad == nil || installed(t, e) != "v1.0.0" {
		t.Fatalf("Update while the bad v1.0.1 is named = %+v, %v; want nothing installed, Bad set", res, err)
	}
}
