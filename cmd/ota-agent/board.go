package main

import (
	"sync"

	"github.com/ota-agent/ota-agent/board"
)

// userAgent is every request's User-Agent: "ota-agent/<version> (<model>;
// <os> <arch>)" (board.UserAgent), with the serial number when cfg says
// identify = "serial". cfg may be nil (the demo).
func userAgent(cfg *Config) string {
	return board.UserAgent(Version, boardIdentity(cfg != nil && cfg.Identify == "serial"))
}

// boardIdentity is the board's identity, read once per run (model and OS;
// the serial number too with identify = "serial").
func boardIdentity(withSerial bool) board.Identity {
	if withSerial {
		return boardWithSerial()
	}
	return boardModel()
}

var (
	boardModel      = sync.OnceValue(func() board.Identity { return board.Read(board.Host{}, false) })
	boardWithSerial = sync.OnceValue(func() board.Identity { return board.Read(board.Host{}, true) })
)

// printBoard is status's first line: "board: <model> (<os>, <arch>)", and
// the serial number when known.
func printBoard(g *globals, id board.Identity) {
	model := id.Model
	if model == "" {
		model = "unknown model"
	}
	g.printf("board: %s (%s, %s)", model, id.OS, id.Arch)
	if id.Serial != "" {
		g.printf(", serial %s", id.Serial)
	}
	g.printf("\n")
}
