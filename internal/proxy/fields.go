package proxy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/sluice-lb/sluice/internal/ratelimit"
	"github.com/sluice-lb/sluice/internal/route"
)

// Fields is the part of a request's header that routing, hashing, affinity,
// forwarding and the client address read. Every codec provides it: the
// net/http codec over http.Header, the HTTP/1.1 engine over the raw head,
// so this logic exists once.
type Fields interface {
	route.Header
	// Value returns the i-th value (from 0) of the field name, given in
	// canonical form.
	Value(name string, i int) (string, bool)
}

// SplitTarget returns the path (as sent, still escaped) and the query of a
// request target in origin form ("/p?q") or absolute form
// ("http://host/p?q"), and the authority of the latter. Both codecs route
// and forward the path from here, so a path reaches the backend as the
// client escaped it (after NormalizePath).
func SplitTarget(t string) (authority, path, query string) {
	if i := strings.Index(t, "://"); i >= 0 && len(t) > 0 && t[0] != '/' {
		rest := t[i+3:]
		i := strings.IndexAny(rest, "/?")
		if i < 0 {
			i = len(rest)
		}
		authority, t = rest[:i], rest[i:]
	}
	path, query, _ = strings.Cut(t, "?")
	return authority, path, query
}

// Resolve is the part of a request's way shared by every codec before any
// backend is picked: the client address, the listener's rate limit, the
// route, the route's rate limit, the hash key and the affinity cookie, into
// r.Info (which the codec points at its PickInfo), and the route and pool
// on r's span. It sets r.Target and returns it, or nil when no route
// matches or when a rate limit refuses the request: then lim says so, and
// the codec answers 429 with lim's fields (see Limited). ctx bounds a rate
// limit's call to a shared store.
func (l *Listener) Resolve(ctx context.Context, r *Record, host, path, rawQuery string, h Fields, peer netip.Addr) (t *Target, lim Limited) {
	info := r.Info
	info.ClientIP = clientIP(peer, h, l.Trusted)
	if rl := l.RateLimit; rl != nil {
		if d := rl.allow(ctx, h, path, rawQuery, info.ClientIP); !d.Allowed {
			return nil, l.refuse(rl, d)
		}
	}
	idx, ri := l.Routes.Lookup(host, path, h)
	if ri >= 0 && ri < len(l.RouteLimits) {
		if rl := l.RouteLimits[ri]; rl != nil {
			if d := rl.allow(ctx, h, path, rawQuery, info.ClientIP); !d.Allowed {
				return nil, l.refuse(rl, d)
			}
		}
	}
	if idx < 0 || idx >= len(l.Targets) {
		return nil, Limited{}
	}
	t = l.Targets[idx]
	info.Key = t.HashKey.extract(h, path, rawQuery)
	if t.Sticky != nil {
		info.Preferred = t.Sticky.preferred(t.Pool, h)
	}
	r.Target = t
	r.Trace.routed(l.Routes, ri, t.Pool.Name)
	return t, Limited{}
}

// ResolveConn is Resolve for a layer-4 connection (package tcp) from
// client, routed by the server name of its ClientHello: the listener's
// rate limit, the route, the route's rate limit (both counting
// connections by the client's address, the only key a connection has),
// into r.Info. It sets r.Target and returns it, or nil when no route
// matches or a rate limit refuses the connection (refused).
func (l *Listener) ResolveConn(ctx context.Context, r *Record, sni string, client netip.Addr) (t *Target, refused bool) {
	r.Info.ClientIP = client
	if rl := l.RateLimit; rl != nil {
		if d := rl.allow(ctx, nil, "", "", client); !d.Allowed {
			l.refuse(rl, d)
			return nil, true
		}
	}
	idx, ri := l.Routes.LookupSNI(sni)
	if ri >= 0 && ri < len(l.RouteLimits) {
		if rl := l.RouteLimits[ri]; rl != nil {
			if d := rl.allow(ctx, nil, "", "", client); !d.Allowed {
				l.refuse(rl, d)
				return nil, true
			}
		}
	}
	if idx < 0 || idx >= len(l.Targets) {
		return nil, false
	}
	r.Target = l.Targets[idx]
	return r.Target, false
}

// refuse counts a request refused by rl.
func (l *Listener) refuse(rl *RateLimit, d ratelimit.Decision) Limited {
	if l.RateLimited != nil {
		l.RateLimited.Add(1)
	}
	return Limited{Limit: rl.Limit, Decision: d}
}
