package main

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/metrics"
)

// metricsFile is the metrics_textfile in use ("" none): the daemon sets it
// at start and at every reload, while its apps' checks record into it.
type metricsFile struct{ path atomic.Pointer[string] }

func (m *metricsFile) set(path string) { m.path.Store(&path) }

// record adds one check of an app to the textfile, if one is configured.
// installed is the version after the check. A failure to write is logged:
// the update itself went as it went.
func (m *metricsFile) record(log zerolog.Logger, app, installed string, res agent.Result, err error) {
	p := m.path.Load()
	if p == nil || *p == "" {
		return
	}
	ev := metrics.Event{App: app, Version: installed, At: time.Now(), Failed: err != nil,
		Updated: err == nil && res.Updated, RolledBack: errors.Is(err, agent.ErrRolledBack), Bytes: res.Bytes}
	if werr := metrics.Record(*p, ev); werr != nil {
		log.Warn().Err(werr).Str("app", app).Msg("metrics_textfile not written")
	}
}

// recordResult is record for a one-shot command's result (update, check).
func (m *metricsFile) recordResult(log zerolog.Logger, app string, res agent.Result, err error) {
	installed := res.Installed
	if err == nil && res.Updated {
		installed = res.Remote
	}
	m.record(log, app, installed, res, err)
}
