package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/ota-agent/ota-agent/publish"
)

func init() {
	commands["keygen"] = command{cmdKeygen, "make a minisign key pair for publish --sign-key and public_keys"}
}

const keygenUsage = `usage: ota-agent keygen --secret-key FILE --public-key FILE [flags]

Make a minisign key pair (the same files as minisign -G): the secret key,
mode 0600, never overwritten, encrypted with the password from
--password-file, $OTA_AGENT_SIGN_PASSWORD or the terminal (--unencrypted: not
encrypted, for a CI secret store), and the public key, whose last line goes
into public_keys.

flags:
`

// cmdKeygen runs `ota-agent keygen`.
func cmdKeygen(ctx context.Context, g *globals, args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	sec := fs.String("secret-key", "", "write the secret key to `file`")
	pub := fs.String("public-key", "", "write the public key to `file`")
	pwFile := fs.String("password-file", "", "encrypt the secret key with the password in `file`")
	plain := fs.Bool("unencrypted", false, "do not encrypt the secret key")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), keygenUsage)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageErrorf("keygen: %v", err)
	}
	if len(pos) != 0 || *sec == "" || *pub == "" {
		fs.Usage()
		return usageErrorf("keygen: want --secret-key and --public-key")
	}
	password := ""
	if !*plain {
		if password, err = signPassword(*pwFile, "password for the new secret key"); err != nil {
			return err
		}
	}
	k, err := publish.Keygen(*sec, *pub, password)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "public key (for public_keys): %s\n", k.String())
	return nil
}
