// Package wire holds the server layout that ota-agent shares with micropython-ota:
// which URLs a release lives at, and which version tags and file paths are safe.
package wire

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
)

// MaxTagLen is the longest version tag accepted. A longer body is not a tag
// (a captive portal's page, an error document) and is refused.
const MaxTagLen = 128

// MaxVersionBody caps how much of a `version` response is read at all.
const MaxVersionBody = 4 << 10

var (
	// ErrBadTag is returned for a version tag that is not a safe name.
	ErrBadTag = errors.New("not a safe version tag")
	// ErrBadPath is returned for a file path that is not relative and clean.
	ErrBadPath = errors.New("not a relative, clean file path")
)

// CheckTag reports whether tag is a safe name: [A-Za-z0-9][A-Za-z0-9._+-]*,
// at most MaxTagLen bytes. A tag is later used as a directory name, so
// anything else (slashes, dots only, control characters, HTML) is refused.
func CheckTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("%w: empty", ErrBadTag)
	}
	if len(tag) > MaxTagLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadTag, len(tag), MaxTagLen)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '.' || c == '_' || c == '+' || c == '-') {
			continue
		}
		return fmt.Errorf("%w: %q has %q at byte %d", ErrBadTag, Quote(tag), c, i)
	}
	return nil
}

// Quote shortens s for an error message, so a hostile body never floods a log.
func Quote(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// CheckPath reports whether p is a file path that may be installed under
// the app directory: relative, slash-separated, clean, without "..", empty
// or "." components, and without control characters or backslashes.
func CheckPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrBadPath)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: %q is absolute", ErrBadPath, Quote(p))
	case path.Clean(p) != p || p == ".":
		return fmt.Errorf("%w: %q is not clean", ErrBadPath, Quote(p))
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("%w: %q has a \"..\" component", ErrBadPath, Quote(p))
		}
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("%w: %q has byte %#x", ErrBadPath, Quote(p), c)
		}
	}
	return nil
}

// CheckRequestPath reports whether p, a URL path without its leading '/',
// may name a file of the layout: <project>/version, <project>/<tag>_<file>
// or <project>/<tag>/<file>. It is the rule a server applies (ota-agent
// serve does) so that it serves every file an agent may ask for and
// nothing else of its tree:
//
//   - p passes CheckPath, since a release file's path is part of it;
//   - neither of p's first two components starts with '.': they hold the
//     project and the tag (or "<tag>_" and the start of a file), and a tag
//     never starts with '.', so a dot there is the server tree's own
//     (.git, .htpasswd, a project's .env), never part of a release.
//
// Further in, a component may start with '.', as a release file's may
// (lib/.env is served as <project>/<tag>/lib/.env). A project of several
// segments ("fleet/web") has its tag one component later: its own dot
// directories are then not told from a release's, so keep them out of the
// served tree.
func CheckRequestPath(p string) error {
	if err := CheckPath(p); err != nil {
		return err
	}
	for i, part := range strings.SplitN(p, "/", 3) {
		if i < 2 && strings.HasPrefix(part, ".") {
			return fmt.Errorf("%w: %q starts with a dot where the layout puts a project or a version", ErrBadPath, Quote(p))
		}
	}
	return nil
}

// Layout is where one project's releases live on the server.
type Layout struct {
	Host    string // scheme and authority, optionally a base path: https://ota.example.com/fleet
	Project string
	// Prefix selects "<version>_<file>" (true, the default of micropython-ota)
	// over "<version>/<file>".
	Prefix bool
}

// VersionURL is <host>/<project>/version.
func (l Layout) VersionURL() string { return l.join("version") }

// FileURL is <host>/<project>/<tag>_<file> or <host>/<project>/<tag>/<file>.
// A file's sub-path keeps its slashes: v1_lib/util.py or v1/lib/util.py.
func (l Layout) FileURL(tag, file string) string {
	if l.Prefix {
		return l.join(tag + "_" + file)
	}
	return l.join(tag + "/" + file)
}

func (l Layout) join(rest string) string {
	var b strings.Builder
	b.WriteString(strings.TrimRight(l.Host, "/"))
	for _, seg := range strings.Split(strings.Trim(l.Project, "/")+"/"+rest, "/") {
		if seg == "" {
			continue
		}
		b.WriteByte('/')
		b.WriteString(url.PathEscape(seg))
	}
	return b.String()
}
