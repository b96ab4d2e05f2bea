package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Schedule decides when the daemon checks an app next: every Interval,
// spread by a random Jitter so a fleet never polls in step, and after
// failures with exponential backoff (also jittered) up to MaxBackoff. A
// server's Retry-After is a floor, never shortened, honoured up to
// MaxRetryAfter or the Interval, whichever is longer.
type Schedule struct {
	Interval   time.Duration
	Jitter     float64       // fraction of Interval each way, e.g. 0.1 = ±10%
	MinBackoff time.Duration // first retry after a failure
	MaxBackoff time.Duration
	Rand       func() float64 // in [0, 1); nil: math/rand/v2
}

// Defaults for Schedule fields left zero.
const (
	DefaultInterval   = 15 * time.Minute
	DefaultJitter     = 0.1
	DefaultMinBackoff = 30 * time.Second
	DefaultMaxBackoff = time.Hour
	// MaxRetryAfter is the longest Retry-After honoured (unless Interval
	// is longer): a server, or a proxy in front of it, cannot silence a
	// fleet for longer than a day by mistake.
	MaxRetryAfter = 24 * time.Hour
)

func (s Schedule) withDefaults() Schedule {
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.Jitter <= 0 || s.Jitter >= 1 {
		s.Jitter = DefaultJitter
	}
	if s.MinBackoff <= 0 {
		s.MinBackoff = DefaultMinBackoff
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = DefaultMaxBackoff
	}
	if s.MaxBackoff < s.MinBackoff {
		s.MaxBackoff = s.MinBackoff
	}
	if s.Rand == nil {
		s.Rand = rand.Float64
	}
	return s
}

// First is the delay before the first check after start: a random part of
// the jitter window, so boards that booted together do not ask together.
func (s Schedule) First() time.Duration {
	s = s.withDefaults()
	return time.Duration(s.Rand() * s.Jitter * float64(s.Interval))
}

// Next is the delay after a check that ended with failures consecutive
// failures (0: it succeeded) and the server's Retry-After (0 if none). A
// Retry-After longer than the backoff wins, up to the longer of
// MaxRetryAfter and Interval: a pause a server asks for is cut to a day,
// but never to less than the agent would wait anyway.
func (s Schedule) Next(failures int, retryAfter time.Duration) time.Duration {
	s = s.withDefaults()
	retryAfter = min(retryAfter, max(MaxRetryAfter, s.Interval))
	var d time.Duration
	if failures == 0 {
		// Interval ± Jitter.
		d = time.Duration(float64(s.Interval) * (1 + s.Jitter*(2*s.Rand()-1)))
	} else {
		b := s.MinBackoff
		for i := 1; i < failures && b < s.MaxBackoff; i++ {
			b *= 2
		}
		b = min(b, s.MaxBackoff)
		// "Equal jitter": between half and all of the backoff.
		d = b/2 + time.Duration(s.Rand()*float64(b/2))
	}
	return max(d, retryAfter)
}

// Clock is time as the daemon sees it; tests replace it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RunStatus is what the daemon reports after each check of an app.
type RunStatus struct {
	App       string
	Installed string    // the version installed after the check
	NextCheck time.Time // when the app is checked next
	Failures  int       // consecutive failed checks
	Err       error     // the last check's error, nil if it succeeded
	// NeedsReboot is set after a switch of an app with reset "hard".
	NeedsReboot bool
	// Result is the check's own (Updated, Bytes), for metrics.
	Result Result
}

// Run checks the app now and then (after sched.First, then sched.Next) and
// updates it when the server publishes another version, until ctx ends;
// then it returns nil. Failures are reported, never fatal: report is
// called after every check. clk nil is the real clock.
func (a *Agent) Run(ctx context.Context, sched Schedule, clk Clock, report func(RunStatus)) error {
	if clk == nil {
		clk = realClock{}
	}
	// A trial left open (a hard reset, an update at boot, a restart of
	// the daemon) is judged first: the app runs by now.
	if err := a.JudgeOpenTrial(ctx); err != nil && ctx.Err() == nil {
		a.log.Error().Err(err).Msg("trial")
	}
	a.beat(PhaseIdle) // a judged trial beat as a switch: idle until the first check
	failures := 0
	wait := sched.First()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-clk.After(wait):
		}
		a.beat(PhaseCheck)
		wedgePoint()
		res, err := a.Update(ctx)
		a.beat(PhaseIdle)
		if ctx.Err() != nil {
			return nil
		}
		var retry time.Duration
		var se *StatusError
		if errors.As(err, &se) {
			retry = se.RetryAfter
		}
		if err != nil {
			failures++
			a.log.Warn().Err(err).Int("failures", failures).Msg("check failed")
		} else if !res.Available && res.Bad == nil {
			failures = 0
			a.log.Debug().Str("version", res.Installed).Msg("up to date")
		} else {
			failures = 0
		}
		wait = sched.Next(failures, retry)
		st := RunStatus{App: a.app.Name, Installed: res.Installed, NextCheck: clk.Now().Add(wait), Failures: failures, Err: err,
			NeedsReboot: res.NeedsReboot, Result: res}
		if res.Updated {
			st.Installed = res.Remote
		}
		if report != nil {
			report(st)
		}
	}
}
