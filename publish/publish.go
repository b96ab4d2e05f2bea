// Package publish writes a release into the server layout that ota-agent
// and micropython-ota read: a build directory's files as
// <root>/<project>/<tag>_<file> (or <tag>/<file>), then the release's
// manifest (wire.Manifest) with the next sequence, then its minisign
// signature when a key is given, then, if asked, <project>/version, last
// and atomically, so a device never sees a tag whose files are not all
// there. Every file is written under a temp name in its directory,
// fsynced, renamed, and the directory fsynced. The output still serves an
// unmodified micropython-ota device, which never asks for the manifest.
package publish

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"aead.dev/minisign"
	"github.com/ota-agent/ota-agent/wire"
)

// Options say what to publish where.
type Options struct {
	Src     string // the build directory: its files are the release
	Root    string // the server's root directory
	Project string
	Version string
	// Prefix selects <tag>_<file> (the default of micropython-ota) over <tag>/<file>.
	Prefix bool
	// Key signs the manifest; nil: no signature (any stale one is removed).
	Key *minisign.PrivateKey
	// Current writes <project>/version, last.
	Current bool
	// Sequence is the manifest's; 0: one more than the highest of the
	// project's manifests under Root.
	Sequence uint64
}

// Publish writes the release and returns its manifest.
func Publish(o Options) (*wire.Manifest, error) {
	if err := wire.CheckTag(o.Version); err != nil {
		return nil, fmt.Errorf("version: %w", err)
	}
	if err := wire.CheckRequestPath(strings.Trim(o.Project, "/")); err != nil || o.Project == "" {
		return nil, fmt.Errorf("project %q is not a safe directory name", o.Project)
	}
	project := filepath.Join(o.Root, filepath.FromSlash(strings.Trim(o.Project, "/")))
	// The paths wire.Layout.FileURL names, on disk.
	dest := func(file string) string {
		if o.Prefix {
			return filepath.Join(project, filepath.FromSlash(o.Version+"_"+file))
		}
		return filepath.Join(project, o.Version, filepath.FromSlash(file))
	}
	files, err := sourceFiles(o.Src)
	if err != nil {
		return nil, err
	}
	m := &wire.Manifest{Format: wire.ManifestFormat, Project: strings.Trim(o.Project, "/"), Version: o.Version, Sequence: o.Sequence}
	if m.Sequence == 0 {
		if m.Sequence, err = nextSequence(project); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		sum, size, err := copyFile(filepath.Join(o.Src, filepath.FromSlash(f.path)), dest(f.path))
		if err != nil {
			return nil, err
		}
		m.Files = append(m.Files, wire.ManifestFile{Path: f.path, Size: size, SHA256: sum, Mode: wire.FormatMode(f.mode)})
	}
	body, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	manPath := dest(wire.ManifestName)
	if err := writeFile(manPath, body); err != nil {
		return nil, err
	}
	sigPath := manPath + wire.SignatureSuffix
	if o.Key != nil {
		if err := writeFile(sigPath, wire.SignManifest(*o.Key, body, wire.TrustedComment(m))); err != nil {
			return nil, err
		}
	} else if err := os.Remove(sigPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if o.Current {
		if err := writeFile(filepath.Join(project, "version"), []byte(o.Version+"\n")); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type srcFile struct {
	path string
	mode fs.FileMode
}

// sourceFiles lists the regular files under dir by the agent's path rule.
// A symlink, a device or a setuid, setgid or sticky file is refused, and so
// is a file named like the manifest at the top.
func sourceFiles(dir string) ([]srcFile, error) {
	var out []srcFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%s: not a regular file (%v); a release holds files only", p, fi.Mode().Type())
		case fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0:
			return fmt.Errorf("%s: setuid, setgid or sticky (%v): a release never carries them", p, fi.Mode())
		case rel == wire.ManifestName || rel == wire.ManifestName+wire.SignatureSuffix:
			return fmt.Errorf("%s: the name of the release's manifest; rename it", p)
		}
		if err := wire.CheckPath(rel); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, srcFile{path: rel, mode: fi.Mode().Perm()})
		return nil
	})
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("%s holds no files", dir)
	}
	return out, err
}

// nextSequence is one more than the highest sequence of the manifests in
// the project directory (both layouts), 1 if there is none.
func nextSequence(project string) (uint64, error) {
	var top uint64
	for _, pattern := range []string{"*_" + wire.ManifestName, "*/" + wire.ManifestName} {
		paths, _ := filepath.Glob(filepath.Join(project, pattern))
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				return 0, err
			}
			m, err := wire.ParseManifest(b)
			if err != nil {
				return 0, fmt.Errorf("%s: %w (the next sequence is one more than the highest; pass one explicitly or fix it)", p, err)
			}
			top = max(top, m.Sequence)
		}
	}
	return top + 1, nil
}

// copyFile copies src to dst durably and returns the SHA-256 and size of
// what it wrote.
func copyFile(src, dst string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	h := sha256.New()
	var n int64
	err = atomicWrite(dst, func(w io.Writer) error {
		n, err = io.Copy(io.MultiWriter(w, h), in)
		return err
	})
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func writeFile(dst string, b []byte) error {
	return atomicWrite(dst, func(w io.Writer) error { _, err := w.Write(b); return err })
}

// atomicWrite writes dst through a temp file in its directory: write,
// fsync, close, rename, fsync the directory. The file is 0644: the server
// only reads it; the mode a device gives it is the manifest's.
func atomicWrite(dst string, fill func(io.Writer) error) error {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := fill(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadKey reads a minisign secret key file; an encrypted one is decrypted
// with the password that password returns (called only then).
func ReadKey(path string, password func() (string, error)) (minisign.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, err
	}
	if !minisign.IsEncrypted(b) {
		var k minisign.PrivateKey
		if err := k.UnmarshalText(b); err != nil {
			return k, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	}
	pw, err := password()
	if err != nil {
		return minisign.PrivateKey{}, err
	}
	k, err := minisign.DecryptKey(pw, b)
	if err != nil {
		return k, fmt.Errorf("%s: %w (wrong password?)", path, err)
	}
	return k, nil
}

// Keygen writes a new minisign key pair: the secret key to secPath
// (encrypted with password unless it is empty; mode 0600, never
// overwritten) and the public key to pubPath. It returns the public key.
func Keygen(secPath, pubPath, password string) (minisign.PublicKey, error) {
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		return pub, err
	}
	var sec []byte
	if password != "" {
		sec, err = minisign.EncryptKey(password, priv)
	} else {
		sec, err = priv.MarshalText()
	}
	if err != nil {
		return pub, err
	}
	f, err := os.OpenFile(secPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return pub, err
	}
	if _, err := f.Write(append(sec, '\n')); err != nil {
		f.Close()
		return pub, err
	}
	if err := f.Close(); err != nil {
		return pub, err
	}
	pubText, _ := pub.MarshalText()
	return pub, writeFile(pubPath, append(pubText, '\n'))
}
