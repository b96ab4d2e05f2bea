package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

// The man page and the completions are built from the help text: a new
// flag shows up in --help, the man page, and both completions.
func TestNewFlagInAllFour(t *testing.T) {
	cmds := append(commandTable(), command{name: "frob", summary: "frob the apps", about: "Frobs.",
		setup: func(fs *flag.FlagSet) runFunc {
			fs.String("brand-new-flag", "", "a flag added `today`")
			return nil
		}})
	c := &cmds[len(cmds)-1]
	var help, man, bash, zsh bytes.Buffer
	c.writeHelp(&help)
	writeMan(&man, cmds)
	writeBash(&bash, cmds)
	writeZsh(&zsh, cmds)
	for name, want := range map[string][]string{
		"help": {help.String(), "--brand-new-flag TODAY", "a flag added today"},
		"man":  {man.String(), `\-\-brand\-new\-flag`, "a flag added today", `.SS "ota\-agent frob [flags]"`},
		"bash": {bash.String(), "frob) flags=\"--brand-new-flag --help\"", " frob "},
		"zsh":  {zsh.String(), "'--brand-new-flag=[a flag added today]:TODAY:'", "'frob:frob the apps'"},
	} {
		for _, w := range want[1:] {
			if !strings.Contains(want[0], w) {
				t.Errorf("%s lacks %q", name, w)
			}
		}
	}
}

// The files under docs/ are what `go generate ./cmd/ota-agent` writes now.
func TestGeneratedDocsUpToDate(t *testing.T) {
	cmds := commandTable()
	for path, write := range map[string]func(*bytes.Buffer){
		"../../docs/ota-agent.8":                func(b *bytes.Buffer) { writeMan(b, cmds) },
		"../../docs/completions/ota-agent.bash": func(b *bytes.Buffer) { writeBash(b, cmds) },
		"../../docs/completions/_ota-agent":     func(b *bytes.Buffer) { writeZsh(b, cmds) },
	} {
		var b bytes.Buffer
		write(&b)
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, b.Bytes()) {
			t.Errorf("%s is not what the help text makes now (%v): run go generate ./cmd/ota-agent", path, err)
		}
	}
}
