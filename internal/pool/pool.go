package pool

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// MaxTries bounds the attempts of one request (the first try plus retries).
const MaxTries = 11

// PickInfo carries the facts of one request that a policy may use. It lives
// inside the proxy's per-request state, so passing it costs no allocation.
type PickInfo struct {
	// ClientIP is the client's address (after trusted-proxy resolution).
	ClientIP netip.Addr
	// Key is the hash key for hash policies ("" when the pool has none or the
	// request lacks it).
	Key string
	// Preferred, when set, is taken before asking the policy, as long as it
	// is eligible and not yet tried (sticky sessions).
	Preferred *Backend

	tried  [MaxTries]*Backend
	nTried int
}

// Tried reports whether b was already tried for this request.
func (pi *PickInfo) Tried(b *Backend) bool {
	for _, t := range pi.tried[:pi.nTried] {
		if t == b {
			return true
		}
	}
	return false
}

// MarkTried records that b was tried.
func (pi *PickInfo) MarkTried(b *Backend) {
	if pi.nTried < len(pi.tried) {
		pi.tried[pi.nTried] = b
		pi.nTried++
	}
}

// Set is what a policy builds a picker from. Both slices are immutable.
type Set struct {
	// All is every backend of the pool, in config order.
	All []*Backend
	// Ready is the eligible subset (healthy and enabled) of the most
	// preferred priority level that has any eligible backend, in config
	// order: a lower level (a higher Priority) serves only when every
	// level above it has no eligible backend.
	Ready []*Backend
}

// Picker chooses a backend for one request. Pick must not lock, allocate or
// log; it may use atomics. It returns nil only when the set has no ready
// backend. A Picker never changes after it is built.
type Picker interface {
	Pick(info *PickInfo) *Backend
}

// Policy builds Pickers. Build is called whenever membership, health, admin
// state or weights change; it may allocate.
type Policy interface {
	Build(s Set) Picker
}

// Pool is a named set of backends with a policy. Its methods are safe for
// concurrent use.
type Pool struct {
	// Name is the pool's name from the config.
	Name string

	policy Policy

	// mu serialises membership changes and picker rebuilds; readers never take
	// it.
	mu       sync.Mutex
	backends atomic.Pointer[[]*Backend]
	picker   atomic.Pointer[built]

	// Shared holds what outlives a reload of the pool: counters and the
	// retry budget (see Inherit).
	*Shared
	// Limit caps requests in flight per backend and queues the rest; set it
	// before the pool is used.
	Limit Limit

	slowStart time.Duration // guarded by mu
	ramping   atomic.Bool   // a backend is inside its slow-start window
}

// Shared is the part of a pool that a reload carries over to the pool of
// the same name, so counters stay monotonic and the retry budget keeps its
// window.
type Shared struct {
	// NoBackend counts requests that found no eligible backend.
	NoBackend Stats
	// Retries counts retried attempts.
	Retries atomic.Uint64
	// Budget bounds retries.
	Budget RetryBudget
	// QueueWait is how long requests waited in the queue for a backend
	// slot (max_connections_per_backend), whether or not they got one.
	QueueWait Histogram
}

// Inherit makes p share old's counters and retry budget. Call it before p
// serves.
func (p *Pool) Inherit(old *Pool) { p.Shared = old.Shared }

type built struct {
	Picker
	ready int
	// set is the ready set and level its priority level (see Set.Ready).
	set   []*Backend
	level int
}

// New returns a pool over the given backends (which may be shared with the
// pool of a previous snapshot).
func New(name string, policy Policy, backends []*Backend) *Pool {
	p := &Pool{Name: name, policy: policy, Shared: &Shared{}}
	bs := append([]*Backend(nil), backends...)
	p.backends.Store(&bs)
	p.rebuildLocked()
	return p
}

// SetSlowStart sets the slow-start window: a backend that becomes eligible
// again (healthy after a failure, enabled, or added) ramps its effective
// weight from 10% to 100% over d. Zero turns it off.
func (p *Pool) SetSlowStart(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slowStart = d
	p.rebuildLocked()
}

// Ramping reports whether a backend is inside its slow-start window; while
// it is, someone (the health loop) must call Refresh now and then.
func (p *Pool) Ramping() bool { return p.ramping.Load() }

// Refresh rebuilds the picker (effective weights move during slow start).
func (p *Pool) Refresh() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rebuildLocked()
}

// Backends returns the pool's backends. The slice must not be modified.
func (p *Pool) Backends() []*Backend { return *p.backends.Load() }

// Find returns the backend with the given address, or nil.
func (p *Pool) Find(address string) *Backend {
	for _, b := range p.Backends() {
		if b.Address == address {
			return b
		}
	}
	return nil
}

// Ready returns how many backends are eligible now.
func (p *Pool) Ready() int { return p.picker.Load().ready }

// Candidates returns the backends new requests may go to now: the eligible
// ones of the most preferred priority level that has any (Set.Ready). The
// slice must not be modified; it costs one atomic load.
func (p *Pool) Candidates() []*Backend { return p.picker.Load().set }

// candidate reports whether b may take new requests under pk.
func (pk *built) candidate(b *Backend) bool {
	return b.Eligible() && b.Priority() == pk.level
}

// Pick chooses a backend for a request, preferring one not yet tried by it.
// It returns nil when no backend is eligible. When every eligible backend was
// tried already, it returns one of them again.
func (p *Pool) Pick(info *PickInfo) *Backend {
	pk := p.picker.Load()
	if pk.ready == 0 {
		return nil
	}
	if pb := info.Preferred; pb != nil && pk.candidate(pb) && !info.Tried(pb) {
		return pb
	}
	b := pk.Pick(info)
	if info.nTried == 0 || !info.Tried(b) {
		return b
	}
	// A retry: ask the policy again a few times, then take the first untried
	// backend in config order.
	for i := 0; i < pk.ready; i++ {
		if c := pk.Pick(info); !info.Tried(c) {
			return c
		}
	}
	for _, c := range pk.set {
		if c.Eligible() && !info.Tried(c) {
			return c
		}
	}
	return b
}

// Add adds a backend; it reports false when the address is already present.
func (p *Pool) Add(b *Backend) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.backends.Load()
	for _, c := range old {
		if c.Address == b.Address {
			return false
		}
	}
	bs := append(append(make([]*Backend, 0, len(old)+1), old...), b)
	b.Joined()
	b.owner.Store(p)
	p.backends.Store(&bs)
	p.rebuildLocked()
	return true
}

// AddAll adds the backends whose address is not present yet, with one
// picker rebuild, and returns those it added.
func (p *Pool) AddAll(bs []*Backend) []*Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.backends.Load()
	have := make(map[string]bool, len(old)+len(bs))
	for _, c := range old {
		have[c.Address] = true
	}
	all := append(make([]*Backend, 0, len(old)+len(bs)), old...)
	var added []*Backend
	for _, b := range bs {
		if have[b.Address] {
			continue
		}
		have[b.Address] = true
		b.Joined()
		b.owner.Store(p)
		all = append(all, b)
		added = append(added, b)
	}
	if len(added) > 0 {
		p.backends.Store(&all)
		p.rebuildLocked()
	}
	return added
}

// Remove removes a backend; requests in flight on it finish.
func (p *Pool) Remove(b *Backend) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.backends.Load()
	bs := make([]*Backend, 0, len(old))
	for _, c := range old {
		if c != b {
			bs = append(bs, c)
		}
	}
	if len(bs) == len(old) {
		return false
	}
	p.backends.Store(&bs)
	p.rebuildLocked()
	return true
}

// SetHealth changes b's health and rebuilds the picker when it changed. It
// reports whether it changed. downUntil is the time a Down backend may return
// on its own (zero: only a passing check).
func (p *Pool) SetHealth(b *Backend, h Health, downUntil time.Time) bool {
	return p.transition(b, func() (bool, bool) {
		old := Health(b.health.Swap(int32(h)))
		if h == Down && !downUntil.IsZero() {
			b.downUntil.Store(downUntil.UnixNano())
		} else if h != Down {
			b.downUntil.Store(0)
		}
		return old != h, h == Healthy
	})
}

// SetAdmin changes b's operator state and rebuilds the picker.
func (p *Pool) SetAdmin(b *Backend, a Admin) bool {
	return p.transition(b, func() (bool, bool) {
		return Admin(b.admin.Swap(int32(a))) != a, a == Enabled
	})
}

// transition runs set under mu; when set reports a change it rebuilds the
// picker (starting slow start when the backend came back) and that of the
// pool that owns b now.
func (p *Pool) transition(b *Backend, set func() (changed, back bool)) bool {
	p.mu.Lock()
	changed, back := set()
	if changed {
		if back {
			b.Joined()
		}
		p.rebuildLocked()
	}
	p.mu.Unlock()
	if changed {
		// A request that began before a reload reports to the old pool;
		// the pool that owns b now must see the change too.
		if o := b.owner.Load(); o != nil && o != p {
			o.Refresh()
		}
	}
	return changed
}

// Claim makes p the owner of its backends: state changes reported through
// an older pool that shares them rebuild p's picker too. The server calls it
// when p's snapshot goes live.
func (p *Pool) Claim() {
	for _, b := range p.Backends() {
		b.owner.Store(p)
	}
}

// SetPriority changes b's priority level (≥ 0; 0 is the most preferred)
// and rebuilds the picker when it changed.
func (p *Pool) SetPriority(b *Backend, level int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.priority.Swap(int32(level)) != int32(level) {
		p.rebuildLocked()
	}
}

// SetWeight changes b's weight and rebuilds the picker.
func (p *Pool) SetWeight(b *Backend, w int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.weight.Swap(int32(w)) != int32(w) {
		p.rebuildLocked()
	}
}

// SetAgentWeight sets the percentage (1 to 100000) of b's weight that its
// agent asks for, and rebuilds the picker. It reports whether it changed.
func (p *Pool) SetAgentWeight(b *Backend, pct int) bool {
	pct = min(max(pct, 1), 100_000)
	return p.transition(b, func() (bool, bool) {
		old := b.AgentWeight()
		b.agentPct.Store(int32(pct))
		return old != pct, false
	})
}

func (p *Pool) rebuildLocked() {
	all := *p.backends.Load()
	ready := make([]*Backend, 0, len(all))
	now := time.Now().UnixNano()
	ramping := false
	level := int32(-1) // the most preferred level with an eligible backend
	for _, b := range all {
		if l := b.priority.Load(); b.Eligible() && (level < 0 || l < level) {
			level = l
		}
	}
	for _, b := range all {
		w := b.Weight() * WeightScale
		if pct := b.AgentWeight(); pct != 100 {
			w = max(1, w*pct/100)
		}
		if since := b.upSince.Load(); p.slowStart > 0 && since != 0 && now-since < int64(p.slowStart) {
			// Linear ramp from 10% to 100% of the weight over the window.
			f := max(0.1, float64(now-since)/float64(p.slowStart))
			w = max(1, int(float64(w)*f))
			ramping = true
		}
		b.effWeight.Store(int32(w))
		if b.Eligible() && b.priority.Load() == level {
			ready = append(ready, b)
		}
	}
	p.ramping.Store(ramping)
	p.picker.Store(&built{Picker: p.policy.Build(Set{All: all, Ready: ready}), ready: len(ready),
		set: ready, level: int(level)})
}
