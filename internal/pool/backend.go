// Package pool holds the data of the hot path: a Pool of Backends, their
// health and admin state, their counters, and the immutable Picker that a
// request consults with one atomic load.
//
// Glossary (see also the README): a listener accepts client connections and
// routes each request to a pool; a pool (Envoy: cluster, HAProxy: backend)
// is a set of backends sharing a balancing policy; a backend (Envoy:
// endpoint, HAProxy: server) is one upstream server. Downstream is the client
// side, upstream the backend side.
package pool

import (
	"math"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// Health is a backend's health as seen by active checks and passive
// observation.
type Health int32

const (
	// Healthy backends receive traffic. A backend starts healthy; its first
	// active check (run at once) decides.
	Healthy Health = iota
	// Unhealthy backends failed unhealthy_threshold consecutive checks.
	Unhealthy
	// Down backends failed a request passively (nothing could be sent to
	// them); the next passing active check, or the ejection time when the pool
	// has no active checks, brings them back.
	Down
)

func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	case Down:
		return "ejected"
	}
	return "unknown"
}

// Admin is the state an operator sets through the admin API.
type Admin int32

const (
	// Enabled is the normal state.
	Enabled Admin = iota
	// Draining backends take no new requests; requests in flight finish.
	Draining
	// Disabled backends take no requests and are not health checked.
	Disabled
)

func (a Admin) String() string {
	switch a {
	case Enabled:
		return "enabled"
	case Draining:
		return "draining"
	case Disabled:
		return "disabled"
	}
	return "unknown"
}

// Backend is one upstream server. It is shared by every snapshot that
// contains it: a reload that keeps the same address in the same pool keeps the
// same *Backend, and with it health, counters and in-flight requests.
type Backend struct {
	// Address is the backend as written in the config or discovered; it is the
	// metric label and the admin API's identifier.
	Address string
	// URL is Address parsed.
	URL *url.URL
	// Host is URL.Host, the dial address.
	Host string
	// Source says where the backend came from: SourceConfig (the zero
	// value), SourceRuntime (the admin API), SourceDNS or SourceEtcd
	// (discovery). Set it before the backend joins a pool.
	Source Source

	owner     atomic.Pointer[Pool] // the pool of the current snapshot
	weight    atomic.Int32
	effWeight atomic.Int32 // weight×100, scaled down during slow start
	upSince   atomic.Int64 // UnixNano it last became eligible (0: since start-up)
	health    atomic.Int32 // Health
	admin     atomic.Int32 // Admin
	priority  atomic.Int32 // priority level; 0 is the most preferred

	// downUntil is, for a passively marked-down backend, the UnixNano time at
	// which it may return without an active check (0: wait for a check).
	downUntil atomic.Int64

	// InFlight counts requests being served by this backend now.
	InFlight atomic.Int64

	// ConsecutiveFailures counts failed requests in a row (outlier
	// detection); a success resets it.
	ConsecutiveFailures atomic.Int32
	// EjectMultiplier is how many times in a row the backend was ejected; the
	// next ejection lasts ejection_time × (multiplier+1).
	EjectMultiplier atomic.Int32

	// Stats are this backend's request counters.
	Stats Stats

	// reason is why the backend is in its current state and since when
	// (nil: nothing has happened to it yet). The admin API reads it.
	reason atomic.Pointer[Reason]

	// util (float64 bits) is the utilisation the backend last reported
	// (load_report), and utilAt the UnixNano time it did (0: never).
	util   atomic.Uint64
	utilAt atomic.Int64
	// agentPct is the percentage of its weight the backend's agent asks
	// for (0: the agent said nothing, which is 100%).
	agentPct atomic.Int32
}

// Reason says why a backend is in its current state: the reason of the
// last decision about it (an event), and when that was.
type Reason struct {
	Text  string
	Since time.Time
}

// SetReason records why b is in its current state, and since when. Whoever
// changes b's state (a checker, the admin API, a reload) calls it with the
// reason it publishes.
func (b *Backend) SetReason(text string, since time.Time) {
	b.reason.Store(&Reason{Text: text, Since: since})
}

// Reason returns the last reason set (zero: none yet).
func (b *Backend) Reason() Reason {
	if r := b.reason.Load(); r != nil {
		return *r
	}
	return Reason{}
}

// Source is where a backend came from; the admin API shows it.
type Source string

const (
	SourceConfig  Source = "" // written in the config file; shown as "config"
	SourceRuntime Source = "runtime"
	SourceDNS     Source = "dns"
	SourceEtcd    Source = "etcd"
)

func (s Source) String() string {
	if s == SourceConfig {
		return "config"
	}
	return string(s)
}

// NewBackend returns a healthy, enabled backend.
func NewBackend(address string, u *url.URL, weight int) *Backend {
	b := &Backend{Address: address, URL: u, Host: u.Host}
	b.weight.Store(int32(weight))
	b.effWeight.Store(int32(weight * WeightScale))
	return b
}

// WeightScale is how much finer effective weights are than configured ones,
// so that slow start can ramp a weight-1 backend smoothly.
const WeightScale = 100

// Joined marks b as (re)joining rotation now — added to a running pool,
// healthy again, or enabled — so that it goes through slow start. Backends
// present at start-up start at full weight.
func (b *Backend) Joined() { b.upSince.Store(time.Now().UnixNano()) }

// Weight returns the configured weight (≥ 1).
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// EffectiveWeight is the weight policies balance by: Weight×WeightScale, or
// less while the backend is in its slow-start window. It changes only when
// the pool rebuilds its picker.
func (b *Backend) EffectiveWeight() int { return int(b.effWeight.Load()) }

// Priority returns b's priority level: 0, the zero value, is the most
// preferred. A pool sends requests only to the eligible backends of its
// most preferred level that has any (DNS SRV priorities map to levels).
func (b *Backend) Priority() int { return int(b.priority.Load()) }

// InitPriority sets the priority level of a backend that has not joined a
// pool yet; once it has, use Pool.SetPriority, which rebuilds the picker.
func (b *Backend) InitPriority(level int) { b.priority.Store(int32(level)) }

// Health returns the current health.
func (b *Backend) Health() Health { return Health(b.health.Load()) }

// AdminState returns the operator-set state.
func (b *Backend) AdminState() Admin { return Admin(b.admin.Load()) }

// State returns the one word the admin API and dashboard show: healthy,
// unhealthy, ejected, draining or disabled.
func (b *Backend) State() string {
	switch a := b.AdminState(); a {
	case Draining, Disabled:
		return a.String()
	}
	return b.Health().String()
}

// Eligible reports whether new requests may be sent to b.
func (b *Backend) Eligible() bool {
	return b.AdminState() == Enabled && b.Health() == Healthy
}

// ReportLoad records the utilisation the backend reported itself (an ORCA
// report or its agent): about 0 idle, 1 at capacity, more when overloaded.
func (b *Backend) ReportLoad(util float64, now time.Time) {
	b.util.Store(math.Float64bits(util))
	b.utilAt.Store(now.UnixNano())
}

// Utilization returns the utilisation the backend last reported, decayed
// toward 0 with time constant LatencyDecay, as latency averages are: a
// backend that reported a high load and so got no more traffic (and sent
// no more reports) is tried again, and its next report says how it is.
// ok is false when the backend never reported one.
func (b *Backend) Utilization(now time.Time) (util float64, ok bool) {
	at := b.utilAt.Load()
	if at == 0 {
		return 0, false
	}
	u := math.Float64frombits(b.util.Load())
	if age := now.UnixNano() - at; age > 0 {
		u *= math.Exp(-float64(age) / float64(LatencyDecay))
	}
	return u, true
}

// Reported reports whether the backend ever reported its load.
func (b *Backend) Reported() bool { return b.utilAt.Load() != 0 }

// AgentWeight returns the percentage of its weight the backend's agent asks
// for (100 when no agent said).
func (b *Backend) AgentWeight() int {
	if p := b.agentPct.Load(); p > 0 {
		return int(p)
	}
	return 100
}

// DownUntil returns when a passively marked-down backend may come back on its
// own (zero time: only an active check brings it back).
func (b *Backend) DownUntil() time.Time {
	n := b.downUntil.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Failure is how one attempt on a backend went, as outlier detection sees
// it: NoFailure, FailConnect, FailReset, FailTimeout, or the HTTP status
// (500-599) of an answer that counts as a failure.
type Failure int32

const (
	NoFailure   Failure = 0
	FailConnect Failure = 1 // nothing could be sent
	FailReset   Failure = 2 // the connection broke before a complete answer
	FailTimeout Failure = 3 // no answer in time
)

// StatusFailure is the Failure of an answer with status code: NoFailure
// below 500.
func StatusFailure(code int) Failure {
	if code >= 500 {
		return Failure(code)
	}
	return NoFailure
}

func (f Failure) String() string {
	switch f {
	case NoFailure:
		return "success"
	case FailConnect:
		return "connect failure"
	case FailReset:
		return "reset"
	case FailTimeout:
		return "timeout"
	}
	return "status " + strconv.Itoa(int(f))
}
