package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// drainPoll is how often Members looks whether a backend it drains has
// finished its requests in flight.
const drainPoll = 100 * time.Millisecond

// Options configure Members; the zero value works.
type Options struct {
	// Events receives every decision (added, drained, removed, the
	// fleet-wide state changes, discovery_error) and writes it to the log.
	// Nil publishes nowhere.
	Events *events.Log
	// Logger gets what is not a decision: a source that answers again
	// after failing. Nil discards.
	Logger *slog.Logger
	// Errors holds, by source kind, the counter of failed look-ups to add
	// to; a kind without one counts into a counter of its own. The caller
	// owns them so that counts outlive a restart of the sources.
	Errors map[pool.Source]*atomic.Uint64
}

// Target is where Members puts the backends it finds: the pool of the
// running config, and what to do around changes.
type Target struct {
	Pool *pool.Pool
	// Kick is called after membership or state changed, so that the
	// pool's health checker looks now; nil does nothing.
	Kick func()
	// DrainTimeout bounds how long a backend no longer found may finish
	// its requests in flight before it is removed; 0 removes it once idle
	// whatever the time.
	DrainTimeout time.Duration
	// Joined, when not nil, is called for each backend Members added to
	// Pool, before the fleet-wide state applies over what it did (the
	// server applies admin.state_file's entry). It runs on Members' loop:
	// it must not wait for the caller of Attach.
	Joined func(*pool.Backend)
}

// Members keeps one pool's discovered backends in step with its sources.
// Create it with NewMembers, then Start it; Close stops it. Its methods are
// safe for concurrent use.
type Members struct {
	pool    string
	sources []Source
	events  *events.Log
	logger  *slog.Logger
	errs    []*atomic.Uint64 // by source index

	updates chan update
	attach  chan attachment
	cancel  context.CancelFunc
	done    chan struct{}
	settled chan struct{} // closed once every source has answered or failed

	statusMu sync.Mutex
	status   []Status // by source index

	// The loop's own state, touched only by run.
	target   Target
	sets     []*Set                     // by source index; nil until its first answer
	draining map[*pool.Backend]drainEnd // backends no longer found
	found    map[string]int             // address → weight last found, for backends Members added
	applied  map[string]Fleet           // address → fleet state last applied
	reported []bool                     // by source index: answered or failed once
}

type drainEnd struct {
	deadline time.Time // zero: none
	reason   string
}

type update struct {
	src int
	set Set
	err error
}

type attachment struct {
	t    Target
	done chan struct{}
}

// NewMembers returns Members for the pool named poolName over sources.
func NewMembers(poolName string, sources []Source, o Options) *Members {
	m := &Members{
		pool:     poolName,
		sources:  sources,
		events:   o.Events,
		logger:   o.Logger,
		updates:  make(chan update),
		attach:   make(chan attachment),
		done:     make(chan struct{}),
		settled:  make(chan struct{}),
		reported: make([]bool, len(sources)),
		status:   make([]Status, len(sources)),
		sets:     make([]*Set, len(sources)),
		draining: map[*pool.Backend]drainEnd{},
		found:    map[string]int{},
		applied:  map[string]Fleet{},
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	for i, s := range sources {
		m.status[i] = Status{Source: s.Kind().String(), Watching: s.Describe()}
		c := o.Errors[s.Kind()]
		if c == nil {
			c = new(atomic.Uint64)
		}
		m.errs = append(m.errs, c)
	}
	return m
}

// Start runs the sources and the loop that applies what they find to t,
// until ctx ends or Close is called.
func (m *Members) Start(ctx context.Context, t Target) {
	m.target = t
	ctx, m.cancel = context.WithCancel(ctx)
	go m.run(ctx)
}

// Close stops the sources and the loop and returns once they have exited.
// Backends being drained stay in the pool as they are (draining); the next
// Members of the pool, if any, finishes the job.
func (m *Members) Close() {
	m.cancel()
	<-m.done
}

// Attach moves Members to the pool of a new config (a reload), whose
// backends the caller carried over from the previous pool, and brings it
// in step at once: what was found but is missing is added, what is no
// longer found is drained, and the fleet-wide state is applied again. It
// returns once that is done.
func (m *Members) Attach(t Target) {
	a := attachment{t: t, done: make(chan struct{})}
	select {
	case m.attach <- a:
		<-a.done
	case <-m.done:
	}
}

// Status returns the state of each source, in the order given to
// NewMembers.
func (m *Members) Status() []Status {
	m.statusMu.Lock()
	defer m.statusMu.Unlock()
	out := make([]Status, len(m.status))
	for i, st := range m.status {
		st.Errors = m.errs[i].Load()
		out[i] = st
	}
	return out
}

// Settled is closed once every source has answered or failed once: from
// then on the pool holds what discovery can give it.
func (m *Members) Settled() <-chan struct{} { return m.settled }

// FleetWriter returns the first source that stores a fleet-wide state, or
// nil.
func (m *Members) FleetWriter() FleetWriter {
	for _, s := range m.sources {
		if fw, ok := s.(FleetWriter); ok {
			return fw
		}
	}
	return nil
}

func (m *Members) run(ctx context.Context) {
	defer close(m.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, s := range m.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Run(ctx, reporter{m: m, ctx: ctx, src: i})
		}()
	}
	var poll <-chan time.Time // armed while backends drain
	for {
		if len(m.draining) > 0 && poll == nil {
			poll = time.After(drainPoll)
		}
		select {
		case <-ctx.Done():
			return
		case u := <-m.updates:
			m.report(u.src)
			if u.err != nil {
				m.failed(u.src, u.err)
				continue
			}
			m.sets[u.src] = &u.set
			m.answered(u.src, len(u.set.Backends))
			m.reconcile()
		case a := <-m.attach:
			m.target = a.t
			clear(m.applied)
			for b := range m.draining {
				// The new config's state (admin.state_file) may have
				// enabled it: it is still gone from its source.
				a.t.Pool.SetAdmin(b, pool.Draining)
			}
			m.reconcile()
			close(a.done)
		case <-poll:
			poll = nil
			m.finishDrains()
		}
	}
}

// report notes that source i reported, and closes settled when every
// source has.
func (m *Members) report(i int) {
	if m.reported[i] {
		return
	}
	m.reported[i] = true
	for _, r := range m.reported {
		if !r {
			return
		}
	}
	close(m.settled)
}

// reporter hands one source's reports to the loop.
type reporter struct {
	m   *Members
	ctx context.Context
	src int
}

func (r reporter) Found(s Set) {
	select {
	case r.m.updates <- update{src: r.src, set: s}:
	case <-r.ctx.Done():
	}
}

func (r reporter) Failed(err error) {
	select {
	case r.m.updates <- update{src: r.src, err: err}:
	case <-r.ctx.Done():
	}
}

// failed records a failed look-up: the counter always, the event and the
// log line once per run of failures (and again when the error changes).
func (m *Members) failed(i int, err error) {
	m.errs[i].Add(1)
	m.statusMu.Lock()
	st := &m.status[i]
	wasOK, same := st.OK, st.LastError == err.Error()
	st.OK, st.LastError, st.LastErrorAt = false, err.Error(), time.Now()
	m.statusMu.Unlock()
	if wasOK || !same {
		m.events.Publish(events.DiscoveryError, m.pool, "", fmt.Sprintf("%s %s: %v; the last backends found stay", m.sources[i].Kind(), m.sources[i].Describe(), err))
	}
}

// answered records a successful look-up.
func (m *Members) answered(i, n int) {
	m.statusMu.Lock()
	st := &m.status[i]
	recovered := !st.OK && st.LastError != ""
	st.OK, st.Backends, st.UpdatedAt = true, n, time.Now()
	m.statusMu.Unlock()
	if recovered {
		m.logger.Info("discovery answers again", "pool", m.pool, "source", m.sources[i].Kind().String(),
			"watching", m.sources[i].Describe(), "backends", n)
	}
}

// wanted is a backend some source found.
type wanted struct {
	Backend
	kind pool.Source
}

// reconcile brings the target pool in step with the sets found: backends
// found and missing are added, backends of a source that answered but no
// longer lists them are drained, weights and priorities follow the
// sources, and the fleet-wide state is applied. A source that has not
// answered yet leaves the backends of its kind alone.
func (m *Members) reconcile() {
	p := m.target.Pool
	current := p.Backends()
	static := map[string]bool{}
	for _, b := range current {
		if !discovered(b.Source) {
			static[b.Address] = true
		}
	}
	want := map[string]wanted{}
	var order []string
	answered := map[pool.Source]bool{}
	for i, set := range m.sets {
		if set == nil {
			continue
		}
		kind := m.sources[i].Kind()
		answered[kind] = true
		for _, b := range set.Backends {
			if _, dup := want[b.Address]; dup || static[b.Address] {
				continue // a static backend, or one another source found first
			}
			want[b.Address] = wanted{Backend: b, kind: kind}
			order = append(order, b.Address)
		}
	}
	fleet := m.fleet()
	changed := false
	present := map[string]bool{}
	for _, b := range current {
		if !discovered(b.Source) {
			continue
		}
		present[b.Address] = true
		w, ok := want[b.Address]
		if !ok {
			if answered[b.Source] {
				changed = m.drain(b, fmt.Sprintf("no longer found by %s", b.Source)) || changed
			}
			continue
		}
		if _, wasDraining := m.draining[b]; wasDraining {
			delete(m.draining, b)
			delete(m.applied, b.Address)
			p.SetAdmin(b, pool.Enabled)
			m.events.Backend(events.Added, m.pool, b, fmt.Sprintf("found by %s again while it was draining", w.kind))
			changed = true
		}
		if last, ok := m.found[b.Address]; !ok || last != w.Weight {
			m.found[b.Address] = w.Weight
			if fleet[b.Address].Weight == 0 && b.Weight() != w.Weight {
				m.setWeight(b, w.Weight, fmt.Sprintf("found by %s with another weight", w.kind))
				changed = true
			}
		}
		p.SetPriority(b, w.Priority)
	}
	var add []*pool.Backend
	for _, addr := range order {
		if present[addr] {
			continue
		}
		w := want[addr]
		b := pool.NewBackend(w.Address, w.URL, w.Weight)
		b.Source = w.kind
		b.InitPriority(w.Priority)
		add = append(add, b)
	}
	added := p.AddAll(add)
	for _, b := range added {
		w := want[b.Address]
		m.found[b.Address] = w.Weight
		delete(m.applied, b.Address)
		reason := fmt.Sprintf("found by %s (%s) with weight %d", w.kind, m.describe(w.kind), w.Weight)
		if w.Priority > 0 {
			reason += fmt.Sprintf(", priority level %d", w.Priority)
		}
		m.events.Backend(events.Added, m.pool, b, reason)
		changed = true
	}
	if m.target.Joined != nil {
		for _, b := range added {
			m.target.Joined(b)
		}
	}
	changed = m.applyFleet(fleet) || changed
	if changed && m.target.Kick != nil {
		m.target.Kick()
	}
}

// describe returns what the first source of kind watches.
func (m *Members) describe(kind pool.Source) string {
	for _, s := range m.sources {
		if s.Kind() == kind {
			return s.Describe()
		}
	}
	return ""
}

// discovered reports whether a backend of source s is Members' to manage.
func discovered(s pool.Source) bool {
	return s == pool.SourceDNS || s == pool.SourceEtcd
}

// drain takes b out of rotation; finishDrains removes it once idle. It
// reports whether b was not draining for this reason already.
func (m *Members) drain(b *pool.Backend, reason string) bool {
	if _, ok := m.draining[b]; ok {
		return false
	}
	end := drainEnd{reason: reason}
	if d := m.target.DrainTimeout; d > 0 {
		end.deadline = time.Now().Add(d)
	}
	m.draining[b] = end
	m.target.Pool.SetAdmin(b, pool.Draining)
	m.events.Backend(events.Drained, m.pool, b, reason+": draining, removed once its requests in flight finish")
	return true
}

// finishDrains removes the drained backends whose requests in flight have
// finished or whose drain time is up.
func (m *Members) finishDrains() {
	p := m.target.Pool
	now := time.Now()
	changed := false
	for b, end := range m.draining {
		n := b.InFlight.Load()
		if n > 0 && (end.deadline.IsZero() || now.Before(end.deadline)) {
			continue
		}
		delete(m.draining, b)
		delete(m.found, b.Address)
		delete(m.applied, b.Address)
		if !p.Remove(b) {
			continue // a reload took it out already
		}
		reason := end.reason + ": no request in flight"
		if n > 0 {
			reason = fmt.Sprintf("%s: drain time up with %d requests in flight, which finish on their own", end.reason, n)
		}
		m.events.Backend(events.Removed, m.pool, b, reason)
		changed = true
	}
	if changed && m.target.Kick != nil {
		m.target.Kick()
	}
}

// fleet returns the fleet-wide state of every source that keeps one,
// merged (the first source wins).
func (m *Members) fleet() map[string]Fleet {
	var out map[string]Fleet
	for _, set := range m.sets {
		if set == nil || set.Fleet == nil {
			continue
		}
		if out == nil {
			out = map[string]Fleet{}
		}
		for addr, f := range set.Fleet {
			if _, ok := out[addr]; !ok {
				out[addr] = f
			}
		}
	}
	return out
}

// applyFleet applies each backend's fleet-wide state once per change (and
// again after Attach and when the backend joins). A backend being drained
// because it is no longer found stays draining. It reports whether a
// state or weight changed.
func (m *Members) applyFleet(fleet map[string]Fleet) bool {
	p := m.target.Pool
	changed := false
	for addr := range m.applied {
		if _, ok := fleet[addr]; !ok {
			delete(m.applied, addr) // removed: each instance keeps its state
		}
	}
	for _, addr := range slices.Sorted(maps.Keys(fleet)) { // in a stable order: events are ordered
		f := fleet[addr]
		if m.applied[addr] == f {
			continue
		}
		b := p.Find(addr)
		if b == nil {
			continue // applied when it joins
		}
		prev := m.applied[addr]
		m.applied[addr] = f
		if st, ok := f.AdminState(); ok {
			if _, gone := m.draining[b]; !gone && p.SetAdmin(b, st) {
				m.events.Backend(adminKind(st), m.pool, b, fmt.Sprintf("fleet-wide %s from %s", f.State, m.describe(pool.SourceEtcd)))
				changed = true
			}
		}
		switch {
		case f.Weight > 0 && f.Weight != b.Weight():
			m.setWeight(b, f.Weight, fmt.Sprintf("fleet-wide weight from %s", m.describe(pool.SourceEtcd)))
			changed = true
		case f.Weight == 0 && prev.Weight > 0:
			if w, ok := m.found[addr]; ok && w != b.Weight() {
				m.setWeight(b, w, "the fleet-wide weight was cleared: back to the weight found")
				changed = true
			}
		}
	}
	return changed
}

// setWeight changes b's weight and publishes why.
func (m *Members) setWeight(b *pool.Backend, w int, why string) {
	old := b.Weight()
	m.target.Pool.SetWeight(b, w)
	m.events.Backend(events.WeightChanged, m.pool, b, fmt.Sprintf("%s: weight %d → %d", why, old, w))
}

// adminKind is the event of an admin state change.
func adminKind(st pool.Admin) events.Kind {
	switch st {
	case pool.Draining:
		return events.Drained
	case pool.Disabled:
		return events.Disabled
	}
	return events.Enabled
}
