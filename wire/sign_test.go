package wire

import (
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
	"github.com/ota-agent/ota-agent/internal/testenv"
)

func TestSignVerify(t *testing.T) {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := minisign.GenerateKey(rand.Reader)
	msg := []byte(`{"format":1}`)
	sig := SignManifest(priv, msg, "project=p version=v1 sequence=1")
	k, err := ParsePublicKey(pub.String())
	if err != nil {
		t.Fatalf("ParsePublicKey = %v", err)
	}
	tc, err := VerifyManifest([]PublicKey{other, k}, msg, sig)
	if err != nil || tc != "project=p version=v1 sequence=1" {
		t.Fatalf("VerifyManifest = %q, %v", tc, err)
	}
	for name, tc := range map[string]struct {
		keys     []PublicKey
		msg, sig []byte
	}{
		"unknown key": {[]PublicKey{other}, msg, sig},
		"no keys":     {nil, msg, sig},
		"tampered":    {[]PublicKey{k}, []byte(`{"format":2}`), sig},
		"garbage":     {[]PublicKey{k}, msg, []byte("untrusted comment: x\nnope\n")},
		"empty":       {[]PublicKey{k}, msg, nil},
	} {
		if _, err := VerifyManifest(tc.keys, tc.msg, tc.sig); !errors.Is(err, ErrSignature) {
			t.Errorf("VerifyManifest(%s) = %v, want ErrSignature", name, err)
		}
	}
	text, _ := pub.MarshalText()
	if _, err := ParsePublicKey(string(text)); err != nil {
		t.Errorf("ParsePublicKey(whole .pub file) = %v", err)
	}
	if _, err := ParsePublicKey("RWQ not a key"); err == nil {
		t.Error("ParsePublicKey(garbage) = nil, want an error")
	}
}

// The real minisign tool: what it signs (prehashed, and legacy with -l)
// verifies here; what SignManifest signs verifies with minisign -V.
func TestMinisignInterop(t *testing.T) {
	bin, err := exec.LookPath("minisign")
	testenv.Require(t, "minisign", err == nil)
	dir := t.TempDir()
	pubFile, secFile := filepath.Join(dir, "k.pub"), filepath.Join(dir, "k.key")
	if out, err := exec.Command(bin, "-G", "-W", "-p", pubFile, "-s", secFile).CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	pubText, _ := os.ReadFile(pubFile)
	key, err := ParsePublicKey(string(pubText))
	if err != nil {
		t.Fatalf("ParsePublicKey(minisign's .pub) = %v", err)
	}
	manifest := filepath.Join(dir, "v1_manifest.json")
	body := []byte(`{"format":1,"project":"p","version":"v1","sequence":1,"files":[]}` + "\n")
	os.WriteFile(manifest, body, 0o644)
	for _, legacy := range []bool{false, true} {
		args := []string{"-S", "-s", secFile, "-m", manifest, "-t", "project=p version=v1 sequence=1"}
		if legacy {
			args = append(args, "-l")
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("minisign %v: %v\n%s", args, err, out)
		}
		sig, _ := os.ReadFile(manifest + ".minisig")
		if tc, err := VerifyManifest([]PublicKey{key}, body, sig); err != nil || tc != "project=p version=v1 sequence=1" {
			t.Errorf("VerifyManifest(minisign -S legacy=%v) = %q, %v", legacy, tc, err)
		}
		if _, err := VerifyManifest([]PublicKey{key}, append(body, ' '), sig); !errors.Is(err, ErrSignature) {
			t.Errorf("VerifyManifest(tampered, legacy=%v) = %v, want ErrSignature", legacy, err)
		}
	}
	// The other way: our signature, minisign's check.
	secText, _ := os.ReadFile(secFile)
	var priv minisign.PrivateKey
	if err := priv.UnmarshalText(secText); err != nil {
		t.Fatalf("read minisign's unencrypted secret key: %v", err)
	}
	os.WriteFile(manifest+".minisig", SignManifest(priv, body, "project=p version=v1 sequence=1"), 0o644)
	out, err := exec.Command(bin, "-V", "-p", pubFile, "-m", manifest).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "project=p version=v1 sequence=1") {
		t.Fatalf("minisign -V of SignManifest's signature: %v\n%s", err, out)
	}
}
