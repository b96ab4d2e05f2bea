package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/publish"
)

const publishAbout = `Write the files of SRC_DIR as release V of project P under DIR, in the layout
ota-agent and micropython-ota read (DIR/P/V_<file>, or DIR/P/V/<file> with
--no-version-prefix), then the release's manifest (V_manifest.json) with the
next sequence, then its minisign signature with --sign-key, then, with
--current, DIR/P/version, last and atomically. Serve DIR with any web server.

An encrypted secret key's password is read from --password-file, else from
$OTA_AGENT_SIGN_PASSWORD, else asked on the terminal.`

type publishOptions struct {
	o               publish.Options
	noPrefix        *bool
	keyFile, pwFile *string
}

func publishFlags(fs *flag.FlagSet) runFunc {
	p := &publishOptions{}
	o := &p.o
	fs.StringVar(&o.Root, "root", "", "the server's root `dir`")
	fs.StringVar(&o.Project, "project", "", "the project's directory on the server")
	fs.StringVar(&o.Version, "version", "", "the release's version `tag`")
	p.noPrefix = fs.Bool("no-version-prefix", false, "write <version>/<file>, not <version>_<file>")
	p.keyFile = fs.String("sign-key", "", "minisign secret key `file` to sign the manifest with (minisign -G or ota-agent keygen)")
	p.pwFile = fs.String("password-file", "", "read the secret key's password from `file`")
	fs.BoolVar(&o.Current, "current", false, "write version last, so devices install this release")
	fs.Uint64Var(&o.Sequence, "sequence", 0, "the manifest's sequence (default: one more than the project's highest)")
	return func(ctx context.Context, g *globals, args []string) error { return runPublish(ctx, g, p, args) }
}

// runPublish runs `ota-agent publish`.
func runPublish(ctx context.Context, g *globals, p *publishOptions, pos []string) error {
	o, noPrefix, keyFile, pwFile := p.o, p.noPrefix, p.keyFile, p.pwFile
	if len(pos) != 1 || o.Root == "" || o.Project == "" || o.Version == "" {
		return usageErrorf("publish: want SRC_DIR, --root, --project and --version; run 'ota-agent publish --help'")
	}
	o.Src, o.Prefix = pos[0], !*noPrefix
	if *keyFile != "" {
		k, err := publish.ReadKey(*keyFile, func() (string, error) { return signPassword(*pwFile, "password of "+*keyFile) })
		if err != nil {
			return &agent.ConfigError{Key: "--sign-key", Msg: err.Error()}
		}
		o.Key = &k
	}
	m, err := publish.Publish(o)
	if err != nil {
		return err
	}
	signed := "unsigned"
	if o.Key != nil {
		signed = "signed"
	}
	fmt.Fprintf(g.stdout, "published %s %s: %d files, sequence %d, %s", m.Project, m.Version, len(m.Files), m.Sequence, signed)
	if o.Current {
		fmt.Fprint(g.stdout, ", current")
	}
	fmt.Fprintln(g.stdout)
	return nil
}

// signPassword is a secret key's password: from file, else
// $OTA_AGENT_SIGN_PASSWORD, else asked on the terminal without echo.
func signPassword(file, prompt string) (string, error) {
	if file != "" {
		return readSecret(file)
	}
	if pw := os.Getenv("OTA_AGENT_SIGN_PASSWORD"); pw != "" {
		return pw, nil
	}
	return askPassword(prompt)
}
