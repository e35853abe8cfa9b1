package ratelimit

import (
	"context"
	"net/netip"
	"time"
)

// Key is what a limit counts by: a client address, or a string (a header
// value, a cookie, the path, a query parameter). Requests that lack the
// key (no such header) share the bucket of the empty key.
type Key struct {
	text string
	addr netip.Addr
}

// TextKey returns the key s.
func TextKey(s string) Key { return Key{text: s} }

// AddrKey returns the key of a client address.
func AddrKey(a netip.Addr) Key { return Key{addr: a} }

// String returns the key as the shared store names it.
func (k Key) String() string {
	if k.addr.IsValid() {
		return k.addr.String()
	}
	return k.text
}

// Store is a count shared by every sluice instance. Take applies one
// request of key under p; an error means the store could not decide, and
// the limit counts alone for that request. A store that knows it cannot be
// reached returns an error at once.
type Store interface {
	Take(ctx context.Context, key string, p Params) (Decision, error)
}

// DefaultMaxKeys is how many keys a limit keeps apart when Options.MaxKeys
// is 0.
const DefaultMaxKeys = 65536

// Options are a Limit's settings beside its Params.
type Options struct {
	// Name identifies the limit: in the RateLimit fields clients get and in
	// the shared store's keys.
	Name string
	// MaxKeys bounds the keys counted apart locally (0: DefaultMaxKeys);
	// the memory is about 16 bytes per key, rounded up to a power of two.
	MaxKeys int
	// Store, when not nil, holds the count shared by every instance.
	Store Store
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Limit is one rate_limit: a token bucket per key. Its methods are safe for
// concurrent use; Allow takes no lock.
type Limit struct {
	params Params
	opts   Options
	g      gcra
	local  *table
	epoch  time.Time
}

// New returns a limit; p must have passed Check.
func New(p Params, o Options) *Limit {
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if p.Burst == 0 {
		p.Burst = p.Rate
	}
	return &Limit{params: p, opts: o, g: p.compile(), local: newTable(o.MaxKeys), epoch: o.Now()}
}

// Name is the limit's name.
func (l *Limit) Name() string { return l.opts.Name }

// Params returns the limit's numbers, with Burst filled in.
func (l *Limit) Params() Params { return l.params }

// Same reports whether l is what New(p, o) would build, so that a reload
// that leaves a limit as it was keeps its buckets.
func (l *Limit) Same(p Params, o Options) bool {
	if p.Burst == 0 {
		p.Burst = p.Rate
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	return p == l.params && o.Name == l.opts.Name && o.MaxKeys == l.opts.MaxKeys && o.Store == l.opts.Store
}

// Allow decides one request of key k. With a store it asks the store, and
// counts the requests the store allows locally too, so that the local
// count is current when the store fails; without one, or when the store
// cannot answer, the local count decides.
func (l *Limit) Allow(ctx context.Context, k Key) Decision {
	h := l.local.hash(k)
	if st := l.opts.Store; st != nil {
		if d, err := st.Take(ctx, l.opts.Name+":"+k.String(), l.params); err == nil {
			if d.Allowed {
				l.local.take(&l.g, h, l.now())
			}
			return d
		}
	}
	return l.local.take(&l.g, h, l.now())
}

// now is the limit's clock in nanoseconds since it was made.
func (l *Limit) now() int64 { return int64(l.opts.Now().Sub(l.epoch)) }

// Shared reports whether the limit asks a store shared by the fleet, which
// may wait on the network.
func (l *Limit) Shared() bool { return l.opts.Store != nil }
