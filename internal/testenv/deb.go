package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Deb is a build of the Debian packages by packaging/deb/build.
type Deb struct {
	// Dir is the build's $DIST: the packages, and the binaries in bin/.
	Dir string
	// Packages are the .deb files by Debian architecture.
	Packages map[string]string
	// Binaries are the release binaries by Debian architecture.
	Binaries map[string]string
}

// SourceTree copies the module's source (the files git tracks, and the
// untracked ones it does not ignore, as they are in the working tree) into
// a new temporary directory and returns it: a build from it is of one
// snapshot, whatever else changes in the working tree meanwhile. It needs
// git; the test fails without it.
func SourceTree(t testing.TB) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("SourceTree: git rev-parse: %v", err)
	}
	root := strings.TrimSpace(string(top))
	list := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("SourceTree: git ls-files: %v", err)
	}
	dst := t.TempDir()
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() { // deleted in the tree, or not a file
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("SourceTree: %v", err)
		}
		to := filepath.Join(dst, name)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// BuildDebs runs packaging/deb/build in the source tree src for the given
// Debian architectures (amd64, arm64, armhf, armel), with VERSION and
// SOURCE_DATE_EPOCH fixed (git is not asked: src may be a SourceTree), and
// $DIST a new temporary directory. It fails the test if the build fails.
func BuildDebs(t testing.TB, src, version, epoch string, arches ...string) Deb {
	t.Helper()
	d := Deb{Dir: t.TempDir(), Packages: map[string]string{}, Binaries: map[string]string{}}
	cmd := exec.Command(filepath.Join(src, "packaging/deb/build"), arches...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "DIST="+d.Dir, "VERSION="+version, "SOURCE_DATE_EPOCH="+epoch, "DEB_VERSION=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("packaging/deb/build %s: %v\n%s", strings.Join(arches, " "), err, tail(stderr.Bytes(), 8<<10))
	}
	debs := strings.Fields(stdout.String())
	if len(debs) != len(arches) {
		t.Fatalf("packaging/deb/build %s printed %q, want one package per architecture", strings.Join(arches, " "), debs)
	}
	for i, a := range arches {
		d.Packages[a] = debs[i]
		d.Binaries[a] = filepath.Join(d.Dir, "bin", "ota-agent-linux-"+a)
	}
	return d
}
