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

// commandTable lists every command, in the order help shows them. Each
// line's text is the one help text: it feeds --help, the man page and the
// completions (cli.go). setup adds the command's flags and returns its run.
func commandTable() []command {
	return []command{
		{name: "update", args: "[APP...]", setup: updateFlags, exits: appExits,
			summary: "bring apps to the published version (check, download, switch, reset)",
			about:   "Brings each app (all by default) to the version its server publishes: check, download into staging while the app runs, stop its unit, switch, start it, judge its trial. With --force, an app already at that version is installed again from the server, repairing what `verify` reports."},
		{name: "check", args: "[APP...]", setup: checkFlags, appFlags: checkAppFlags, exits: checkExits,
			summary: "say whether an update is available (exit 100 if so); never downloads",
			about:   "Asks each app's server for its version; exits 100 when any app has an update. Never downloads, takes no lock. First checks that each app's unit exists and its bus answers (exit 2 if not)."},
		{name: "run", args: "[APP...]", setup: runFlags, exits: appExits,
			summary: "the daemon: check every app at intervals and update it (systemd Type=notify)",
			about:   "The daemon: checks every app at intervals and updates it. At start it checks that each app's unit exists and its bus answers, logs what is wrong and keeps checking. SIGHUP rereads the configuration."},
		{name: "recover", args: "[APP...]", setup: recoverFlags, appFlags: localAppFlags,
			summary: "finish or undo a switch a crash interrupted (no network; run early at boot)",
			about:   "Finishes or undoes a switch that a crash or power cut interrupted. Needs no network; run early at boot."},
		{name: "status", args: "[APP...]", setup: statusFlags, appFlags: localAppFlags,
			summary: "show what is installed, the last check and the releases kept (--json)",
			about:   "Shows each app's installed version, its last check since boot, the releases kept, and an interrupted switch."},
		{name: "doctor", args: "[APP...]", setup: doctorFlags, exits: []int{ExitOK, ExitFailed, ExitUsage},
			summary: "a checklist when something is off: each line ok, or the problem and the fix",
			about:   "Checks the config, the clock, that the packaged units are enabled, and for each app: its server (reachable, TLS, credentials, a safe version tag), its dirs (writable, on one mount or not, free space), its unit and D-Bus, its watchdog device (hard_reset = \"watchdog\"). Exit 0 if every check passes, 1 otherwise. Writes nothing."},
		{name: "verify", args: "[APP...]", setup: verifyFlags, appFlags: localAppFlags,
			summary: "compare each app dir with what was installed; exit 1 and the files that differ",
			about:   "Compares each app's files with the inventory of state.json (path, size, SHA-256, mode) and lists the files that differ: missing, edited, resized, another mode. Exit 1 if any does; `ota-agent update --force APP` installs the version again through the normal switch. Reads only."},
		{name: "commit", args: "[APP...]", setup: commitFlags, appFlags: localAppFlags,
			summary: "end the trial of each app's new release as healthy, by hand",
			about:   "Ends the trial of each app's new release as healthy."},
		{name: "rollback", args: "[APP...]", setup: rollbackFlags, appFlags: localAppFlags,
			summary: "switch an app back to a kept release (--to VERSION; default the previous one)",
			about:   "Switches each app back to a kept release, stopping and starting its unit; the release it leaves is marked bad until `ota-agent retry`."},
		{name: "retry", args: "[APP...]", setup: retryFlags, appFlags: localAppFlags,
			summary: "clear an app's bad versions, so they are installed again",
			about:   "Clears each app's bad versions: the next update installs them again if the server names them."},
		{name: "serve", args: "DIR", setup: serveFlags,
			summary: "serve a release directory over HTTP(S)",
			about:   serveAbout},
		{name: "publish", args: "SRC_DIR", setup: publishFlags,
			summary: "write a build directory as a release: files, manifest, signature, version last",
			about:   publishAbout},
		{name: "keygen", setup: keygenFlags,
			summary: "make a minisign key pair for publish --sign-key and public_keys",
			about:   keygenAbout},
		{name: "demo", setup: demoFlags,
			summary: "show the whole idea on this machine: no root, server or config needed",
			about:   "Starts a web server on loopback with a sample project, updates a temporary app directory through a first install, an up-to-date run, a rollback by editing version and a broken release, then removes it all."},
		{name: "version", setup: versionFlags,
			summary: "print the agent's version (also: ota-agent --version)",
			about:   "Prints the agent's version."},
		{name: "help", args: "[COMMAND]", setup: helpFlags,
			summary: "show a command's help; --man prints the man page, --completion bash|zsh a completion script",
			about:   "Shows the commands, or COMMAND's flags and exit codes. --man writes the man page ota-agent(8) and --completion bash or zsh a completion script, all from this same help text."},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a command and maps its error to an exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	err := g.dispatch(ctx, args)
	if err != nil && ctx.Err() != nil && len(args) > 0 && args[0] != "run" && args[0] != "serve" {
		// The daemon and the server stop on a signal; this was cut short.
		fmt.Fprintln(stderr, interruptedMsg)
		if errors.Is(err, context.Canceled) {
			return codeOf(err)
		}
	}
	return g.exitCode(err)
}

const interruptedMsg = "ota-agent: interrupted by a signal: no switch is ever left half-done (an app is on one release or the other), and the next run continues the download"

var errHelp = errors.New("help shown")
