package health

import (
	"fmt"
	"time"

	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// maxMultiplier caps how many ejection times one ejection may last.
const maxMultiplier = 10

// Observe folds the result of one request to b into outlier detection
// (Envoy's consecutive-failure detector): consecutive_failures failed
// requests in a row (connect failure, reset, timeout, 5xx) eject b for
// ejection_time × the number of times in a row it was ejected, unless that
// would eject more than max_ejection_percent of the pool. It runs on the
// request path: success costs one atomic load; the ejection decision, on
// the failure path only, takes a checker-wide lock.
func (c *Checker) Observe(b *pool.Backend, f pool.Failure) {
	if f == pool.NoFailure {
		if b.ConsecutiveFailures.Load() != 0 {
			b.ConsecutiveFailures.Store(0)
		}
		return
	}
	// ≥, not ==: an ejection refused by max_ejection_percent is tried again
	// on the next failure.
	if n := b.ConsecutiveFailures.Add(1); n >= int32(c.passive.ConsecutiveFailures) {
		c.eject(b, fmt.Sprintf("%d consecutive failed requests, the last a %s", n, f), false)
	}
}

// eject takes b out unless that would put more than max_ejection_percent
// of the pool out. The ejection lasts ejection_time × the times in a row b
// was ejected; untilCheck instead leaves it out until a passing check.
func (c *Checker) eject(b *pool.Backend, reason string, untilCheck bool) {
	c.ejectMu.Lock()
	defer c.ejectMu.Unlock()
	if b.Health() != pool.Healthy {
		return
	}
	all := c.pool.Backends()
	ejected := 0
	for _, o := range all {
		if o.Health() == pool.Down {
			ejected++
		}
	}
	if (ejected+1)*100 > c.passive.MaxEjectionPercent*len(all) {
		c.logger.Debug("ejection skipped: max_ejection_percent reached", "backend", b.Address,
			"reason", reason, "ejected", ejected, "backends", len(all))
		return
	}
	m := min(b.EjectMultiplier.Add(1), maxMultiplier)
	d := c.passive.EjectionTime * time.Duration(m)
	until := time.Now().Add(d)
	if untilCheck {
		until = time.Time{}
	}
	if c.pool.SetHealth(b, pool.Down, until) {
		b.Stats.Ejections.Add(1)
		b.ConsecutiveFailures.Store(0)
		if untilCheck {
			reason += "; out until a health check passes"
		} else {
			reason += fmt.Sprintf("; out for %s (ejection %d in a row)", d, m)
		}
		c.events.Backend(events.Ejected, c.pool.Name, b, reason)
		c.Kick()
	}
}

// expire brings b back when its ejection time is over, and lowers its
// ejection multiplier by one for each ejection_time it stays in. It returns
// when the loop should look again (zero: no need).
func (c *Checker) expire(b *pool.Backend, st *state, now time.Time) time.Time {
	if b.Health() == pool.Down {
		st.calm = time.Time{}
		until := b.DownUntil()
		if until.IsZero() {
			return time.Time{} // only a passing check brings it back
		}
		if until.After(now) {
			return until
		}
		if c.pool.SetHealth(b, pool.Healthy, time.Time{}) {
			c.events.Backend(events.Returned, c.pool.Name, b, "the ejection time is over")
		}
	}
	if b.EjectMultiplier.Load() == 0 {
		return time.Time{}
	}
	if st.calm.IsZero() {
		st.calm = now
	}
	if next := st.calm.Add(c.passive.EjectionTime); !next.After(now) {
		b.EjectMultiplier.Add(-1)
		st.calm = now
		return now.Add(c.passive.EjectionTime)
	} else {
		return next
	}
}
