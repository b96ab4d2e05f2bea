package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ota-agent/ota-agent/store"
)

// An unchanged check writes nothing to persistent storage: no lock, no
// state, no staging, not even an access time (the first read of a new
// state.json would set it under relatime). Every entry under the state dir
// keeps its size, mtime, ctime (which moves on any change, content or
// metadata) and atime, and none appears or goes.
func TestUnchangedCheckWritesNothing(t *testing.T) {
	for _, mode := range []store.Mode{store.InPlace, store.Symlink} {
		t.Run(string(mode), func(t *testing.T) {
			srv := newServer(t, sample())
			e := newEnv(t, srv.URL)
			e.app.Install = mode
			a := e.agent(t)
			if _, err := a.Update(context.Background()); err != nil {
				t.Fatalf("first Update() = %v", err)
			}
			before := snapshot(t, e.app.StateRoot)
			for i := range 5 {
				res, err := a.Update(context.Background())
				if err != nil || res.Updated {
					t.Fatalf("Update() #%d = %+v, %v; want up to date", i+2, res, err)
				}
				if _, err := a.Check(context.Background()); err != nil {
					t.Fatalf("Check() = %v", err)
				}
			}
			after := snapshot(t, e.app.StateRoot)
			for p, s := range before {
				if after[p] != s {
					t.Errorf("%s changed: %s -> %s", p, s, after[p])
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("%s appeared", p)
				}
			}
		})
	}
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		out[p] = fmt.Sprintf("%v size %d mtime %d.%d ctime %d.%d", fi.Mode(), fi.Size(),
			st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		if fi.Mode().IsRegular() {
			// A directory's atime is the walk's own doing.
			out[p] += fmt.Sprintf(" atime %d.%d", st.Atim.Sec, st.Atim.Nsec)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
