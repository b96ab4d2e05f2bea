package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// The manifest of a release, an optional extension of the layout. It sits
// beside the release's files, as a file named ManifestName would:
//
//	<project>/<tag>_manifest.json          (prefix layout)
//	<project>/<tag>/manifest.json          (subdirectory layout)
//
// and its minisign signature beside it, ManifestName + SignatureSuffix.
// micropython-ota never asks for either, so a server with them still serves
// it. It is JSON:
//
//	{"format": 1, "project": "sample", "version": "v1.0.1", "sequence": 17,
//	 "files": [{"path": "main.py", "size": 1234, "sha256": "<64 hex>", "mode": "0644"}]}
//
// Unknown keys are ignored (a later format 1 publisher may add some); a
// format other than 1 is refused.
const (
	ManifestName    = "manifest.json"
	SignatureSuffix = ".minisig"
	ManifestFormat  = 1
	// MaxManifestSize caps a manifest: 4 MiB holds some 25,000 files at
	// 160 bytes each, far beyond an app release, and bounds what a hostile
	// server can make the agent hold in memory.
	MaxManifestSize = 4 << 20
	// MaxSignatureSize caps a .minisig file: a real one is under 400 bytes,
	// the trusted comment included.
	MaxSignatureSize = 4 << 10
	// DefaultMode is a file's mode when the manifest gives none.
	DefaultMode fs.FileMode = 0o644
)

// ErrManifest is returned for a manifest that does not parse or breaks a rule.
var ErrManifest = errors.New("bad manifest")

// Manifest describes one release of one project.
type Manifest struct {
	Format   int            `json:"format"`
	Project  string         `json:"project"`
	Version  string         `json:"version"`
	Sequence uint64         `json:"sequence"`
	Files    []ManifestFile `json:"files"`
}

// ManifestFile is one file of a release.
type ManifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Mode is an octal string of permission bits ("0755"); "" is DefaultMode.
	Mode string `json:"mode,omitempty"`
}

// Perm is the file's permission bits; call it on a checked manifest only.
func (f ManifestFile) Perm() fs.FileMode {
	m, err := parseMode(f.Mode)
	if err != nil {
		return DefaultMode
	}
	return m
}

// parseMode reads an octal mode of permission bits only: setuid, setgid
// and sticky are refused (a release never makes a program run as root by
// its mode), and so is anything beyond them.
func parseMode(s string) (fs.FileMode, error) {
	if s == "" {
		return DefaultMode, nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("mode %q is not an octal number", Quote(s))
	}
	if n&0o7000 != 0 {
		return 0, fmt.Errorf("mode %q sets setuid, setgid or sticky: refused", s)
	}
	if n > 0o777 {
		return 0, fmt.Errorf("mode %q has bits beyond the permission bits", s)
	}
	return fs.FileMode(n), nil
}

// FormatMode is mode's permission bits as a manifest writes them ("0644").
func FormatMode(mode fs.FileMode) string { return fmt.Sprintf("%04o", mode.Perm()) }

// ReadManifest reads at most MaxManifestSize bytes of r (an error beyond)
// and returns them, so the caller can check a signature over the exact
// bytes before ParseManifest.
func ReadManifest(r io.Reader) ([]byte, error) {
	return readCapped(r, MaxManifestSize, "manifest")
}

// ReadSignature is ReadManifest for a .minisig file (MaxSignatureSize).
func ReadSignature(r io.Reader) ([]byte, error) {
	return readCapped(r, MaxSignatureSize, "signature")
}

func readCapped(r io.Reader, max int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrManifest, what, max)
	}
	return b, nil
}

// ParseManifest parses b (at most MaxManifestSize bytes) and checks every
// rule of the format: format 1, a project, a safe version tag, and files
// whose paths pass CheckPath, are not the manifest's own names, appear
// once, and never make one file a directory of another; sizes not
// negative; SHA-256 as 64 lowercase hex digits; modes of permission bits
// only. Errors wrap ErrManifest.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrManifest, len(b), MaxManifestSize)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	return &m, nil
}

func (m *Manifest) check() error {
	if m.Format != ManifestFormat {
		return fmt.Errorf("format %d, this agent reads %d", m.Format, ManifestFormat)
	}
	if m.Project == "" {
		return errors.New("no project")
	}
	if err := CheckTag(m.Version); err != nil {
		return fmt.Errorf("version: %v", err)
	}
	if len(m.Files) == 0 {
		return errors.New("no files")
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if err := CheckPath(f.Path); err != nil {
			return err
		}
		if f.Path == ManifestName || f.Path == ManifestName+SignatureSuffix {
			return fmt.Errorf("file %q has the name of the manifest or its signature", f.Path)
		}
		if seen[f.Path] {
			return fmt.Errorf("file %q is listed twice", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 {
			return fmt.Errorf("file %q: size %d", f.Path, f.Size)
		}
		if !isSHA256(f.SHA256) {
			return fmt.Errorf("file %q: sha256 %q is not 64 lowercase hex digits", f.Path, Quote(f.SHA256))
		}
		if _, err := parseMode(f.Mode); err != nil {
			return fmt.Errorf("file %q: %v", f.Path, err)
		}
	}
	for p := range seen {
		for d := p; strings.Contains(d, "/"); {
			d = d[:strings.LastIndexByte(d, '/')]
			if seen[d] {
				return fmt.Errorf("%q is a file and the directory of %q", d, p)
			}
		}
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Paths lists the release's file paths in the manifest's order.
func (m *Manifest) Paths() []string {
	out := make([]string, len(m.Files))
	for i, f := range m.Files {
		out[i] = f.Path
	}
	return out
}

// ErrWrongRelease is returned by Manifest.For for a manifest of another
// project or another tag than the one asked for.
var ErrWrongRelease = errors.New("manifest is for another release")

// For checks that m describes project's release tag: a manifest copied
// from another project or another tag (a signed one included) is refused.
func (m *Manifest) For(project, tag string) error {
	if strings.Trim(m.Project, "/") != strings.Trim(project, "/") {
		return fmt.Errorf("%w: project %q, want %q", ErrWrongRelease, Quote(m.Project), project)
	}
	if m.Version != tag {
		return fmt.Errorf("%w: version %q, want %q", ErrWrongRelease, m.Version, tag)
	}
	return nil
}

// Marshal is m as a publisher writes it: files sorted by path, indented,
// with a final newline. It checks m first.
func (m *Manifest) Marshal() ([]byte, error) {
	c := *m
	c.Files = slices.Clone(m.Files)
	slices.SortFunc(c.Files, func(a, b ManifestFile) int { return strings.Compare(a.Path, b.Path) })
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", " ")
	if err := enc.Encode(&c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ManifestURL is where the manifest of release tag is:
// <project>/<tag>_manifest.json or <project>/<tag>/manifest.json.
func (l Layout) ManifestURL(tag string) string { return l.FileURL(tag, ManifestName) }

// SignatureURL is ManifestURL with SignatureSuffix.
func (l Layout) SignatureURL(tag string) string {
	return l.FileURL(tag, ManifestName+SignatureSuffix)
}
