// Command ota-agent keeps the applications on a Linux board up to date from
// a plain HTTP(S) server laid out as micropython-ota expects.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// A command runs one subcommand. args exclude the subcommand's name.
type command struct {
	run   func(ctx context.Context, g *globals, args []string) error
	usage string
}

var commands = map[string]command{
	"version": {cmdVersion, "print the agent's version"},
	"serve":   {cmdServe, "serve a release directory over HTTP(S)"},
}

const usageHead = `usage: ota-agent COMMAND [flags] [APP...]

ota-agent brings applications to the version a plain web server publishes.

commands:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and maps its error to an exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ota-agent: unknown command %q\n", args[0])
		printUsage(stderr)
		return ExitUsage
	}
	err := c.run(ctx, g, args[1:])
	return g.exitCode(err)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, name := range sortedCommands() {
		fmt.Fprintf(w, "  %-9s %s\n", name, commands[name].usage)
	}
	fmt.Fprint(w, "\nrun 'ota-agent COMMAND -h' for a command's flags.\n")
}

func cmdVersion(ctx context.Context, g *globals, args []string) error {
	fmt.Fprintf(g.stdout, "ota-agent %s\n", Version)
	return nil
}

var errHelp = errors.New("help shown")
