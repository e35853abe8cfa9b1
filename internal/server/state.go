package server

import (
	"fmt"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/state"
)

// How admin.state_file applies on top of the config, at start-up and at
// every reload: buildSnapshot leaves out the config's backends that the
// API removed and adds those the API added (addedBackends); activate, once
// the new snapshot serves, gives each backend the entry's weight (else the
// config's) and state (else enabled: every state change made through the
// API is in the file) (applyState), publishes what joined and left
// (membershipEvents), and reports the entries that name nothing
// (reportStale). Without a state file, backends keep their operator state
// across reloads by identity and the API's additions and removals last
// until the next reload.

// addedBackends returns the backends of pool pc that the state file adds
// and the config does not have; those old (the pool's previous runtime)
// already holds are carried over.
func (s *Server) addedBackends(pc config.Pool, old *poolRT, reload bool) []*pool.Backend {
	var out []*pool.Backend
	for _, e := range s.state.Entries() {
		if e.Pool != pc.Name || !e.Added || pc.Backend(e.Address) != nil {
			continue
		}
		var b *pool.Backend
		if old != nil {
			b = old.pool.Find(e.Address)
		}
		if b == nil {
			u, err := config.ParseBackendAddress(e.Address)
			if err != nil {
				continue // reported by reportStale
			}
			b = pool.NewBackend(e.Address, u, max(1, e.Weight))
			b.Source = pool.SourceRuntime
			if reload {
				b.Joined()
			}
		}
		out = append(out, b)
	}
	return out
}

// applyState gives the backends of p their weight (the state file's, else
// the config's) and, with a state file, their operator state.
func (s *Server) applyState(p *poolRT) {
	for _, b := range p.pool.Backends() {
		w := 0
		if bc := p.cfg.Backend(b.Address); bc != nil {
			w = bc.Weight
		}
		e, ok := s.state.Get(p.cfg.Name, b.Address)
		if ok && e.Weight > 0 {
			w = e.Weight
		}
		if w > 0 {
			p.pool.SetWeight(b, w)
		}
		if s.state == nil || s.removing[b] {
			continue
		}
		if st := adminState(e.State); p.pool.SetAdmin(b, st) {
			reason := "admin.state_file no longer holds a state for it"
			if e.State != "" {
				reason = fmt.Sprintf("admin.state_file: %s through the admin API at %s", e.State, e.Updated.Format(time.RFC3339))
			}
			s.events.Backend(adminKind(st), p.cfg.Name, b, reason)
		}
	}
}

// membershipEvents publishes the backends that joined and left with snap
// (at start-up, only those the state file adds; the config's get their
// first reason).
func (s *Server) membershipEvents(snap, prev *snapshot) {
	now := time.Now()
	for _, p := range snap.pools {
		var old *poolRT
		if prev != nil {
			old = prev.byName[p.cfg.Name]
		}
		for _, b := range p.pool.Backends() {
			switch {
			case old != nil && old.pool.Find(b.Address) == b:
				// kept
			case b.Source == pool.SourceRuntime:
				e, _ := s.state.Get(p.cfg.Name, b.Address)
				s.events.Backend(events.Added, p.cfg.Name, b, fmt.Sprintf("admin.state_file: added through the admin API at %s, weight %d",
					e.Updated.Format(time.RFC3339), b.Weight()))
			case prev == nil:
				b.SetReason("in the config at start-up", now)
			default:
				s.events.Backend(events.Added, p.cfg.Name, b, "config reload: new in the config")
			}
		}
	}
	if prev == nil {
		return
	}
	for _, old := range prev.pools {
		p := snap.byName[old.cfg.Name]
		for _, b := range old.pool.Backends() {
			if s.removing[b] || (p != nil && p.pool.Find(b.Address) == b) {
				continue // the API's removal reports it; or kept
			}
			reason := "config reload: no longer in the config"
			switch {
			case p == nil:
				reason = fmt.Sprintf("config reload: pool %q is no longer in the config", old.cfg.Name)
			case b.Source == pool.SourceRuntime && s.state == nil:
				reason = "config reload: added through the admin API, which lasts until a reload without admin.state_file"
			case b.Source == pool.SourceRuntime:
				reason = "config reload: admin.state_file no longer adds it"
			case old.cfg.Backend(b.Address) != nil && p.cfg.Backend(b.Address) != nil:
				reason = "config reload: admin.state_file removes it"
			}
			s.events.Backend(events.Removed, old.cfg.Name, b, reason)
		}
	}
}

// reportStale records the state file's entries that name no pool or
// backend of snap (GET /api/v1/state) and publishes those that were not
// stale before. They stay in the file: the pool or backend may come back.
func (s *Server) reportStale(snap *snapshot) {
	was := map[[2]string]string{}
	if prev := s.stale.Load(); prev != nil {
		for _, st := range *prev {
			was[[2]string{st.Pool, st.Address}] = st.Problem
		}
	}
	stale := []state.Stale{}
	for _, e := range s.state.Entries() {
		problem := s.staleProblem(snap, e)
		if problem == "" {
			continue
		}
		stale = append(stale, state.Stale{Entry: e, Problem: problem})
		if was[[2]string{e.Pool, e.Address}] != problem {
			s.events.Publish(events.StateStale, e.Pool, e.Address, problem)
		}
	}
	s.stale.Store(&stale)
}

// staleProblem says what entry e of the state file names that snap does
// not have, and what to do; "" when e applies.
func (s *Server) staleProblem(snap *snapshot, e state.Entry) string {
	keep := fmt.Sprintf("; the entry is kept and applies again if that comes back (to drop it, delete it from %s, then reload)", s.state.Path())
	p := snap.byName[e.Pool]
	switch {
	case p == nil:
		return fmt.Sprintf("pool %q is not in the config", e.Pool) + keep
	case e.Added:
		if _, err := config.ParseBackendAddress(e.Address); err != nil {
			return fmt.Sprintf("the backend cannot be added: %v; delete the entry from %s, then reload", err, s.state.Path())
		}
	case e.Removed && p.cfg.Backend(e.Address) == nil:
		return fmt.Sprintf("backend %q was removed through the admin API and is no longer in pool %q of the config either", e.Address, e.Pool) + keep
	case !e.Removed && p.pool.Find(e.Address) == nil && p.cfg.Discovery == nil:
		// (With discovery, the backend may be found later: the entry
		// applies then.)
		return fmt.Sprintf("backend %q is not in pool %q of the config", e.Address, e.Pool) + keep
	}
	return ""
}
