package main

import (
	"encoding/json"
	"errors"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/store"
)

// appResult is one app's line of `check --json` and `update --json`, the
// shape the README documents: {"apps": [appResult...]}.
type appResult struct {
	App     string `json:"app"`
	From    string `json:"from"`    // the installed version before the run; "" if none
	To      string `json:"to"`      // the version the server names; "" if it was not reached
	Outcome string `json:"outcome"` // see outcomeOf
	Error   string `json:"error"`   // "" unless the outcome is unreachable or failed
}

// OutcomeBad is a release the server names that failed its trial here.
const outcomeBad = "bad-version"

// outcomeOf is up-to-date, update-available (check), updated (update),
// bad-version, unreachable or failed, as status names the last check.
func outcomeOf(res agent.Result, err error) string {
	switch {
	case errors.Is(err, agent.ErrUnreachable), codeOf(err) == ExitTempFail:
		return store.OutcomeUnreachable
	case err != nil && !errors.Is(err, errUpdateAvailable):
		return store.OutcomeFailed
	case res.Bad != nil:
		return outcomeBad
	case res.Updated:
		return store.OutcomeUpdated
	case res.Available:
		return store.OutcomeAvailable
	}
	return store.OutcomeUpToDate
}

// results collects each app's result for --json.
type results struct {
	on   bool
	apps []appResult
}

func (r *results) add(app string, res agent.Result, err error) {
	if !r.on {
		return
	}
	out := appResult{App: app, From: res.Installed, To: res.Remote, Outcome: outcomeOf(res, err)}
	if out.Outcome == store.OutcomeFailed || out.Outcome == store.OutcomeUnreachable {
		out.Error = explain(err).Error()
	}
	r.apps = append(r.apps, out)
}

// print writes the results as one JSON object, whatever the exit code.
func (r *results) print(g *globals) {
	if !r.on {
		return
	}
	if r.apps == nil {
		r.apps = []appResult{}
	}
	b, _ := json.MarshalIndent(map[string]any{"apps": r.apps}, "", "  ")
	g.printf("%s\n", b)
}
