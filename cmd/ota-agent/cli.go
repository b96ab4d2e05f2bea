package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// runFunc runs a command once its flags are parsed; args are the
// positional arguments.
type runFunc func(ctx context.Context, g *globals, args []string) error

// A command is one line of commandTable: its help text, written once (it
// feeds --help, the man page and the completions), and setup, which adds
// the command's flags to fs and returns its run, bound to them.
type command struct {
	name    string
	args    string // positional arguments in the synopsis ("[APP...]")
	summary string // one line, for the list of commands
	about   string // the paragraph of its help
	// appFlags are the app flags its help shows; nil: all it has. The
	// others are accepted all the same, so one set of flags serves every
	// command.
	appFlags []string
	exits    []int // its exit codes; nil: 0, 1, 2
	setup    func(fs *flag.FlagSet) runFunc
}

// Exit codes of the commands that act on apps.
var (
	appExits   = []int{ExitOK, ExitFailed, ExitUsage, ExitTempFail}
	checkExits = []int{ExitOK, ExitFailed, ExitUsage, ExitTempFail, ExitUpdateAvail}
)

// exitMeaning is each exit code as help and the man page explain it.
var exitMeaning = map[int]string{
	ExitOK:          "success, or up to date",
	ExitFailed:      "the operation failed (404, 401/403, a bad tag, a file too large, a full disk, a failed switch, a file that differs)",
	ExitUsage:       "usage or configuration error, a unit that does not exist or a bus that does not answer included",
	ExitTempFail:    "the server could not be reached and nothing changed",
	ExitUpdateAvail: "check found an update",
}

const (
	about       = "ota-agent brings the applications of a Linux board to the version a plain web server publishes."
	flagsNote   = "Flags go anywhere among the arguments, as --flag value or --flag=value."
	appFlagNote = "Without --config, --host or --project describe one app from flags alone and no config file is read; otherwise each app flag overrides its key in every configured app."
)

func findCommand(cmds []command, name string) *command {
	for i := range cmds {
		if cmds[i].name == name {
			return &cmds[i]
		}
	}
	return nil
}

// dispatch runs the command args name, or the top-level help or version.
func (g *globals) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		writeUsage(g.stderr, commandTable())
		return exitCodeError{ExitUsage}
	}
	switch args[0] {
	case "-h", "--help", "-help":
		args = []string{"help"}
	case "--version", "-version", "-V":
		args = []string{"version"}
	}
	c := findCommand(commandTable(), args[0])
	if c == nil {
		return usageErrorf("unknown command %q; run 'ota-agent --help' for the list", args[0])
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	run := c.setup(fs)
	pos, err := parseArgs(fs, args[1:])
	if err == errHelp {
		c.writeHelp(g.stdout)
		return nil
	}
	if err != nil {
		return usageErrorf("%s: %v; run 'ota-agent %s --help'", c.name, err, c.name)
	}
	return run(ctx, g, pos)
}

// optionalValue is a flag whose value may follow it as the next argument
// when that argument is one ("--wait 30s"); alone it is set to "true"
// ("--wait").
type optionalValue interface {
	flag.Value
	accepts(arg string) bool
	argName() string
}

// parseArgs parses flags anywhere among args (GNU style): --flag value,
// --flag=value, -flag as well; "--" ends the flags. -h or --help anywhere
// returns errHelp. The positional arguments are returned in order.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if len(arg) < 2 || arg[0] != '-' {
			pos = append(pos, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				return nil, errHelp
			}
			return nil, fmt.Errorf("unknown flag --%s", name)
		}
		if !hasValue {
			opt, isOpt := f.Value.(optionalValue)
			b, isBool := f.Value.(interface{ IsBoolFlag() bool })
			switch {
			case isOpt:
				value = "true"
				if i+1 < len(args) && opt.accepts(args[i+1]) {
					i++
					value = args[i]
				}
			case isBool && b.IsBoolFlag():
				value = "true"
			case i+1 >= len(args):
				return nil, fmt.Errorf("--%s needs a value", name)
			default:
				i++
				value = args[i]
			}
		}
		if err := fs.Set(name, value); err != nil {
			return nil, fmt.Errorf("--%s %q: %v", name, value, err)
		}
	}
	return pos, nil
}

// A flagRow is one flag as help, the man page and the completions show it.
type flagRow struct {
	name, arg, usage string
	app              bool // an app flag (appFlagNames)
}

// flagRows returns the flags c's help shows: its own and the common ones,
// then the app flags, each group sorted.
func (c *command) flagRows() []flagRow {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.setup(fs)
	var own, app []flagRow
	hasApps := fs.Lookup("app-dir") != nil
	fs.VisitAll(func(f *flag.Flag) {
		isApp := hasApps && appFlagNames[f.Name]
		if isApp && c.appFlags != nil && !slices.Contains(c.appFlags, f.Name) {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		switch v := f.Value.(type) {
		case optionalValue:
			arg = "[" + v.argName() + "]"
		default:
			arg = argName(f.Name, arg)
		}
		if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" && !strings.Contains(usage, "(default") {
			usage += " (default " + d + ")"
		}
		r := flagRow{name: f.Name, arg: arg, usage: usage, app: isApp}
		if isApp {
			app = append(app, r)
		} else {
			own = append(own, r)
		}
	})
	return append(own, app...)
}

// argName names a flag's value for help: a name its usage gave in
// backquotes, else one read from the type and the flag's name.
func argName(flagName, typ string) string {
	if n, ok := flagArgs[flagName]; ok && (typ == "string" || typ == "value") {
		return n
	}
	switch typ {
	case "":
		return ""
	case "duration":
		return "DURATION"
	case "int", "uint":
		return "N"
	case "string", "value":
		switch {
		case strings.HasSuffix(flagName, "-dir"):
			return "DIR"
		case strings.HasSuffix(flagName, "-file"), strings.HasSuffix(flagName, "-key"), strings.HasSuffix(flagName, "-cert"):
			return "FILE"
		}
		return "VALUE"
	}
	return strings.ToUpper(typ)
}

func (c *command) synopsis() string {
	s := "ota-agent " + c.name
	if c.name != "version" {
		s += " [flags]"
	}
	if c.args != "" {
		s += " " + c.args
	}
	return s
}

func (c *command) exitCodes() []int {
	if c.exits == nil {
		return []int{ExitOK, ExitFailed, ExitUsage}
	}
	return c.exits
}

// writeHelp writes c's --help.
func (c *command) writeHelp(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", c.synopsis(), wrap(c.about, 78, ""))
	rows := c.flagRows()
	inApp := false
	for i, r := range rows {
		if i == 0 {
			fmt.Fprintf(w, "\nflags:\n")
		}
		if r.app && !inApp {
			inApp = true
			fmt.Fprintf(w, "\napp flags:\n%s\n", wrap(appFlagNote, 78, "  "))
			if c.appFlags != nil {
				fmt.Fprintf(w, "  Every app flag of 'ota-agent update --help' is accepted; these matter here.\n")
			}
		}
		left := "  --" + r.name
		if r.arg != "" {
			left += " " + r.arg
		}
		if len(left) > 26 {
			fmt.Fprintf(w, "%s\n%s\n", left, wrap(r.usage, 78, strings.Repeat(" ", 28)))
		} else {
			fmt.Fprintf(w, "%-28s%s\n", left, strings.TrimLeft(wrap(r.usage, 78, strings.Repeat(" ", 28)), " "))
		}
	}
	if len(rows) > 0 {
		fmt.Fprintf(w, "\n%s\n", flagsNote)
	}
	fmt.Fprintf(w, "\nexit codes:\n")
	for _, code := range c.exitCodes() {
		fmt.Fprintf(w, "  %-4d%s\n", code, strings.TrimLeft(wrap(exitMeaning[code], 78, "      "), " "))
	}
}

// writeUsage writes the top-level help: the commands.
func writeUsage(w io.Writer, cmds []command) {
	fmt.Fprintf(w, "usage: ota-agent COMMAND [flags] [APP...]\n\n%s\n\ncommands:\n", about)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'ota-agent COMMAND --help' (or 'ota-agent help COMMAND') for its flags and exit codes.\n")
}

// wrap fills text to width, each line starting with indent.
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line)
	return b.String()
}

// versionFlags is `ota-agent version`.
func versionFlags(fs *flag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, args []string) error {
		if len(args) != 0 {
			return usageErrorf("version takes no arguments")
		}
		g.printf("ota-agent %s\n", Version)
		return nil
	}
}

// helpFlags is `ota-agent help [COMMAND]`, --man and --completion.
func helpFlags(fs *flag.FlagSet) runFunc {
	man := fs.Bool("man", false, "write the man page ota-agent(8) (roff) instead")
	completion := fs.String("completion", "", "write the completion script for `SHELL` (bash or zsh) instead")
	return func(ctx context.Context, g *globals, args []string) error {
		cmds := commandTable()
		switch {
		case *man:
			writeMan(g.stdout, cmds)
			return nil
		case *completion == "bash":
			writeBash(g.stdout, cmds)
			return nil
		case *completion == "zsh":
			writeZsh(g.stdout, cmds)
			return nil
		case *completion != "":
			return usageErrorf("help --completion %q: want bash or zsh", *completion)
		case len(args) == 0:
			writeUsage(g.stdout, cmds)
			return nil
		case len(args) > 1:
			return usageErrorf("help takes one command")
		}
		c := findCommand(cmds, args[0])
		if c == nil {
			return usageErrorf("unknown command %q; run 'ota-agent --help' for the list", args[0])
		}
		c.writeHelp(g.stdout)
		return nil
	}
}
