// Package backoff computes how long a failing destination waits before its
// next attempt, with Synapse's defaults: 10 minutes after the first failure,
// then the previous interval times 2 times a uniform jitter in [0.8, 1.4),
// capped at 7 days.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is a backoff schedule.
type Policy struct {
	Min        time.Duration // interval after the first failure
	Max        time.Duration // cap
	Multiplier float64       // growth per failure, before jitter
	// CatchUpAfter: a destination whose interval exceeds it drops its
	// in-memory queue and catches up when it returns.
	CatchUpAfter time.Duration
	// Jitter returns a factor in [0.8, 1.4); nil uses math/rand.
	Jitter func() float64
}

// Default is Synapse's schedule.
func Default() Policy {
	return Policy{Min: 10 * time.Minute, Max: 7 * 24 * time.Hour, Multiplier: 2, CatchUpAfter: time.Hour}
}

// Next returns the interval after a failure, given the current one (0 when
// the destination was healthy). An interval below Min (a server's own
// Retry-After, say) restarts the schedule at Min.
func (p Policy) Next(current time.Duration) time.Duration {
	if current < p.Min {
		return p.Min
	}
	jitter := p.Jitter
	if jitter == nil {
		jitter = func() float64 { return 0.8 + 0.6*rand.Float64() }
	}
	next := time.Duration(float64(current) * p.Multiplier * jitter())
	if next > p.Max || next <= 0 {
		return p.Max
	}
	if next < p.Min {
		return p.Min
	}
	return next
}

// CatchUp reports whether a destination backing off for interval should drop
// its queue and catch up.
func (p Policy) CatchUp(interval time.Duration) bool {
	return interval > p.CatchUpAfter
}
