package testenv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Rootfs recipe. Bump rootfsRecipeVersion when the way a root filesystem is
// built changes in a way its inputs do not show (new debootstrap flags, a
// post-build step), so caches built the old way are not used.
const (
	rootfsRecipeVersion = 1
	rootfsSuite         = "bookworm"
	rootfsVariant       = "minbase"
	// DefaultMirror is used when no deb line is found in APT's sources.
	DefaultMirror = "http://deb.debian.org/debian"
	// DefaultRootfsCache is the base directory of built root filesystems;
	// $OTA_AGENT_TEST_CACHE overrides it.
	DefaultRootfsCache = "/var/cache/ota-agent-test"
)

// Rootfs returns a Debian bookworm root filesystem built with
// `debootstrap --variant=minbase --include=<include>`, e.g. Rootfs(t, "systemd-sysv", "dbus") for one that
// boots under systemd-nspawn with a system bus.
//
// It is built once and cached in $OTA_AGENT_TEST_CACHE (default
// /var/cache/ota-agent-test) as rootfs-<hash>, the hash covering the recipe:
// suite, variant, the sorted include list, the mirror, the architecture and
// rootfsRecipeVersion. A build takes about a minute and needs the mirror;
// a cached one is returned at once. Builds run under an exclusive flock on
// rootfs-<hash>.lock in the cache, so parallel test binaries wait for one
// build instead of racing, and go into a temporary directory renamed into
// place only when debootstrap succeeded: an interrupted build is never used
// (its leftovers are removed by the next build).
//
// The mirror is the first deb URI in /etc/apt/sources.list.d/*.list and
// *.sources, then /etc/apt/sources.list, preferring one that serves the
// suite itself (not -updates or -security); DefaultMirror if there is none.
//
// It needs Linux, root and the debootstrap binary; without them the test is
// skipped, or fails when CI is "true" (Require), as it does when the build
// fails. Callers must not modify the returned tree: copy it (CopyTree).
func Rootfs(t testing.TB, include ...string) string {
	t.Helper()
	Require(t, "debootstrap root filesystem (Linux only)", runtime.GOOS == "linux")
	Require(t, "debootstrap root filesystem (needs root)", os.Geteuid() == 0)
	debootstrap, err := lookPathSbin("debootstrap")
	Require(t, "debootstrap root filesystem (needs the debootstrap binary)", err == nil)

	include = slices.Clone(include)
	slices.Sort(include)
	include = slices.Compact(include)
	for _, p := range include {
		if p == "" || strings.ContainsAny(p, ", \t\n") {
			t.Fatalf("Rootfs: bad package name %q", p)
		}
	}
	mirror := aptMirror(rootfsSuite)
	recipe := rootfsRecipe(mirror, include)
	name := "rootfs-" + recipeHash(recipe)

	base := os.Getenv("OTA_AGENT_TEST_CACHE")
	if base == "" {
		base = DefaultRootfsCache
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatalf("Rootfs: %v", err)
	}
	final := filepath.Join(base, name)
	if fileExists(final) {
		return final
	}

	unlock, err := lockFile(filepath.Join(base, name+".lock"))
	if err != nil {
		t.Fatalf("Rootfs: lock: %v", err)
	}
	defer unlock()
	if fileExists(final) { // built by another process while we waited
		return final
	}
	// Under the lock, temporary trees of this recipe are from builds that
	// were interrupted.
	stale, _ := filepath.Glob(filepath.Join(base, name+".tmp-*"))
	for _, s := range stale {
		if err := os.RemoveAll(s); err != nil {
			t.Fatalf("Rootfs: remove an interrupted build: %v", err)
		}
	}

	tmp, err := os.MkdirTemp(base, name+".tmp-")
	if err != nil {
		t.Fatalf("Rootfs: %v", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // becomes the rootfs's "/"
		t.Fatalf("Rootfs: %v", err)
	}
	args := []string{"--variant=" + rootfsVariant}
	if len(include) > 0 {
		args = append(args, "--include="+strings.Join(include, ","))
	}
	args = append(args, rootfsSuite, tmp, mirror)
	t.Logf("Rootfs: building %s (debootstrap %s; about a minute)", final, strings.Join(args, " "))
	start := time.Now()
	cmd := exec.Command(debootstrap, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		b := out.Bytes()
		if log, lerr := os.ReadFile(filepath.Join(tmp, "debootstrap", "debootstrap.log")); lerr == nil {
			b = append(b, log...)
		}
		os.RemoveAll(tmp)
		Require(t, fmt.Sprintf("debootstrap root filesystem (debootstrap %s: %v)\n%s",
			strings.Join(args, " "), err, tail(b, 8<<10)), false)
	}
	if err := os.WriteFile(filepath.Join(base, name+".recipe"), []byte(recipe), 0o644); err != nil {
		t.Fatalf("Rootfs: %v", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("Rootfs: %v", err)
	}
	syncDir(base)
	t.Logf("Rootfs: built %s in %v", final, time.Since(start).Round(time.Second))
	return final
}

// rootfsRecipe is the text hashed into a cached rootfs's name (and kept
// beside it as rootfs-<hash>.recipe, for people).
func rootfsRecipe(mirror string, include []string) string {
	return fmt.Sprintf("ota-agent test rootfs recipe %d\nsuite %s\nvariant %s\ninclude %s\nmirror %s\narch %s\n",
		rootfsRecipeVersion, rootfsSuite, rootfsVariant, strings.Join(include, ","), mirror, runtime.GOARCH)
}

// recipeHash names a recipe's tree: 16 hex digits of its SHA-256.
func recipeHash(recipe string) string {
	sum := sha256.Sum256([]byte(recipe))
	return hex.EncodeToString(sum[:8])
}

// lookPathSbin is exec.LookPath that also looks in the sbin directories,
// which a non-login root shell's PATH may lack.
func lookPathSbin(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if q := filepath.Join(dir, name); fileExists(q) {
			return q, nil
		}
	}
	return "", err
}

// syncDir makes a rename in dir durable; best effort (a cache can be rebuilt).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// aptMirror returns the Debian mirror this machine's APT uses (see Rootfs).
func aptMirror(suite string) string {
	var files []string
	for _, pat := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join("/etc/apt/sources.list.d", pat))
		files = append(files, m...)
	}
	slices.Sort(files) // APT reads them in this order
	files = append(files, "/etc/apt/sources.list")
	var first string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var srcs []aptSource
		if strings.HasSuffix(f, ".sources") {
			srcs = parseDeb822Sources(b)
		} else {
			srcs = parseSourcesList(b)
		}
		for _, s := range srcs {
			if slices.Contains(s.suites, suite) {
				return s.uri
			}
			if first == "" {
				first = s.uri
			}
		}
	}
	if first != "" {
		return first
	}
	return DefaultMirror
}

// aptSource is one deb (binary) source: its URI and suites.
type aptSource struct {
	uri    string
	suites []string
}

// parseSourcesList reads the one-line format: "deb [options] URI suite
// [component...]".
func parseSourcesList(b []byte) []aptSource {
	var srcs []aptSource
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options, up to the closing "]"
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) < 2 {
			continue
		}
		srcs = append(srcs, aptSource{uri: f[0], suites: f[1:2]})
	}
	return srcs
}

// parseDeb822Sources reads the deb822 format (stanzas of "Key: value" lines
// separated by blank lines), keeping enabled stanzas whose Types include deb.
func parseDeb822Sources(b []byte) []aptSource {
	var srcs []aptSource
	fields := map[string]string{}
	flush := func() {
		if len(fields) > 0 && slices.Contains(strings.Fields(fields["types"]), "deb") &&
			!strings.EqualFold(fields["enabled"], "no") {
			suites := strings.Fields(fields["suites"])
			for _, u := range strings.Fields(fields["uris"]) {
				srcs = append(srcs, aptSource{uri: u, suites: suites})
			}
		}
		fields = map[string]string{}
	}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t': // continuation
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return srcs
}

// CopyTree copies the tree at src (a Rootfs) to dst with `cp -a`, keeping
// modes, owners, timestamps, hard links, symlinks and device nodes. dst may
// exist (a t.TempDir): src's contents go into it and its mode becomes src's.
// It fails the test on error.
func CopyTree(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatalf("CopyTree: %v", err)
	}
	// "src/." copies the contents of src into dst, whether or not dst exists.
	cmd := exec.Command("cp", "-a", "--", filepath.Clean(src)+"/.", dst)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("CopyTree: cp -a %s/. %s: %v\n%s", src, dst, err, tail(out.Bytes(), 4<<10))
	}
}

// tail returns at most the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
