// Package health decides whether backends are fit for traffic: active
// checks (HTTP, TCP or gRPC probes with rise/fall thresholds) and passive
// mark-down of backends that refused a connection.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// rampStep is how often pickers are rebuilt while a backend is in slow start.
const rampStep = 250 * time.Millisecond

// Prober runs one check against a backend; nil error means it passed.
type Prober func(ctx context.Context, b *pool.Backend) error

// Checker runs one supervised loop for a pool: it schedules active checks,
// applies their results with rise/fall thresholds, and brings passively
// marked-down backends back when their time is up. Create it with New and
// run it with Run.
type Checker struct {
	pool   *pool.Pool
	hc     *config.HealthCheck // nil: no active checks
	probe  Prober
	agent  AgentProber // nil: no agent
	logger *slog.Logger
	events *events.Log
	rand   func() uint64

	passive config.PassiveHealth

	// ejectMu serialises ejection decisions, so that concurrent failures
	// cannot together exceed max_ejection_percent.
	ejectMu sync.Mutex

	kick    chan struct{}
	results chan result

	// states is the loop's per-backend history; only Run touches it while
	// it runs. Inherit fills it before, and it stays readable after.
	states map[*pool.Backend]*state
}

type result struct {
	b   *pool.Backend
	err error
	// The agent's answer, or why it could not be had; asked is false
	// when the pool has no agent.
	asked     bool
	agentLine string
	agentErr  error
	// agentOnly: the backend is disabled by its agent, which alone was
	// asked (a disabled backend is not checked).
	agentOnly bool
}

// state is the loop's private view of one backend's check history.
type state struct {
	next     time.Time
	calm     time.Time // since when the backend has not been ejected
	running  bool
	checked  bool // at least one check finished
	passes   int  // consecutive
	failures int  // consecutive
	agent    agentState
}

// Options tune a Checker; the zero value is fine.
type Options struct {
	// Prober replaces the HTTP/TCP/gRPC prober (tests).
	Prober Prober
	// Rand returns random uint64s for jitter; nil means math/rand/v2.
	Rand func() uint64
	// Passive configures outlier ejection; zero fields take the defaults
	// (5 consecutive failures, 30s, 50%).
	Passive config.PassiveHealth
	// Transport settings for HTTP probes of https:// backends.
	UpstreamTLS config.UpstreamTLS
	// UpstreamHTTP2: the pool speaks HTTP/2 to its backends, and so do its
	// HTTP checks (TLS with ALPN h2 for https://, h2c for http://). gRPC
	// checks are HTTP/2 in any case.
	UpstreamHTTP2 bool
	// AgentPort, when not 0, is the port of each backend's agent
	// (load_report.agent_port), asked with every active check.
	AgentPort int
	// Agent replaces the agent prober (tests); it needs AgentPort.
	Agent AgentProber
	// Events receives every decision (backend up or down, ejected,
	// returned, and what agents ask) with its reason, and writes it to the
	// log; nil drops them.
	Events *events.Log
	// ProxyHeader, 1 or 2, makes every check connection begin with a PROXY
	// protocol header of that version that names no client (v1 UNKNOWN, v2
	// LOCAL), as the pool's traffic does (send_proxy_protocol), so that a
	// backend requiring the header passes its checks; 0 sends none.
	ProxyHeader int
}

// New returns a checker for p. hc nil means no active checks.
func New(p *pool.Pool, hc *config.HealthCheck, logger *slog.Logger, o Options) *Checker {
	c := &Checker{
		pool:    p,
		hc:      hc,
		probe:   o.Prober,
		logger:  logger.With("pool", p.Name),
		events:  o.Events,
		rand:    o.Rand,
		passive: o.Passive,
		kick:    make(chan struct{}, 1),
		results: make(chan result),
	}
	if c.rand == nil {
		c.rand = rand.Uint64
	}
	if c.passive.ConsecutiveFailures <= 0 {
		c.passive.ConsecutiveFailures = 5
	}
	if c.passive.EjectionTime <= 0 {
		c.passive.EjectionTime = 30 * time.Second
	}
	if c.passive.MaxEjectionPercent <= 0 {
		c.passive.MaxEjectionPercent = 50
	}
	if c.probe == nil && hc != nil {
		c.probe = newProber(hc, o)
	}
	if o.AgentPort > 0 && hc != nil {
		c.agent = o.Agent
		if c.agent == nil {
			c.agent = dialAgent(o.AgentPort)
		}
	}
	return c
}

// Inherit takes over the check history of old, the checker of the same
// pool before a reload, so that rise/fall counts and the check schedule go
// on rather than restart (a fresh checker's first result decides at once).
// old must have stopped, and c not started. A checker whose health_check
// changed should not inherit: it takes over only what agents set (see
// InheritAgents).
func (c *Checker) Inherit(old *Checker) {
	c.states = make(map[*pool.Backend]*state, len(old.states))
	for b, st := range old.states {
		cp := *st
		cp.running = false
		c.states[b] = &cp
	}
	c.settleAgents()
}

// Interval returns the active check interval (0 without active checks).
func (c *Checker) Interval() time.Duration {
	if c.hc == nil {
		return 0
	}
	return c.hc.Interval
}

// ConnectFailed takes b out of rotation at once after a request could not
// be sent to it: it returns at its next passing check (or after the
// ejection time when the pool has no active checks). Like any passive
// ejection it never takes out more than max_ejection_percent of the pool, so
// a lone backend that restarts is tried again rather than shut off. It is
// called from the request path only on failure, and logs once per
// transition.
func (c *Checker) ConnectFailed(b *pool.Backend, err error) {
	c.eject(b, fmt.Sprintf("a request could not be sent: %v", err), c.hc != nil)
}

// Kick wakes the loop to look at membership or state changes now.
func (c *Checker) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run runs the loop until ctx is done and every check it started has
// returned.
func (c *Checker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if c.states == nil {
		c.states = map[*pool.Backend]*state{}
	}
	states := c.states
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		wake := now.Add(time.Hour)
		seen := make(map[*pool.Backend]bool, len(states))
		for _, b := range c.pool.Backends() {
			seen[b] = true
			st := states[b]
			if st == nil {
				st = &state{next: now} // first check at once
				states[b] = st
			}
			// A disabled backend is not checked, unless its agent disabled
			// it: then the agent is asked, so that it can bring it back.
			agentOnly := b.AdminState() == pool.Disabled && c.agent != nil && st.agent.admin == pool.Disabled
			if b.AdminState() == pool.Disabled && !agentOnly {
				continue
			}
			if c.hc != nil {
				if !st.running && !st.next.After(now) {
					st.running = true
					st.next = now.Add(c.jittered())
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := result{b: b, agentOnly: agentOnly}
						if !agentOnly {
							cctx, cancel := context.WithTimeout(ctx, c.hc.Timeout)
							r.err = timedOut(cctx, c.hc.Timeout, c.probe(cctx, b))
							cancel()
						}
						if c.agent != nil {
							actx, cancel := context.WithTimeout(ctx, c.hc.Timeout)
							r.asked = true
							r.agentLine, r.agentErr = c.agent(actx, b)
							cancel()
						}
						select {
						case c.results <- r:
						case <-ctx.Done():
						}
					}()
				}
				if !st.running && st.next.Before(wake) {
					wake = st.next
				}
			}
			if w := c.expire(b, st, now); !w.IsZero() && w.Before(wake) {
				wake = w
			}
		}
		for b := range states {
			if !seen[b] {
				delete(states, b)
			}
		}
		if c.pool.Ramping() {
			// Slow start: effective weights move with time, so the picker
			// is rebuilt every rampStep until every backend is at full weight.
			c.pool.Refresh()
			if next := now.Add(rampStep); next.Before(wake) {
				wake = next
			}
		}
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-timer.C:
		case r := <-c.results:
			if st := states[r.b]; st != nil {
				st.running = false
				if !r.agentOnly {
					c.apply(r.b, st, r.err)
				}
				if r.asked {
					c.applyAgent(r.b, st, r.agentLine, r.agentErr)
				}
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// jittered returns the interval ±10%, so checks of many backends and many
// sluice instances do not align.
func (c *Checker) jittered() time.Duration {
	iv := c.hc.Interval
	span := uint64(iv / 5)
	if span == 0 {
		return iv
	}
	return iv - iv/10 + time.Duration(c.rand()%span)
}

// apply folds one check result into b's state: the first result decides at
// once; after that healthy_threshold consecutive passes make a backend
// healthy and unhealthy_threshold consecutive failures make it unhealthy. A
// passively downed backend returns on its first passing check.
func (c *Checker) apply(b *pool.Backend, st *state, err error) {
	first := !st.checked
	st.checked = true
	if err == nil {
		b.Stats.ChecksPassed.Add(1)
		st.passes++
		st.failures = 0
	} else {
		b.Stats.ChecksFailed.Add(1)
		st.failures++
		st.passes = 0
	}
	h := b.Health()
	switch {
	case err == nil && first && h == pool.Healthy:
		// Nothing changes (a backend starts healthy), but its state now
		// has a reason.
		c.events.Backend(events.BackendUp, c.pool.Name, b, "the first health check passed")
	case err == nil && h != pool.Healthy && !st.agent.down && (first || h == pool.Down || st.passes >= c.hc.HealthyThreshold):
		if c.pool.SetHealth(b, pool.Healthy, time.Time{}) {
			switch {
			case h == pool.Down:
				c.events.Backend(events.Returned, c.pool.Name, b, "a health check passed after the ejection")
			case first:
				c.events.Backend(events.BackendUp, c.pool.Name, b, "the first health check passed")
			default:
				c.events.Backend(events.BackendUp, c.pool.Name, b, fmt.Sprintf("%d consecutive health checks passed (healthy_threshold %d)",
					st.passes, c.hc.HealthyThreshold))
			}
		}
	case err != nil && h != pool.Unhealthy && (first || h == pool.Down || st.failures >= c.hc.UnhealthyThreshold):
		if c.pool.SetHealth(b, pool.Unhealthy, time.Time{}) {
			var reason string
			switch {
			case first:
				reason = fmt.Sprintf("the first health check failed: %v", err)
			case h == pool.Down:
				reason = fmt.Sprintf("a health check failed while ejected: %v", err)
			default:
				reason = fmt.Sprintf("%d consecutive health checks failed (unhealthy_threshold %d), the last: %v",
					st.failures, c.hc.UnhealthyThreshold, err)
			}
			c.events.Backend(events.BackendDown, c.pool.Name, b, reason)
		}
	}
}

// timeoutError is a check that did not finish within the check's timeout.
type timeoutError struct {
	timeout time.Duration
	err     error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("timed out after %s: %v", e.timeout, e.err)
}

func (e *timeoutError) Unwrap() error { return e.err }

// timedOut says "timed out after TIMEOUT" for an error that the check's
// timeout (ctx's deadline) caused; it returns any other error as it is.
func timedOut(ctx context.Context, timeout time.Duration, err error) error {
	var te *timeoutError
	if err == nil || errors.As(err, &te) {
		return err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, context.DeadlineExceeded) {
		return &timeoutError{timeout: timeout, err: err}
	}
	return err
}
