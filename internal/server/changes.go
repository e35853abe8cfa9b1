package server

import (
	"fmt"
	"time"

	"github.com/sluice-lb/sluice/internal/admin"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/state"
)

// The admin API's changes. Each one is checked, then written to
// admin.state_file (when there is one: a write that fails leaves
// everything as it was), then applied and published as an event. s.mu
// serialises them with each other and with reloads.

var errNotFound = admin.ErrNotFound

func (s *Server) findPool(name string) (*poolRT, error) {
	snap := s.snap.Load()
	if p := snap.byName[name]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("pool %q: %w", name, errNotFound)
}

func (s *Server) findBackend(poolName, address string) (*poolRT, *pool.Backend, error) {
	p, err := s.findPool(poolName)
	if err != nil {
		return nil, nil, err
	}
	b := p.pool.Find(address)
	if b == nil {
		return nil, nil, fmt.Errorf("backend %q in pool %q: %w", address, poolName, errNotFound)
	}
	return p, b, nil
}

// byAPI is the reason of a change made through the admin API: who, and
// how long it lasts.
func (s *Server) byAPI() string {
	if s.state != nil {
		return "admin API (kept in admin.state_file)"
	}
	return "admin API (until the next reload)"
}

// persist writes the entry of a backend, changed by edit, to the state
// file. The error wraps state.ErrNotPersisted.
func (s *Server) persist(poolName, address string, edit func(e *state.Entry)) error {
	if s.state == nil {
		return nil
	}
	e, _ := s.state.Get(poolName, address)
	e.Pool, e.Address, e.Updated = poolName, address, time.Now().UTC().Truncate(time.Second)
	edit(&e)
	return s.state.Put(e)
}

// AddBackend adds a backend to a pool now (admin API). With a state file
// it is kept there and comes back at every reload and start; without, it
// lasts until the next reload, which makes the config file the truth again.
func (s *Server) AddBackend(poolName, address string, weight int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.findPool(poolName)
	if err != nil {
		return err
	}
	if weight == 0 {
		weight = 1
	}
	u, err := config.ParseBackendAddress(address)
	if err != nil {
		return err
	}
	if weight < 1 || weight > 1000 {
		return fmt.Errorf("weight %d out of range: use 1 to 1000", weight)
	}
	if p.pool.Find(address) != nil {
		return alreadyInPool(poolName, address)
	}
	if err := s.persist(poolName, address, func(e *state.Entry) {
		*e = state.Entry{Pool: e.Pool, Address: e.Address, Updated: e.Updated, Added: true, Weight: weight}
	}); err != nil {
		return err
	}
	b := pool.NewBackend(address, u, weight)
	b.Source = pool.SourceRuntime
	if p.cfg.Backend(address) != nil {
		b.Source = pool.SourceConfig // back after a removal through the API
	}
	if !p.pool.Add(b) {
		return alreadyInPool(poolName, address)
	}
	s.events.Backend(events.Added, poolName, b, fmt.Sprintf("%s, weight %d", s.byAPI(), weight))
	p.checker.Kick()
	return nil
}

// alreadyInPool is AddBackend's conflict: the answer says what to call
// instead.
func alreadyInPool(poolName, address string) error {
	return fmt.Errorf("backend %q is already in pool %q: change its weight (POST .../weight) or state (drain, enable, disable) instead, or remove it (DELETE) and add it once it has gone: %w",
		address, poolName, admin.ErrConflict)
}

// RemoveBackend drains a backend, then removes it once its requests in
// flight have finished (or after shutdown_timeout). With a state file, a
// backend of the config stays removed across reloads and restarts.
func (s *Server) RemoveBackend(poolName, address string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, b, err := s.findBackend(poolName, address)
	if err != nil {
		return err
	}
	if s.removing[b] {
		return nil // already on its way out
	}
	if b.Source == pool.SourceDNS || b.Source == pool.SourceEtcd {
		return fmt.Errorf("backend %q of pool %q was found by %s, which would add it again: remove it there (delete its key or record), or drain or disable it here: %w",
			address, poolName, b.Source, admin.ErrConflict)
	}
	inConfig := p.cfg.Backend(address) != nil
	if err := s.persist(poolName, address, func(e *state.Entry) {
		// A backend the config has stays out; one the API added is simply
		// forgotten.
		*e = state.Entry{Pool: e.Pool, Address: e.Address, Updated: e.Updated, Removed: inConfig}
	}); err != nil {
		return err
	}
	p.pool.SetAdmin(b, pool.Draining)
	s.removing[b] = true
	s.events.Backend(events.Drained, poolName, b, s.byAPI()+": removed once its requests in flight finish")
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for b.InFlight.Load() > 0 && time.Now().Before(deadline) {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.removing, b)
		// A reload may have built a new pool of that name since: take b
		// out of whichever pool holds it now.
		removed := p.pool.Remove(b)
		cur := p
		if np, err := s.findPool(poolName); err == nil && np != p && np.pool.Remove(b) {
			removed, cur = true, np
		}
		if removed {
			cur.checker.Kick()
			s.events.Backend(events.Removed, poolName, b, s.byAPI())
		}
	}()
	return nil
}

// SetBackendState drains, disables or enables a backend.
func (s *Server) SetBackendState(poolName, address string, st pool.Admin) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, b, err := s.findBackend(poolName, address)
	if err != nil {
		return err
	}
	if err := s.notRemoving(poolName, b); err != nil {
		return err
	}
	if err := s.persist(poolName, address, func(e *state.Entry) { e.State = stateWord(st) }); err != nil {
		return err
	}
	if p.pool.SetAdmin(b, st) {
		s.events.Backend(adminKind(st), poolName, b, s.byAPI())
		p.checker.Kick()
	}
	return nil
}

// SetBackendWeight changes a backend's weight (1 to 1000).
func (s *Server) SetBackendWeight(poolName, address string, weight int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, b, err := s.findBackend(poolName, address)
	if err != nil {
		return err
	}
	if weight < 1 || weight > 1000 {
		return fmt.Errorf("weight %d out of range: use 1 to 1000", weight)
	}
	if err := s.notRemoving(poolName, b); err != nil {
		return err
	}
	if err := s.persist(poolName, address, func(e *state.Entry) { e.Weight = weight }); err != nil {
		return err
	}
	if old := b.Weight(); old != weight {
		p.pool.SetWeight(b, weight)
		s.events.Backend(events.WeightChanged, poolName, b, fmt.Sprintf("%s: weight %d → %d", s.byAPI(), old, weight))
	}
	return nil
}

// notRemoving refuses a change to a backend that the API is removing.
func (s *Server) notRemoving(poolName string, b *pool.Backend) error {
	if s.removing[b] {
		return fmt.Errorf("backend %q of pool %q is being removed (draining): wait until it is gone, then add it again: %w",
			b.Address, poolName, admin.ErrConflict)
	}
	return nil
}

// State returns admin.state_file as the API shows it.
func (s *Server) State() state.Report {
	r := state.Report{File: s.state.Path(), Entries: s.state.Entries(), Stale: []state.Stale{}}
	if r.Entries == nil {
		r.Entries = []state.Entry{}
	}
	if st := s.stale.Load(); st != nil {
		r.Stale = *st
	}
	return r
}

// stateWord is an operator state as the state file writes it.
func stateWord(a pool.Admin) string {
	if a == pool.Enabled {
		return ""
	}
	return a.String()
}

// adminState reads a state file's state word ("" is enabled).
func adminState(word string) pool.Admin {
	switch word {
	case "draining":
		return pool.Draining
	case "disabled":
		return pool.Disabled
	}
	return pool.Enabled
}

// adminKind is the event of a change to operator state a.
func adminKind(a pool.Admin) events.Kind {
	switch a {
	case pool.Draining:
		return events.Drained
	case pool.Disabled:
		return events.Disabled
	}
	return events.Enabled
}
