package wire

import (
	"errors"
	"fmt"
	"strings"

	"aead.dev/minisign"
)

// Signatures are minisign's (https://jedisct1.github.io/minisign/), made
// by `minisign -S` (legacy Ed25519 or the default prehashed BLAKE2b) or by
// `ota-agent publish`, over the manifest's exact bytes. The signed trusted
// comment is free text: publish writes "project=P version=V sequence=N",
// but the agent trusts only the manifest, which holds the same and is
// covered by the same signature. A device holds public keys (the base64
// line of a .pub file); several keys let a publisher rotate them.

// ErrSignature is returned for a manifest whose signature is missing,
// malformed, by none of the trusted keys, or does not match its bytes.
var ErrSignature = errors.New("manifest signature does not verify")

// PublicKey is a minisign public key a device trusts.
type PublicKey = minisign.PublicKey

// ParsePublicKey reads a minisign public key: the base64 line of a .pub
// file, or the whole file (its "untrusted comment:" line is skipped).
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	if err := k.UnmarshalText([]byte(s)); err != nil {
		return k, fmt.Errorf("not a minisign public key (the base64 line of a .pub file): %v", err)
	}
	return k, nil
}

// VerifyManifest checks that sig, a .minisig file's content, is a valid
// signature of manifest by one of keys, and returns the signature's
// trusted comment. With no keys nothing can verify: ErrSignature.
func VerifyManifest(keys []PublicKey, manifest, sig []byte) (string, error) {
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return "", fmt.Errorf("%w: %v", ErrSignature, err)
	}
	for _, k := range keys {
		if k.ID() == s.KeyID && minisign.Verify(k, manifest, sig) {
			return s.TrustedComment, nil
		}
	}
	for _, k := range keys {
		if k.ID() == s.KeyID {
			return "", fmt.Errorf("%w: the signature by key %X does not match the manifest", ErrSignature, s.KeyID)
		}
	}
	return "", fmt.Errorf("%w: signed by key %X, which is not among the %d trusted public_keys", ErrSignature, s.KeyID, len(keys))
}

// SignManifest signs manifest with key the way `minisign -S` does
// (prehashed), with trustedComment signed along.
func SignManifest(key minisign.PrivateKey, manifest []byte, trustedComment string) []byte {
	r := minisign.NewReader(strings.NewReader(string(manifest)))
	// Reading a strings.Reader into the hash cannot fail.
	buf := make([]byte, 32<<10)
	for {
		if _, err := r.Read(buf); err != nil {
			break
		}
	}
	untrusted := fmt.Sprintf("signature from ota-agent publish, key %X", key.ID())
	return r.SignWithComments(key, trustedComment, untrusted)
}

// TrustedComment is what publish signs along with a manifest.
func TrustedComment(m *Manifest) string {
	return fmt.Sprintf("project=%s version=%s sequence=%d", m.Project, m.Version, m.Sequence)
}
