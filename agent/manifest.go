package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
)

// The release's manifest, when the server has one (see wire.Manifest):
//
//  1. GET <tag>_manifest.json (or <tag>/manifest.json), bounded by
//     wire.MaxManifestSize. A 404 means the server has none: the configured
//     files list is the release, as with micropython-ota, unless
//     public_keys is set, which makes a signed manifest mandatory.
//  2. With public_keys: GET the .minisig beside it; the signature must
//     verify over the manifest's exact bytes with one of the keys. Nothing
//     of the manifest is used before that.
//  3. The manifest must parse and pass the format's rules (paths, modes
//     without setuid, setgid or sticky), and name this project and the tag
//     `version` names.
//  4. With public_keys, its sequence must be at least the highest one this
//     app accepted (state.json's sequence), and higher unless the tag is the
//     installed one: a replayed old `version` with its old signed manifest
//     cannot downgrade, while the old tag published again (a new sequence)
//     is an operator's rollback and installs. No clock is involved.
//
// Every refusal comes before the download, and every file is then checked
// against its size and SHA-256 before the switch: nothing changes.

// ErrReplay is returned for a signed manifest whose sequence is lower than
// one already accepted (or equal, for another tag).
var ErrReplay = errors.New("manifest replayed")

// ErrUnsigned is returned when public_keys is set and the server has no
// manifest or no signature for it.
var ErrUnsigned = errors.New("release is not signed")

// release is what Update installs: the files of a manifest, or the
// configured list.
type release struct {
	tag      string
	manifest *wire.Manifest // nil: the configured files, unchecked
}

func (r *release) paths(configured []string) []string {
	if r.manifest == nil {
		return configured
	}
	return r.manifest.Paths()
}

// release fetches and checks the manifest of tag (see above), given the
// app's installed state.
func (a *Agent) release(ctx context.Context, st store.State, tag string) (*release, error) {
	rel := &release{tag: tag}
	signed := len(a.keys) > 0
	url := a.layout.ManifestURL(tag)
	body, err := a.fetchSmall(ctx, url, wire.ReadManifest)
	var se *StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusNotFound && !signed:
		if len(a.app.Files) == 0 {
			return nil, &ConfigError{App: a.app.Name, Key: "files", Msg: fmt.Sprintf("no files listed, and the server has no manifest at %s: nothing to install", url)}
		}
		return rel, nil
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		return nil, fmt.Errorf("%w: no manifest at %s, and public_keys makes one mandatory", ErrUnsigned, url)
	case err != nil:
		return nil, err
	}
	if signed {
		sigURL := a.layout.SignatureURL(tag)
		sig, err := a.fetchSmall(ctx, sigURL, wire.ReadSignature)
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return nil, fmt.Errorf("%w: no signature at %s, and public_keys makes one mandatory", ErrUnsigned, sigURL)
		}
		if err != nil {
			return nil, err
		}
		if _, err := wire.VerifyManifest(a.keys, body, sig); err != nil {
			return nil, fmt.Errorf("%s: %w", url, err)
		}
	}
	m, err := wire.ParseManifest(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if err := m.For(a.app.Project, tag); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if signed {
		switch {
		case m.Sequence < st.Sequence:
			return nil, fmt.Errorf("%s: %w: sequence %d is lower than %d, already accepted: an old release served again; to roll back, publish the old tag again", url, ErrReplay, m.Sequence, st.Sequence)
		case m.Sequence == st.Sequence && st.Sequence != 0 && tag != st.Version:
			return nil, fmt.Errorf("%s: %w: sequence %d was accepted for %s, not %s", url, ErrReplay, m.Sequence, orNone(st.Version), tag)
		}
	}
	if len(a.app.Files) > 0 && !sameSet(a.app.Files, m.Paths()) {
		a.log.Warn().Strs("files", a.app.Files).Strs("manifest", m.Paths()).Str("url", url).
			Msg("the configured files differ from the release's manifest: the manifest wins")
	}
	rel.manifest = m
	return rel, nil
}

// fetchSmall GETs url and reads its body with read (a bounded reader).
func (a *Agent) fetchSmall(ctx context.Context, url string, read func(io.Reader) ([]byte, error)) ([]byte, error) {
	resp, err := a.c.get(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Close()
	if resp.ContentLength > wire.MaxManifestSize {
		return nil, fmt.Errorf("GET %s: %w: %d bytes, at most %d", url, wire.ErrManifest, resp.ContentLength, wire.MaxManifestSize)
	}
	b, err := read(resp)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return b, nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// stageRelease brings every file of rel into stage: with a manifest, a
// file staged by an earlier run or held by the app already (store.Reuse)
// is not downloaded, and each file is checked against its size, SHA-256
// and mode; without one, each configured file is downloaded as before.
func (a *Agent) stageRelease(ctx context.Context, stage *store.Stage, rel *release) error {
	if rel.manifest == nil {
		a.prog.begin(a.app.Name, rel.tag, len(a.app.Files))
		for _, f := range a.app.Files {
			if err := a.download(ctx, stage, rel.tag, f); err != nil {
				return err
			}
			a.prog.done()
		}
		a.prog.finish()
		return stage.DropPartials()
	}
	a.prog.begin(a.app.Name, rel.tag, len(rel.manifest.Files))
	defer a.prog.finish()
	stage.SetSequence(0)
	if len(a.keys) > 0 {
		stage.SetSequence(rel.manifest.Sequence)
	}
	reused := 0
	for i, f := range rel.manifest.Files {
		if i > 0 {
			a.prog.done() // the one before, whichever way it was staged
		}
		w := store.Want{Size: f.Size, SHA256: f.SHA256, Mode: f.Perm()}
		if _, ok := stage.HaveWant(f.Path, w); ok {
			continue
		}
		// A partial download from a cut run is continued, not replaced.
		if _, ok := stage.Partial(f.Path); ok {
			if err := a.downloadWant(ctx, stage, rel.tag, f.Path, w); err != nil {
				return err
			}
			continue
		}
		ok, err := stage.Reuse(f.Path, w)
		if err != nil {
			return err
		}
		if ok {
			reused++
			continue
		}
		if err := a.downloadWant(ctx, stage, rel.tag, f.Path, w); err != nil {
			return err
		}
	}
	if len(rel.manifest.Files) > 0 {
		a.prog.done()
	}
	if reused > 0 {
		a.log.Debug().Int("files", reused).Msg("files the app already held were reused, not downloaded")
	}
	return stage.DropPartials()
}

// downloadWant downloads one file a manifest describes.
func (a *Agent) downloadWant(ctx context.Context, stage *store.Stage, tag, file string, w store.Want) error {
	url := a.layout.FileURL(tag, file)
	resp, d, err := a.fetchFile(ctx, stage, url, file)
	if err != nil {
		return err
	}
	defer resp.Close()
	a.prog.file(file, w.Size)
	d.Want = &w
	if _, err := stage.Download(file, d); err != nil {
		if errors.Is(err, store.ErrTruncated) {
			err = fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		return fmt.Errorf("download %s: %w", url, err)
	}
	return nil
}

// parseKeys reads public_keys (see wire.ParsePublicKey).
func parseKeys(keys []string) ([]wire.PublicKey, error) {
	out := make([]wire.PublicKey, 0, len(keys))
	for i, k := range keys {
		pk, err := wire.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %v", i+1, err)
		}
		out = append(out, pk)
	}
	return out, nil
}
