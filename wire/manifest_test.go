package wire

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

const hashA = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

func TestParseManifest(t *testing.T) {
	good := `{"format":1,"project":"sample","version":"v1.0.1","sequence":17,"future":"ignored",
	 "files":[{"path":"main.py","size":5,"sha256":"` + hashA + `"},{"path":"bin/run","size":5,"sha256":"` + hashA + `","mode":"0755"}]}`
	m, err := ParseManifest([]byte(good))
	if err != nil {
		t.Fatalf("ParseManifest(good) = %v", err)
	}
	if m.Sequence != 17 || len(m.Files) != 2 || m.Files[0].Perm() != 0o644 || m.Files[1].Perm() != 0o755 {
		t.Fatalf("ParseManifest(good) = %+v", m)
	}
	if err := m.For("sample", "v1.0.1"); err != nil {
		t.Errorf("For(sample, v1.0.1) = %v", err)
	}
	if err := m.For("other", "v1.0.1"); !errors.Is(err, ErrWrongRelease) {
		t.Errorf("For(other, v1.0.1) = %v, want ErrWrongRelease", err)
	}
	if err := m.For("sample", "v1.0.0"); !errors.Is(err, ErrWrongRelease) {
		t.Errorf("For(sample, v1.0.0) = %v, want ErrWrongRelease", err)
	}

	file := func(f string) string {
		return `{"format":1,"project":"sample","version":"v1","sequence":1,"files":[` + f + `]}`
	}
	one := func(path, extra string) string {
		return file(`{"path":"` + path + `","size":1,"sha256":"` + hashA + `"` + extra + `}`)
	}
	for name, body := range map[string]string{
		"not json":        "<html>",
		"format 2":        strings.Replace(one("a", ""), `"format":1`, `"format":2`, 1),
		"no project":      strings.Replace(one("a", ""), `"sample"`, `""`, 1),
		"unsafe version":  strings.Replace(one("a", ""), `"v1"`, `"../v1"`, 1),
		"no files":        file(""),
		"dotdot":          one("../etc/passwd", ""),
		"absolute":        one("/etc/passwd", ""),
		"unclean":         one("a//b", ""),
		"control":         one(`a\u0001b`, ""),
		"manifest name":   one("manifest.json", ""),
		"signature name":  one("manifest.json.minisig", ""),
		"negative size":   file(`{"path":"a","size":-1,"sha256":"` + hashA + `"}`),
		"short hash":      file(`{"path":"a","size":1,"sha256":"abc"}`),
		"upper hash":      file(`{"path":"a","size":1,"sha256":"` + strings.ToUpper(hashA) + `"}`),
		"setuid":          one("a", `,"mode":"4755"`),
		"setgid":          one("a", `,"mode":"2755"`),
		"sticky":          one("a", `,"mode":"1755"`),
		"beyond perm":     one("a", `,"mode":"10644"`),
		"not octal":       one("a", `,"mode":"0958"`),
		"twice":           file(`{"path":"a","size":1,"sha256":"` + hashA + `"},{"path":"a","size":1,"sha256":"` + hashA + `"}`),
		"file is dir":     file(`{"path":"a","size":1,"sha256":"` + hashA + `"},{"path":"a/b/c","size":1,"sha256":"` + hashA + `"}`),
		"sequence string": strings.Replace(one("a", ""), `"sequence":1`, `"sequence":"1"`, 1),
	} {
		if _, err := ParseManifest([]byte(body)); !errors.Is(err, ErrManifest) {
			t.Errorf("ParseManifest(%s) = %v, want ErrManifest", name, err)
		}
	}
}

func TestReadManifestIsBounded(t *testing.T) {
	big := strings.NewReader(strings.Repeat(" ", MaxManifestSize+1))
	if _, err := ReadManifest(big); !errors.Is(err, ErrManifest) {
		t.Fatalf("ReadManifest(%d bytes) = %v, want ErrManifest", MaxManifestSize+1, err)
	}
	if _, err := ParseManifest(make([]byte, MaxManifestSize+1)); !errors.Is(err, ErrManifest) {
		t.Fatalf("ParseManifest(%d bytes) = %v, want ErrManifest", MaxManifestSize+1, err)
	}
	if _, err := ReadSignature(strings.NewReader(strings.Repeat("x", MaxSignatureSize+1))); !errors.Is(err, ErrManifest) {
		t.Fatalf("ReadSignature(too big) = %v, want an error", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	m := &Manifest{Format: 1, Project: "sample", Version: "v2", Sequence: 3, Files: []ManifestFile{
		{Path: "z.py", Size: 5, SHA256: hashA, Mode: FormatMode(0o755)},
		{Path: "a.py", Size: 5, SHA256: hashA},
	}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseManifest(b)
	if err != nil {
		t.Fatalf("ParseManifest(Marshal()) = %v", err)
	}
	if got.Files[0].Path != "a.py" || got.Files[1].Perm() != fs.FileMode(0o755) || got.Sequence != 3 {
		t.Fatalf("round trip = %+v", got)
	}
	m.Files[0].Mode = "4755"
	if _, err := m.Marshal(); !errors.Is(err, ErrManifest) {
		t.Fatalf("Marshal(setuid) = %v, want ErrManifest", err)
	}
}

func TestManifestURLs(t *testing.T) {
	for _, tc := range []struct {
		prefix   bool
		man, sig string
	}{
		{true, "http://h/p/v1_manifest.json", "http://h/p/v1_manifest.json.minisig"},
		{false, "http://h/p/v1/manifest.json", "http://h/p/v1/manifest.json.minisig"},
	} {
		l := Layout{Host: "http://h", Project: "p", Prefix: tc.prefix}
		if got := l.ManifestURL("v1"); got != tc.man {
			t.Errorf("ManifestURL = %q, want %q", got, tc.man)
		}
		if got := l.SignatureURL("v1"); got != tc.sig {
			t.Errorf("SignatureURL = %q, want %q", got, tc.sig)
		}
	}
}
