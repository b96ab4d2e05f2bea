package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/ota-agent/ota-agent/publish"
)

const keygenAbout = `Make a minisign key pair (the same files as minisign -G): the secret key,
mode 0600, never overwritten, encrypted with the password from
--password-file, $OTA_AGENT_SIGN_PASSWORD or the terminal (--unencrypted: not
encrypted, for a CI secret store), and the public key, whose last line goes
into public_keys.`

type keygenOptions struct {
	sec, pub, pwFile *string
	plain            *bool
}

func keygenFlags(fs *flag.FlagSet) runFunc {
	var o keygenOptions
	o.sec = fs.String("secret-key", "", "write the secret key to `file`")
	o.pub = fs.String("public-key", "", "write the public key to `file`")
	o.pwFile = fs.String("password-file", "", "encrypt the secret key with the password in `file`")
	o.plain = fs.Bool("unencrypted", false, "do not encrypt the secret key")
	return func(ctx context.Context, g *globals, args []string) error { return runKeygen(ctx, g, o, args) }
}

// runKeygen runs `ota-agent keygen`.
func runKeygen(ctx context.Context, g *globals, o keygenOptions, pos []string) error {
	sec, pub, pwFile, plain := o.sec, o.pub, o.pwFile, o.plain
	if len(pos) != 0 || *sec == "" || *pub == "" {
		return usageErrorf("keygen: want --secret-key and --public-key; run 'ota-agent keygen --help'")
	}
	password, err := "", error(nil)
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
