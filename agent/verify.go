package agent

import (
	"fmt"

	"github.com/ota-agent/ota-agent/store"
)

// Verify compares the app dir with the inventory of the installed release
// in state.json (path, size, SHA-256, mode) and returns the files that
// differ. It reads only; nothing installed yet is no drift. Update with
// Options.Force repairs what it finds.
func Verify(app App) (version string, drift []store.Drift, err error) {
	st, err := store.ReadState(app.StateDir())
	if err != nil || st.Version == "" {
		return "", nil, err
	}
	drift, err = store.Verify(app.AppDir, st)
	if err != nil {
		return st.Version, nil, fmt.Errorf("verify %s: %w", app.AppDir, err)
	}
	return st.Version, drift, nil
}
