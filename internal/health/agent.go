package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/loadreport"
	"github.com/sluice-lb/sluice/internal/pool"
)

// AgentProber asks one backend's agent for its answer line.
type AgentProber func(ctx context.Context, b *pool.Backend) (string, error)

// agentState is what the loop remembers of a backend's agent.
type agentState struct {
	// admin is the operational state the agent last set (Enabled: none).
	// The agent undoes only its own: an operator's drain or disable, which
	// differs from it, stays.
	admin pool.Admin
	// down: the agent said down; checks alone do not bring the backend up.
	down bool
	// failing: the agent could not be asked (told once).
	failing bool
}

// dialAgent returns the prober of HAProxy's agent-check protocol on port:
// connect to the backend's host on that port, read what the agent sends
// up to a line end, the connection's end or loadreport.MaxAgentLine bytes.
func dialAgent(port int) AgentProber {
	return func(ctx context.Context, b *pool.Backend) (string, error) {
		addr := net.JoinHostPort(b.URL.Hostname(), strconv.Itoa(port))
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			conn.SetDeadline(dl)
		}
		buf := make([]byte, loadreport.MaxAgentLine)
		n := 0
		for n < len(buf) && bytes.IndexByte(buf[:n], '\n') < 0 {
			m, err := conn.Read(buf[n:])
			n += m
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return "", fmt.Errorf("agent %s: %w", addr, err)
			}
		}
		if len(bytes.TrimSpace(buf[:n])) == 0 {
			return "", fmt.Errorf("agent %s: empty answer", addr)
		}
		return string(buf[:n]), nil
	}
}

// applyAgent folds one agent answer (or the error of asking) into b's
// state, as HAProxy's agent-check does and as the admin API would: a
// weight percentage scales the configured weight; drain (or 0%) drains,
// maint disables, ready (or a weight above 0%) undoes what the agent did
// before; down takes the backend out until the agent says up. Each change
// is published once. An agent that cannot be reached changes nothing.
func (c *Checker) applyAgent(b *pool.Backend, st *state, line string, err error) {
	ag := &st.agent
	if err != nil {
		if !ag.failing {
			ag.failing = true
			c.logger.Warn("agent unreachable; the backend keeps its state", "backend", b.Address, "error", err)
		}
		return
	}
	if ag.failing {
		ag.failing = false
		c.logger.Info("agent answers again", "backend", b.Address)
	}
	a := loadreport.ParseAgent(line)
	if a.Util >= 0 {
		b.ReportLoad(a.Util, time.Now())
	}
	why := "agent: " + agentWords(line)
	if a.Weight > 0 && c.pool.SetAgentWeight(b, a.Weight) {
		c.events.Backend(events.WeightChanged, c.pool.Name, b,
			fmt.Sprintf("%s: %d%% of weight %d", why, a.Weight, b.Weight()))
	}
	want, said := ag.admin, true
	switch {
	case a.Admin == loadreport.AdminMaint:
		want = pool.Disabled
	case a.Admin == loadreport.AdminDrain || a.Weight == 0:
		want = pool.Draining
	case a.Admin == loadreport.AdminReady || a.Weight > 0:
		want = pool.Enabled
	default:
		said = false
	}
	if cur := b.AdminState(); said && want != cur && (cur == pool.Enabled || cur == ag.admin) {
		if c.pool.SetAdmin(b, want) {
			kind := map[pool.Admin]events.Kind{pool.Enabled: events.Enabled, pool.Draining: events.Drained, pool.Disabled: events.Disabled}[want]
			c.events.Backend(kind, c.pool.Name, b, why)
		}
	}
	if said {
		ag.admin = want
	}
	switch a.Health {
	case loadreport.HealthDown:
		ag.down = true
		if b.Health() != pool.Unhealthy && c.pool.SetHealth(b, pool.Unhealthy, time.Time{}) {
			c.events.Backend(events.BackendDown, c.pool.Name, b, why)
		}
	case loadreport.HealthUp:
		if ag.down {
			ag.down = false
			// Back at once when its checks pass; else the checks decide.
			if st.checked && st.failures == 0 && b.Health() != pool.Healthy &&
				c.pool.SetHealth(b, pool.Healthy, time.Time{}) {
				c.events.Backend(events.BackendUp, c.pool.Name, b, why)
			}
		}
	}
}

// InheritAgents takes over, from old, the checker of the same pool before a
// reload that changed its health_check, what the backends' agents set, so
// that a drain or weight an agent asked for stays its own to undo. old must
// have stopped, and c not started.
func (c *Checker) InheritAgents(old *Checker) {
	c.states = make(map[*pool.Backend]*state, len(old.states))
	for b, st := range old.states {
		c.states[b] = &state{next: time.Now(), agent: st.agent}
	}
	c.settleAgents()
}

// settleAgents undoes what agents set when the pool has no agent any more:
// their drains, disables, downs and weights; an operator's state stays.
func (c *Checker) settleAgents() {
	if c.agent != nil {
		return
	}
	for b, st := range c.states {
		ag := st.agent
		st.agent = agentState{}
		if ag.admin != pool.Enabled && b.AdminState() == ag.admin && c.pool.SetAdmin(b, pool.Enabled) {
			c.events.Backend(events.Enabled, c.pool.Name, b, "the pool has no agent any more: what its agent set is undone")
		}
		if c.pool.SetAgentWeight(b, 100) {
			c.events.Backend(events.WeightChanged, c.pool.Name, b, "the pool has no agent any more: 100% of its weight")
		}
		// A backend its agent took down is left to its checks (which run
		// at once for a checker that did not inherit them).
	}
}

// agentWords is an agent's answer as a reason: its first line, trimmed,
// at most 200 bytes.
func agentWords(line string) string {
	line, _, _ = strings.Cut(line, "\n")
	line = strings.TrimSpace(line)
	if len(line) > 200 {
		line = line[:200]
	}
	return strconv.Quote(line)
}
