package server

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/admin"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/discovery"
	"github.com/sluice-lb/sluice/internal/discovery/etcd"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// fleetWriteTimeout bounds a fleet-wide admin change's write to etcd.
const fleetWriteTimeout = 5 * time.Second

// poolDiscovery is the discovery of one pool: its Members, and the config
// they run with. It outlives reloads that leave that config unchanged.
type poolDiscovery struct {
	cfg     config.Discovery
	members *discovery.Members
}

// syncDiscovery makes the running discovery match snap, which has just
// gone live: a pool whose discovery config is unchanged keeps its Members,
// moved to the new pool; one whose config changed gets new Members (the
// backends found before stay until the new sources answer); a pool without
// discovery has none. drain bounds how long a backend no longer found may
// finish its requests. Called with s.mu held.
func (s *Server) syncDiscovery(snap *snapshot, drain time.Duration) {
	for name, d := range s.discovery {
		p := snap.byName[name]
		if p == nil || p.cfg.Discovery == nil || !reflect.DeepEqual(*p.cfg.Discovery, d.cfg) {
			d.members.Close()
			delete(s.discovery, name)
		}
	}
	for _, p := range snap.pools {
		if p.cfg.Discovery == nil {
			continue
		}
		t := discovery.Target{Pool: p.pool, Kick: p.checker.Kick, DrainTimeout: drain,
			Joined: func(b *pool.Backend) { s.applyEntry(p, b) }}
		if d := s.discovery[p.cfg.Name]; d != nil {
			d.members.Attach(t)
			continue
		}
		m := discovery.NewMembers(p.cfg.Name, sources(*p.cfg.Discovery), discovery.Options{
			Events: s.events, Logger: s.logger, Errors: s.discoveryErrors(p.cfg.Name)})
		m.Start(s.ctx, t)
		s.discovery[p.cfg.Name] = &poolDiscovery{cfg: *p.cfg.Discovery, members: m}
	}
}

// applyEntry gives a backend that discovery added its admin.state_file
// entry, as activate does for the others at start-up and reloads. It runs
// on the discovery loop, without s.mu (the state store has its own lock).
func (s *Server) applyEntry(p *poolRT, b *pool.Backend) {
	e, ok := s.state.Get(p.cfg.Name, b.Address)
	if !ok {
		return
	}
	if e.Weight > 0 && e.Weight != b.Weight() {
		old := b.Weight()
		p.pool.SetWeight(b, e.Weight)
		s.events.Backend(events.WeightChanged, p.cfg.Name, b, fmt.Sprintf("admin.state_file: weight %d → %d", old, e.Weight))
	}
	if st := adminState(e.State); e.State != "" && p.pool.SetAdmin(b, st) {
		s.events.Backend(adminKind(st), p.cfg.Name, b, fmt.Sprintf("admin.state_file: %s through the admin API at %s", e.State, e.Updated.Format(time.RFC3339)))
		p.checker.Kick()
	}
}

// discoverySettleTimeout bounds how long start-up waits for the first
// answers of discovery before /readyz turns 200.
const discoverySettleTimeout = 5 * time.Second

// discoverySettled returns a channel per pool with discovery, closed once
// its sources have answered or failed once. Called with s.mu held.
func (s *Server) discoverySettled() []<-chan struct{} {
	var out []<-chan struct{}
	for _, d := range s.discovery {
		out = append(out, d.members.Settled())
	}
	return out
}

// waitSettled waits until every channel is closed, d has passed or ctx
// has ended.
func waitSettled(ctx context.Context, chans []<-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for _, c := range chans {
		select {
		case <-c:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// stopDiscovery stops every pool's discovery and waits for it.
func (s *Server) stopDiscovery() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, d := range s.discovery {
		d.members.Close()
		delete(s.discovery, name)
	}
}

// sources returns the discovery sources of a pool's config.
func sources(c config.Discovery) []discovery.Source {
	var out []discovery.Source
	if c.DNS != nil {
		out = append(out, discovery.NewDNS(*c.DNS, discovery.DNSOptions{}))
	}
	if c.Etcd != nil {
		out = append(out, etcd.New(*c.Etcd, etcd.Options{}))
	}
	return out
}

// discoveryErrors returns the error counters of a pool's sources, which
// live as long as the server. Called with s.mu held.
func (s *Server) discoveryErrors(poolName string) map[pool.Source]*atomic.Uint64 {
	m := s.discErrors[poolName]
	if m == nil {
		m = map[pool.Source]*atomic.Uint64{pool.SourceDNS: new(atomic.Uint64), pool.SourceEtcd: new(atomic.Uint64)}
		s.discErrors[poolName] = m
	}
	return m
}

// carryDiscovered returns the backends of old that discovery found and
// that pc's discovery may still manage (its source is still configured and
// the address is not among have, the pool's static and API-added
// backends), for the new pool to keep with their state; Members then
// brings the new pool in step.
func carryDiscovered(old *pool.Pool, pc config.Pool, have []*pool.Backend) []*pool.Backend {
	d := pc.Discovery
	if old == nil || d == nil {
		return nil
	}
	static := map[string]bool{}
	for _, b := range have {
		static[b.Address] = true
	}
	var out []*pool.Backend
	for _, b := range old.Backends() {
		keep := b.Source == pool.SourceDNS && d.DNS != nil || b.Source == pool.SourceEtcd && d.Etcd != nil
		if keep && !static[b.Address] {
			out = append(out, b)
		}
	}
	return out
}

// DiscoveryErrors implements metrics.Source.
func (s *Server) DiscoveryErrors(fn func(pool, source string, n uint64)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.discErrors)) {
		for _, src := range []pool.Source{pool.SourceDNS, pool.SourceEtcd} {
			if c := s.discErrors[name][src]; c != nil && (c.Load() > 0 || s.configures(name, src)) {
				fn(name, src.String(), c.Load())
			}
		}
	}
}

// configures reports whether the running config gives pool a source of
// kind src. Called with s.mu held.
func (s *Server) configures(poolName string, src pool.Source) bool {
	d := s.discovery[poolName]
	return d != nil && (src == pool.SourceDNS && d.cfg.DNS != nil || src == pool.SourceEtcd && d.cfg.Etcd != nil)
}

// Discovery implements admin.Fleet.
func (s *Server) Discovery(poolName string) []discovery.Status {
	s.mu.Lock()
	d := s.discovery[poolName]
	s.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.members.Status()
}

// SetFleetState implements admin.Fleet: the state goes to the pool's etcd
// prefix, from which every instance watching it applies it within a second
// (package discovery), and applies here at once. It is kept in etcd, not
// in admin.state_file.
func (s *Server) SetFleetState(poolName, address string, st pool.Admin) error {
	return s.fleetChange(poolName, address, discovery.Fleet{State: st.String()}, func(p *poolRT, b *pool.Backend) {
		if p.pool.SetAdmin(b, st) {
			s.events.Backend(adminKind(st), poolName, b, "admin API, fleet-wide (kept in etcd)")
			p.checker.Kick()
		}
	})
}

// SetFleetWeight implements admin.Fleet, as SetFleetState.
func (s *Server) SetFleetWeight(poolName, address string, weight int) error {
	if weight < 1 || weight > 1000 {
		return fmt.Errorf("weight %d out of range: use 1 to 1000", weight)
	}
	return s.fleetChange(poolName, address, discovery.Fleet{Weight: weight}, func(p *poolRT, b *pool.Backend) {
		if old := b.Weight(); old != weight {
			p.pool.SetWeight(b, weight)
			s.events.Backend(events.WeightChanged, poolName, b, fmt.Sprintf("admin API, fleet-wide (kept in etcd): weight %d → %d", old, weight))
		}
	})
}

// fleetChange checks the backend, writes change to the pool's etcd prefix,
// then applies it here. s.mu is not held while etcd is written.
func (s *Server) fleetChange(poolName, address string, change discovery.Fleet, apply func(*poolRT, *pool.Backend)) error {
	s.mu.Lock()
	_, b, err := s.findBackend(poolName, address)
	if err == nil {
		err = s.notRemoving(poolName, b)
	}
	var fw discovery.FleetWriter
	if d := s.discovery[poolName]; d != nil {
		fw = d.members.FleetWriter()
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if fw == nil {
		return fmt.Errorf("pool %q has no etcd discovery, so there is no fleet-wide store: drop ?scope=fleet to change this instance only, or add discovery.etcd to the pool", poolName)
	}
	ctx, cancel := context.WithTimeout(s.ctx, fleetWriteTimeout)
	defer cancel()
	if err := fw.WriteFleet(ctx, address, change); err != nil {
		return fmt.Errorf("the fleet-wide change was not written, so nothing changed (drop ?scope=fleet to change this instance only): %v: %w", err, admin.ErrUnavailable)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, b, err := s.findBackend(poolName, address) // a reload may have come in between
	if err != nil {
		return err
	}
	apply(p, b)
	return nil
}

var _ admin.Fleet = (*Server)(nil)
