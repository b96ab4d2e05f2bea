package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/store"
)

// Real faults in the app dir, each with the failing file first, in the
// middle and last in switch order: an update fails with exit 1 naming the
// file and the cause, the app dir is exactly the old release, no journal
// is left, and once the cause is gone the next update installs.

// faultFiles are the release's files, each in a directory of its own, so a
// fault can be put on one directory.
var faultFiles = []string{"a/x.py", "m/x.py", "z/x.py"}

func faultServer(t *testing.T) (*httptest.Server, *atomic.Value) {
	t.Helper()
	var version atomic.Value
	version.Store("v1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/p/")
		if p == "version" {
			fmt.Fprintln(w, version.Load())
			return
		}
		v, file, _ := strings.Cut(p, "_")
		for _, f := range faultFiles {
			if f == file {
				// Big enough to fill a small tmpfs.
				fmt.Fprint(w, strings.Repeat(v+" "+f+"\n", 12000))
				return
			}
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &version
}

type faultDevice struct {
	dir, appDir, host string
	mode              store.Mode
}

func (d faultDevice) update(t *testing.T) (int, string) {
	t.Helper()
	args := []string{"update", "--host", d.host, "--project", "p", "--files", strings.Join(faultFiles, ","),
		"--app-dir", d.appDir, "--state-dir", filepath.Join(d.dir, "state"),
		"--runtime-dir", filepath.Join(d.dir, "run"), "--install", string(d.mode), "--timeout", "5s"}
	code, _, stderr := runCLI(t, args...)
	return code, stderr
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

func TestSwitchFaultsInPlace(t *testing.T) {
	testenv.Require(t, "root (mounts, chattr)", os.Geteuid() == 0)
	_, err := exec.LookPath("chattr")
	testenv.Require(t, "chattr (e2fsprogs)", err == nil)

	type fault struct {
		name string
		// apply puts the fault on directory d of the app (v1 installed);
		// lift removes it. want is in the error message.
		apply, lift func(t *testing.T, d string)
		want        string
		// works: the fault is no fault for the switch (it copies).
		works bool
	}
	faults := []fault{
		{
			name:  "EPERM-immutable-file",
			apply: func(t *testing.T, d string) { mustRun(t, "chattr", "+i", filepath.Join(d, "x.py")) },
			lift:  func(t *testing.T, d string) { mustRun(t, "chattr", "-i", filepath.Join(d, "x.py")) },
			want:  "immutable",
		},
		{
			name: "EROFS-read-only-bind-mount",
			apply: func(t *testing.T, d string) {
				mustDo(t, unix.Mount(d, d, "", unix.MS_BIND, ""))
				mustDo(t, unix.Mount("", d, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""))
			},
			lift: func(t *testing.T, d string) { mustDo(t, unix.Unmount(d, 0)) },
			want: "read-only",
		},
		{
			name: "dangling-symlink",
			apply: func(t *testing.T, d string) {
				mustDo(t, os.Rename(d, d+".moved"))
				mustDo(t, os.Symlink("/nonexistent/ota-agent-test", d))
			},
			lift: func(t *testing.T, d string) {
				mustDo(t, os.Remove(d))
				mustDo(t, os.Rename(d+".moved", d))
			},
			want: "symlink",
		},
		{
			// A full filesystem mounted in the app dir: the copy onto it
			// fails half-way through the switch, which is undone.
			name: "ENOSPC-full-tmpfs-in-app-dir",
			apply: func(t *testing.T, d string) {
				old, err := os.ReadFile(filepath.Join(d, "x.py"))
				mustDo(t, err)
				mountTmpfs(t, d, "512k")
				mustDo(t, os.WriteFile(filepath.Join(d, "x.py"), old, 0o644))
				fill(t, filepath.Join(d, "filler"))
			},
			lift: func(t *testing.T, d string) { mustDo(t, os.Remove(filepath.Join(d, "filler"))) },
			want: "no space left on device",
		},
		{
			// Another mount inside the app dir: EXDEV for rename(2), so
			// the switch copies onto it.
			name: "EXDEV-tmpfs-in-app-dir",
			apply: func(t *testing.T, d string) {
				old, err := os.ReadFile(filepath.Join(d, "x.py"))
				mustDo(t, err)
				mountTmpfs(t, d, "4m")
				mustDo(t, os.WriteFile(filepath.Join(d, "x.py"), old, 0o644))
			},
			works: true,
		},
	}
	for _, f := range faults {
		for _, where := range []string{"first", "middle", "last"} {
			t.Run(f.name+"/"+where, func(t *testing.T) {
				srv, version := faultServer(t)
				dir := t.TempDir()
				d := faultDevice{dir: dir, appDir: filepath.Join(dir, "app"), host: srv.URL, mode: store.InPlace}
				if code, stderr := d.update(t); code != ExitOK {
					t.Fatalf("update to v1 = exit %d, want 0:\n%s", code, stderr)
				}
				target := filepath.Join(d.appDir, map[string]string{"first": "a", "middle": "m", "last": "z"}[where])
				f.apply(t, target)
				before := hashTree(d.appDir)
				version.Store("v2")
				code, stderr := d.update(t)
				if f.works {
					b, _ := os.ReadFile(filepath.Join(target, "x.py"))
					if code != ExitOK || !strings.HasPrefix(string(b), "v2 ") {
						t.Fatalf("update to v2 = exit %d, %s/x.py = %.20q; want 0 and v2's file:\n%s", code, target, b, stderr)
					}
					return
				}
				rel := strings.TrimPrefix(target, d.appDir+"/") + "/x.py"
				if code != ExitFailed || !strings.Contains(stderr, rel) || !strings.Contains(stderr, f.want) {
					t.Errorf("update to v2 = exit %d, stderr:\n%s\nwant exit 1 naming %s and %q", code, stderr, rel, f.want)
				}
				if got := hashTree(d.appDir); got != before {
					t.Errorf("after the failed update, the app dir changed:\n got %.300s\nwant %.300s", got, before)
				}
				if _, err := os.Stat(filepath.Join(dir, "state", "p", "journal")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("after the failed update, a journal is left (%v)", err)
				}
				f.lift(t, target)
				if code, stderr := d.update(t); code != ExitOK {
					t.Fatalf("update to v2 with the fault gone = exit %d, want 0:\n%s", code, stderr)
				}
				for _, p := range faultFiles {
					b, _ := os.ReadFile(filepath.Join(d.appDir, p))
					if !strings.HasPrefix(string(b), "v2 ") {
						t.Errorf("after the next update, %s = %.20q, want v2's", p, b)
					}
				}
			})
		}
	}
}

// In symlink mode the switch renames a link in app_dir's parent: a parent
// that cannot be written is a layout error found before the download
// (exit 2, naming the mount); a full state dir fails the download.
func TestSwitchFaultsSymlink(t *testing.T) {
	testenv.Require(t, "root (mounts, chattr)", os.Geteuid() == 0)
	_, err := exec.LookPath("chattr")
	testenv.Require(t, "chattr (e2fsprogs)", err == nil)
	tests := []struct {
		name        string
		apply, lift func(t *testing.T, d faultDevice)
		code        int
		want        string
	}{
		{
			name: "read-only-parent",
			apply: func(t *testing.T, d faultDevice) {
				p := filepath.Dir(d.appDir)
				mustDo(t, unix.Mount(p, p, "", unix.MS_BIND, ""))
				mustDo(t, unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""))
			},
			lift: func(t *testing.T, d faultDevice) { mustDo(t, unix.Unmount(filepath.Dir(d.appDir), 0)) },
			code: ExitUsage, want: "read-only mount",
		},
		{
			name:  "immutable-parent",
			apply: func(t *testing.T, d faultDevice) { mustRun(t, "chattr", "+i", filepath.Dir(d.appDir)) },
			lift:  func(t *testing.T, d faultDevice) { mustRun(t, "chattr", "-i", filepath.Dir(d.appDir)) },
			code:  ExitUsage, want: "immutable",
		},
		{
			name: "full-state-dir",
			apply: func(t *testing.T, d faultDevice) {
				fill(t, filepath.Join(d.dir, "state", "filler"))
			},
			lift: func(t *testing.T, d faultDevice) { mustDo(t, os.Remove(filepath.Join(d.dir, "state", "filler"))) },
			code: ExitFailed, want: "space",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, version := faultServer(t)
			dir := t.TempDir()
			parent := filepath.Join(dir, "parent")
			mustDo(t, os.Mkdir(parent, 0o755))
			mustDo(t, os.Mkdir(filepath.Join(dir, "state"), 0o755))
			mountTmpfs(t, filepath.Join(dir, "state"), "16m")
			d := faultDevice{dir: dir, appDir: filepath.Join(parent, "app"), host: srv.URL, mode: store.Symlink}
			if code, stderr := d.update(t); code != ExitOK {
				t.Fatalf("update to v1 = exit %d, want 0:\n%s", code, stderr)
			}
			link, _ := os.Readlink(d.appDir)
			tt.apply(t, d)
			version.Store("v2")
			code, stderr := d.update(t)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("update to v2 = exit %d, stderr:\n%s\nwant exit %d saying %q", code, stderr, tt.code, tt.want)
			}
			if now, _ := os.Readlink(d.appDir); now != link {
				t.Errorf("after the failed update, app dir -> %q, want %q as before", now, link)
			}
			tt.lift(t, d)
			if code, stderr := d.update(t); code != ExitOK {
				t.Fatalf("update to v2 with the fault gone = exit %d, want 0:\n%s", code, stderr)
			}
			if b, _ := os.ReadFile(filepath.Join(d.appDir, "m/x.py")); !strings.HasPrefix(string(b), "v2 ") {
				t.Errorf("after the next update, m/x.py = %.20q, want v2's", b)
			}
		})
	}
}

// hashTree is readTree with each file's content hashed.
func hashTree(dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			fmt.Fprintf(&b, "%s=%x %v;", rel, sha256.Sum256(c), fi.Mode())
		}
		return nil
	})
	return b.String()
}

// fill writes to path until its filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	mustDo(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return
			}
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// An in-place app dir that is read-only as a whole (ProtectSystem=strict
// without ReadWritePaths=) is a configuration error found before the
// download: exit 2, naming the mount and the fix.
func TestReadOnlyAppDirIsALayoutError(t *testing.T) {
	testenv.Require(t, "root (mounts)", os.Geteuid() == 0)
	srv, version := faultServer(t)
	dir := t.TempDir()
	d := faultDevice{dir: dir, appDir: filepath.Join(dir, "app"), host: srv.URL, mode: store.InPlace}
	if code, stderr := d.update(t); code != ExitOK {
		t.Fatalf("update to v1 = exit %d, want 0:\n%s", code, stderr)
	}
	mustDo(t, unix.Mount(d.appDir, d.appDir, "", unix.MS_BIND, ""))
	mustDo(t, unix.Mount("", d.appDir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""))
	t.Cleanup(func() { unix.Unmount(d.appDir, unix.MNT_DETACH) })
	version.Store("v2")
	code, stderr := d.update(t)
	if code != ExitUsage || !strings.Contains(stderr, "ReadWritePaths="+d.appDir) || !strings.Contains(stderr, "read-only mount") {
		t.Errorf("update into a read-only app dir = exit %d, stderr:\n%s\nwant exit 2 naming the mount and ReadWritePaths=%s", code, stderr, d.appDir)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "p", "staging", "v2")); err == nil {
		t.Errorf("the release was downloaded before the layout was found unfit")
	}
}
