package store

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
)

// ErrLayout marks an app that cannot be switched where it is, whatever the
// release holds: a read-only app dir (or, in symlink mode, a read-only
// parent of it). It is a configuration matter (fix the unit or the config),
// found before anything is downloaded.
var ErrLayout = errors.New("the app dir cannot be switched here")

// ErrBlocked marks a release file that cannot be switched into the app dir
// as it is now (a directory or a file the agent did not install in the way,
// an immutable file, a mount point, a read-only directory, a symlink).
// Found before the switch starts, so nothing was changed.
var ErrBlocked = errors.New("cannot switch")

// dirMeta is a directory a switch creates or removes, with what it takes
// to make it again on a rollback.
type dirMeta struct {
	Path string      `json:"path"`
	Mode fs.FileMode `json:"mode"`
	UID  int         `json:"uid"`
	GID  int         `json:"gid"`
}

// plan is what an in-place switch changes in the app dir besides placing
// the new release's files, fixed before the journal is written so that a
// crash at any later instant can redo or undo exactly that.
type plan struct {
	// Remove lists the files this agent installed that leave the release.
	Remove []string `json:"remove,omitempty"`
	// Rmdirs lists directories that Remove empties and the new release
	// does not need, or that stand where the new release has a file;
	// deepest first.
	Rmdirs []dirMeta `json:"rmdirs,omitempty"`
	// Mkdirs lists the directories the new release needs that are not
	// there yet, shallowest first.
	Mkdirs []dirMeta `json:"mkdirs,omitempty"`
	// Displaced lists what the switch replaces or removes, kept in the
	// backup before the first change.
	Displaced []string `json:"displaced,omitempty"`
}

// Preflight checks, before anything is downloaded, that a release of these
// files can be switched into the app dir as it is now (see ErrLayout and
// ErrBlocked). Install checks again just before the switch.
func (s *Store) Preflight(paths []string) error {
	if s.mode == Symlink {
		return s.checkSymlinkParent()
	}
	cur, err := s.State()
	if err != nil {
		return err
	}
	app, err := s.openApp()
	if err != nil {
		return err
	}
	defer app.Close()
	_, err = s.planInPlace(app, cur, paths)
	return err
}

// openApp opens the app dir as an os.Root and checks that this process may
// write to it; a read-only app dir is ErrLayout.
func (s *Store) openApp() (*os.Root, error) {
	app, err := os.OpenRoot(s.appDir)
	if err != nil {
		return nil, fmt.Errorf("app dir: %w", err)
	}
	d, err := app.Open(".")
	if err != nil {
		app.Close()
		return nil, err
	}
	defer d.Close()
	if err := writable(d); err != nil {
		app.Close()
		return nil, s.layoutError(s.appDir, err)
	}
	return app, nil
}

// layoutError explains why dir cannot be written, naming its mount when
// that is the cause.
func (s *Store) layoutError(dir string, err error) error {
	msg := fmt.Sprintf("%s: %v", dir, err)
	if point, ro, merr := mountOf(dir); merr == nil && ro {
		msg = fmt.Sprintf("%s is on the read-only mount %s in ota-agent's mount namespace (systemd's ProtectSystem= makes it so): add ReadWritePaths=%s to ota-agent's units (ota-agent.service, ota-agent-boot.service)",
			dir, point, dir)
	}
	return fmt.Errorf("%w: %s", ErrLayout, msg)
}

// planInPlace works out what switching a release of paths into the app dir
// changes, and checks that all of it can be done: the error names the first
// path that cannot (ErrBlocked). cur is the installed state: only files it
// lists are ever removed or have a directory made over them.
func (s *Store) planInPlace(app *os.Root, cur State, paths []string) (plan, error) {
	var p plan
	blocked := func(format string, args ...any) (plan, error) {
		return plan{}, fmt.Errorf("%w: %s (in app dir %s)", ErrBlocked, fmt.Sprintf(format, args...), s.appDir)
	}
	inNew := make(map[string]bool, len(paths))
	needDir := map[string]bool{}
	for _, f := range paths {
		if isTempName(path.Base(f)) || f == indexName {
			return blocked("%s: a release file may not be named like ota-agent's temp files (.NAME%s) or its index (%s)", f, tmpSuffix, indexName)
		}
		inNew[f] = true
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			needDir[d] = true
		}
	}
	uid, gid := s.appOwner(app)
	// Installed files that leave the release, if still there as files.
	leaving := map[string]bool{}
	for _, f := range cur.Files {
		if inNew[f.Path] {
			continue
		}
		if fi, err := app.Lstat(f.Path); err == nil && !fi.IsDir() {
			leaving[f.Path] = true
			p.Remove = append(p.Remove, f.Path)
		}
	}
	slices.SortFunc(p.Remove, deepestFirst)

	// Directories to remove: emptied by Remove, or where a new file goes.
	var cands []string
	seen := map[string]bool{}
	addCand := func(d string) {
		if d != "." && !seen[d] {
			seen[d] = true
			cands = append(cands, d)
		}
	}
	for _, f := range p.Remove {
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			addCand(d)
		}
	}
	for _, f := range paths {
		if fi, err := app.Lstat(f); err == nil && fi.IsDir() {
			addCand(f)
			// Its subdirectories are candidates as well.
			fs.WalkDir(app.FS(), f, func(q string, e fs.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					addCand(q)
				}
				return nil
			})
		}
	}
	slices.SortFunc(cands, deepestFirst)
	gone := map[string]bool{}
	for _, d := range cands {
		if needDir[d] {
			continue
		}
		fi, err := app.Lstat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		entries, err := fs.ReadDir(app.FS(), d)
		if err != nil {
			return blocked("%s: %v", d, err)
		}
		emptied := true
		var stay []string
		for _, e := range entries {
			q := path.Join(d, e.Name())
			if !leaving[q] && !gone[q] {
				emptied = false
				stay = append(stay, e.Name())
			}
		}
		// An empty directory was not the agent's to remove.
		if !emptied || len(entries) == 0 {
			if inNew[d] {
				if len(stay) == 0 {
					return blocked("%s is a directory; a release file cannot replace it", d)
				}
				return blocked("%s is a directory holding files ota-agent did not install (%s); the release's file %s cannot replace it",
					d, strings.Join(stay[:min(len(stay), 3)], ", "), d)
			}
			continue
		}
		gone[d] = true
		u, g := owner(fi)
		p.Rmdirs = append(p.Rmdirs, dirMeta{Path: d, Mode: fi.Mode().Perm(), UID: u, GID: g})
	}

	// Directories to make, and what stands in the way of each new file.
	made := map[string]bool{}
	for _, f := range paths {
		var dirs []string
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			dirs = append(dirs, d)
		}
		slices.Reverse(dirs)
		under := false // below a directory the switch makes: nothing there yet
		for _, d := range dirs {
			if made[d] {
				under = true
				continue
			}
			fi, err := app.Lstat(d)
			switch {
			case under:
			case errors.Is(err, fs.ErrNotExist):
			case err != nil:
				return blocked("%s: %v", f, err)
			case fi.Mode()&fs.ModeSymlink != 0:
				return blocked("%s: %s is a symlink; ota-agent writes no release file through a symlink", f, d)
			case fi.IsDir():
				continue
			case !leaving[d]:
				return blocked("%s: %s is a file that ota-agent did not install, and the release needs it as a directory", f, d)
			}
			made[d], under = true, true
			p.Mkdirs = append(p.Mkdirs, dirMeta{Path: d, Mode: 0o755, UID: uid, GID: gid})
		}
		if made[path.Dir(f)] {
			continue // in a directory the switch makes: nothing there yet
		}
		fi, err := app.Lstat(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return blocked("%s: %v", f, err)
		case fi.IsDir():
			if !gone[f] {
				return blocked("%s is a directory; a release file cannot replace it", f)
			}
		case fi.Mode().IsRegular() || fi.Mode()&fs.ModeSymlink != 0:
			p.Displaced = append(p.Displaced, f)
		default:
			return blocked("%s is a %v, not a file ota-agent can replace", f, fi.Mode().Type())
		}
	}
	p.Displaced = append(p.Displaced, p.Remove...)
	slices.Sort(p.Displaced)
	if err := s.checkWritable(app, p, paths); err != nil {
		return plan{}, err
	}
	return p, nil
}

// checkWritable checks every directory the switch changes and every entry
// it replaces or removes: a read-only mount, an immutable or append-only
// file or directory, a mount point.
func (s *Store) checkWritable(app *os.Root, p plan, paths []string) error {
	dirs := map[string]string{} // directory -> a path that needs it
	existing := func(d string) string {
		for d != "." {
			if fi, err := app.Lstat(d); err == nil && fi.IsDir() {
				break
			}
			d = path.Dir(d)
		}
		return d
	}
	for _, f := range paths {
		dirs[existing(path.Dir(f))] = f
	}
	for _, f := range p.Remove {
		dirs[path.Dir(f)] = f
	}
	for _, d := range p.Rmdirs {
		dirs[path.Dir(d.Path)] = d.Path
		dirs[d.Path] = d.Path
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		f, err := app.Open(d)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBlocked, dirs[d], err)
		}
		werr := writable(f)
		f.Close()
		if werr != nil {
			return s.blockedDir(dirs[d], d, werr)
		}
	}
	entries := append(slices.Clone(p.Displaced), rmdirPaths(p.Rmdirs)...)
	for _, e := range entries {
		if err := s.checkEntry(app, e); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) blockedDir(f, d string, err error) error {
	full := path.Join(s.appDir, d)
	if point, ro, merr := mountOf(full); merr == nil && ro {
		return fmt.Errorf("%w: %s: directory %s is on the read-only mount %s", ErrBlocked, f, full, point)
	}
	return fmt.Errorf("%w: %s: directory %s is not writable: %v", ErrBlocked, f, full, err)
}

// checkEntry refuses an entry that cannot be renamed over or removed.
func (s *Store) checkEntry(app *os.Root, rel string) error {
	dir, err := app.Open(path.Dir(rel))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBlocked, rel, err)
	}
	defer dir.Close()
	imm, app2, mnt, err := entryFlags(dir, path.Base(rel))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrBlocked, rel, err)
	case imm:
		return fmt.Errorf("%w: %s in app dir %s is immutable (chattr +i); clear it with chattr -i", ErrBlocked, rel, s.appDir)
	case app2:
		return fmt.Errorf("%w: %s in app dir %s is append-only (chattr +a); clear it with chattr -a", ErrBlocked, rel, s.appDir)
	case mnt:
		return fmt.Errorf("%w: %s in app dir %s is a mount point", ErrBlocked, rel, s.appDir)
	}
	return nil
}

// appOwner is the owner new directories and files in the app dir get.
func (s *Store) appOwner(app *os.Root) (int, int) {
	if fi, err := app.Stat("."); err == nil {
		return owner(fi)
	}
	return os.Geteuid(), os.Getegid()
}

func rmdirPaths(ds []dirMeta) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Path
	}
	return out
}

// deepestFirst orders paths so that a directory's entries come before it.
func deepestFirst(a, b string) int {
	if d := strings.Count(b, "/") - strings.Count(a, "/"); d != 0 {
		return d
	}
	return strings.Compare(a, b)
}
