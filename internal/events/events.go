// Package events records sluice's decisions — a backend going up or down,
// an ejection, an operator's drain, a reload — each once, with its reason.
// A Log keeps the most recent events in a bounded ring, writes each to the
// process log as it is published, and wakes subscribers (the admin API's
// Server-Sent Events stream), which then read what they have not seen with
// Since. Publishing never blocks on a slow subscriber.
package events

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Kind names a decision. The values are the contract's (DESIGN.md,
// GET /api/v1/events).
type Kind string

const (
	BackendUp      Kind = "backend_up"      // active checks passed rise times
	BackendDown    Kind = "backend_down"    // active checks failed fall times
	Ejected        Kind = "ejected"         // passive health took a backend out
	Returned       Kind = "returned"        // an ejected backend came back
	Drained        Kind = "drained"         // an operator (or agent, or discovery) drained a backend
	Added          Kind = "added"           // a backend joined a pool
	Removed        Kind = "removed"         // a backend left a pool
	Disabled       Kind = "disabled"        // an operator disabled a backend
	Enabled        Kind = "enabled"         // an operator enabled a backend
	ReloadOK       Kind = "reload_ok"       // a new config is serving
	ReloadFailed   Kind = "reload_failed"   // a new config was refused; the old one serves
	DiscoveryError Kind = "discovery_error" // a discovery source could not be read

	// Beyond the contract's kinds:
	WeightChanged      Kind = "weight_changed"        // an operator or a backend's agent changed its weight
	StateStale         Kind = "state_stale"           // an admin.state_file entry names a pool or backend that no longer exists
	CertObtained       Kind = "certificate_obtained"  // ACME (tls.acme) issued a certificate, now serving
	CertError          Kind = "certificate_error"     // obtaining one failed; the one in hand keeps serving
	RateLimitStoreDown Kind = "rate_limit_store_down" // the shared rate limit store cannot be reached: each instance counts alone
	RateLimitStoreUp   Kind = "rate_limit_store_up"   // the shared rate limit store answers: limits are shared
)

// level is how a kind is written to the process log.
func (k Kind) level() slog.Level {
	switch k {
	case BackendDown, Ejected, ReloadFailed, DiscoveryError, StateStale, RateLimitStoreDown:
		return slog.LevelWarn
	case CertError:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Event is one decision. Pool and Backend are "" when the decision is not
// about one (a reload); they are in the JSON all the same, as the contract
// gives every event id, time, kind, pool, backend and reason.
type Event struct {
	ID      uint64    `json:"id"`
	Time    time.Time `json:"time"`
	Kind    Kind      `json:"kind"`
	Pool    string    `json:"pool"`
	Backend string    `json:"backend"`
	Reason  string    `json:"reason"`
}

// DefaultSize is the number of events a Log keeps when New is given 0.
const DefaultSize = 512

// Log is a bounded ring of recent events with subscribers. A nil *Log
// drops what is published, so code that may run without one needs no
// checks. Its methods are safe for concurrent use.
type Log struct {
	logger *slog.Logger
	now    func() time.Time

	mu   sync.Mutex
	ring []Event // ring[(id-1) % len(ring)] holds event id
	last uint64  // id of the newest event; 0 before the first
	subs map[chan struct{}]struct{}
}

// New returns a Log keeping the size most recent events (DefaultSize when
// size is 0) and writing each to logger (none when logger is nil).
func New(size int, logger *slog.Logger) *Log {
	if size <= 0 {
		size = DefaultSize
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Log{logger: logger, now: time.Now, ring: make([]Event, size), subs: map[chan struct{}]struct{}{}}
}

// Publish records a decision, writes it to the process log once and wakes
// every subscriber. It returns the event as recorded.
func (l *Log) Publish(kind Kind, pool, backend, reason string) Event {
	return l.publish(kind, pool, backend, reason, nil)
}

// publish is Publish, with first (when not nil) told the event before any
// subscriber can see it.
func (l *Log) publish(kind Kind, pool, backend, reason string, first func(Event)) Event {
	if l == nil {
		e := Event{Time: time.Now(), Kind: kind, Pool: pool, Backend: backend, Reason: reason}
		if first != nil {
			first(e)
		}
		return e
	}
	l.mu.Lock()
	l.last++
	e := Event{ID: l.last, Time: l.now(), Kind: kind, Pool: pool, Backend: backend, Reason: reason}
	if first != nil {
		first(e)
	}
	l.ring[(e.ID-1)%uint64(len(l.ring))] = e
	for ch := range l.subs {
		select {
		case ch <- struct{}{}:
		default: // already woken; it reads everything new with Since
		}
	}
	l.mu.Unlock()
	attrs := make([]any, 0, 8)
	attrs = append(attrs, "kind", string(kind))
	if pool != "" {
		attrs = append(attrs, "pool", pool)
	}
	if backend != "" {
		attrs = append(attrs, "backend", backend)
	}
	attrs = append(attrs, "reason", reason)
	l.logger.Log(context.Background(), kind.level(), "event", attrs...)
	return e
}

// Backend publishes a decision about backend b of pool poolName and makes
// its reason the one b shows (pool.Backend.Reason) from the event's time,
// before a subscriber can see the event (one that then asks the admin API
// finds the event's reason). A nil Log still sets b's reason.
func (l *Log) Backend(kind Kind, poolName string, b *pool.Backend, reason string) Event {
	return l.publish(kind, poolName, b.Address, reason, func(e Event) { b.SetReason(e.Reason, e.Time) })
}

// Since returns the events after id that the ring still holds, oldest
// first. complete is false when some events after id were already
// overwritten (the caller missed them).
func (l *Log) Since(id uint64) (evs []Event, complete bool) {
	if l == nil {
		return nil, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if id >= l.last {
		return nil, true
	}
	first := uint64(1)
	if n := uint64(len(l.ring)); l.last > n {
		first = l.last - n + 1
	}
	complete = id+1 >= first
	if id+1 > first {
		first = id + 1
	}
	evs = make([]Event, 0, l.last-first+1)
	for i := first; i <= l.last; i++ {
		evs = append(evs, l.ring[(i-1)%uint64(len(l.ring))])
	}
	return evs, complete
}

// Last returns the id of the newest event (0 before the first).
func (l *Log) Last() uint64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Subscribe returns a channel that receives a value (coalesced) after each
// Publish, and a function that ends the subscription. Read new events with
// Since after each wake-up.
func (l *Log) Subscribe() (wake <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	if l == nil {
		return ch, func() {}
	}
	l.mu.Lock()
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		delete(l.subs, ch)
		l.mu.Unlock()
	}
}
