//go:build linux

package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestParseSources(t *testing.T) {
	deb822 := `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb deb-src
URIs: http://security.example/debian-security
  http://security2.example/debian-security
Suites: bookworm-security
`
	got := parseDeb822Sources([]byte(deb822))
	want := []aptSource{
		{"http://deb.debian.org/debian", []string{"bookworm", "bookworm-updates"}},
		{"http://security.example/debian-security", []string{"bookworm-security"}},
		{"http://security2.example/debian-security", []string{"bookworm-security"}},
	}
	if !sourcesEqual(got, want) {
		t.Errorf("parseDeb822Sources = %v, want %v", got, want)
	}

	list := `# comment
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm-updates main # trailing
deb [ arch=amd64 ] http://b.example/debian bookworm main
deb http://c.example/debian
`
	got = parseSourcesList([]byte(list))
	want = []aptSource{
		{"http://a.example/debian", []string{"bookworm-updates"}},
		{"http://b.example/debian", []string{"bookworm"}},
	}
	if !sourcesEqual(got, want) {
		t.Errorf("parseSourcesList = %v, want %v", got, want)
	}
}

func sourcesEqual(a, b []aptSource) bool {
	return slices.EqualFunc(a, b, func(x, y aptSource) bool {
		return x.uri == y.uri && slices.Equal(x.suites, y.suites)
	})
}

func TestAptMirror(t *testing.T) {
	m := aptMirror(rootfsSuite)
	if !strings.Contains(m, "://") {
		t.Errorf("aptMirror(%q) = %q, want a URL", rootfsSuite, m)
	}
}

func TestRootfsRecipeOrder(t *testing.T) {
	// Rootfs sorts and deduplicates before hashing; the recipe text itself
	// must change with every input.
	a := rootfsRecipe("http://m/debian", []string{"dbus", "systemd-sysv"})
	for _, other := range []string{
		rootfsRecipe("http://other/debian", []string{"dbus", "systemd-sysv"}),
		rootfsRecipe("http://m/debian", []string{"dbus"}),
		rootfsRecipe("http://m/debian", nil),
	} {
		if other == a {
			t.Errorf("recipes for different inputs are both %q", a)
		}
	}
}

// fakeDebootstrap puts a debootstrap on PATH that records each run in
// calls, writes its arguments into TARGET/args, and fails when TARGET's
// parent holds a file named "fail".
func fakeDebootstrap(t *testing.T) (calls string) {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("Rootfs needs Linux and root")
	}
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	script := `#!/bin/sh
echo "$@" >> ` + shellQuote(calls) + `
for a; do target=$prev; prev=$a; done  # TARGET is the one before MIRROR
[ -e "$(dirname "$target")/fail" ] && { echo "E: no mirror" >&2; exit 1; }
sleep 0.2
mkdir -p "$target/etc" && echo "$@" > "$target/args"
`
	if err := os.WriteFile(filepath.Join(dir, "debootstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	t.Setenv("OTA_AGENT_TEST_CACHE", t.TempDir())
	return calls
}

func TestRootfsBuildsOnceAndCaches(t *testing.T) {
	calls := fakeDebootstrap(t)
	cache := os.Getenv("OTA_AGENT_TEST_CACHE")

	// An interrupted earlier build of the same recipe is removed, not used.
	name := "rootfs-" + recipeHash(rootfsRecipe(aptMirror(rootfsSuite), []string{"dbus", "systemd-sysv"}))
	stale := filepath.Join(cache, name+".tmp-123")
	if err := os.MkdirAll(filepath.Join(stale, "half"), 0o755); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	paths := make([]string, 4)
	for i := range paths {
		wg.Go(func() { paths[i] = Rootfs(t, "systemd-sysv", "dbus", "dbus") })
	}
	wg.Wait()
	for _, p := range paths {
		if p != paths[0] {
			t.Fatalf("Rootfs returned %q and %q for one recipe", paths[0], p)
		}
	}
	if want := filepath.Join(cache, name); paths[0] != want {
		t.Errorf("Rootfs = %q, want %q", paths[0], want)
	}
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 1 {
		t.Errorf("debootstrap ran %d times for 4 parallel calls, want once:\n%s", n, b)
	}
	args, err := os.ReadFile(filepath.Join(paths[0], "args"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(args), "--variant=minbase --include=dbus,systemd-sysv bookworm ") {
		t.Errorf("debootstrap args = %q", args)
	}
	if fi, err := os.Stat(paths[0]); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("rootfs mode = %v, %v, want 0755", fi.Mode(), err)
	}
	if fileExists(stale) {
		t.Errorf("interrupted build %s was not removed", stale)
	}
	if m, _ := filepath.Glob(filepath.Join(cache, "*.tmp-*")); len(m) > 0 {
		t.Errorf("temporary trees left: %v", m)
	}

	// Another recipe is another tree.
	if other := Rootfs(t, "dbus"); other == paths[0] {
		t.Errorf("Rootfs(dbus) = Rootfs(dbus, systemd-sysv) = %q", other)
	}
}

func TestRootfsFailedBuildNotCached(t *testing.T) {
	fakeDebootstrap(t)
	cache := os.Getenv("OTA_AGENT_TEST_CACHE")
	if err := os.WriteFile(filepath.Join(cache, "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CI", "") // so the failed build skips the subtest instead of failing it
	t.Run("build", func(t *testing.T) {
		Rootfs(t, "dbus")
		t.Error("Rootfs returned after debootstrap failed")
	})
	m, _ := filepath.Glob(filepath.Join(cache, "rootfs-*"))
	for _, p := range m {
		if !strings.HasSuffix(p, ".lock") {
			t.Errorf("failed build left %s", p)
		}
	}
}

func TestCopyTree(t *testing.T) {
	if _, err := exec.LookPath("cp"); err != nil {
		t.Skip("no cp")
	}
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(src, 0o755))
	must(os.MkdirAll(filepath.Join(src, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(src, "usr/bin/tool"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(src, "usr/bin/tool"), os.ModeSetuid|0o755))
	must(os.Symlink("usr/bin", filepath.Join(src, "bin")))
	must(os.WriteFile(filepath.Join(src, "secret"), []byte("x"), 0o600))
	root := os.Geteuid() == 0
	if root {
		must(os.Lchown(filepath.Join(src, "secret"), 1234, 5678))
		must(syscall.Mknod(filepath.Join(src, "null"), syscall.S_IFCHR|0o666, 1<<8|3)) // 1:3
	}

	CopyTree(t, src, dst)

	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("dst mode = %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "usr/bin/tool")); err != nil || fi.Mode()&(os.ModeSetuid|0o777) != os.ModeSetuid|0o755 {
		t.Errorf("tool mode = %v, %v, want setuid 0755", fi.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "bin")); err != nil || l != "usr/bin" {
		t.Errorf("Readlink(bin) = %q, %v, want usr/bin", l, err)
	}
	if root {
		var st syscall.Stat_t
		must(syscall.Lstat(filepath.Join(dst, "secret"), &st))
		if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o777 != 0o600 {
			t.Errorf("secret: uid %d gid %d mode %o, want 1234 5678 600", st.Uid, st.Gid, st.Mode&0o777)
		}
		must(syscall.Lstat(filepath.Join(dst, "null"), &st))
		if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 1<<8|3 {
			t.Errorf("null: mode %o rdev %d, want a char device 1:3", st.Mode, st.Rdev)
		}
	}

	// Into an existing directory too (a t.TempDir).
	dst2 := t.TempDir()
	CopyTree(t, src, dst2)
	if _, err := os.Lstat(filepath.Join(dst2, "usr/bin/tool")); err != nil {
		t.Errorf("copy into an existing dir: %v", err)
	}
}

// TestRootfsReal builds (or finds in the cache) the tree the nspawn tests
// boot; about a minute the first time.
func TestRootfsReal(t *testing.T) {
	if testing.Short() {
		t.Skip("debootstrap in -short mode")
	}
	root := Rootfs(t, "systemd-sysv", "dbus")
	for _, p := range []string{"lib/systemd/systemd", "sbin/init", "usr/bin/dbus-daemon", "etc/os-release"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("rootfs %s: %v", root, err)
		}
	}
	if again := Rootfs(t, "dbus", "systemd-sysv"); again != root {
		t.Errorf("Rootfs with the includes reordered = %q, want the cached %q", again, root)
	}
}
