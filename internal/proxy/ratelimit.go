package proxy

import (
	"context"
	"net/netip"
	"strconv"
	"time"

	"github.com/sluice-lb/sluice/internal/ratelimit"
)

// RateLimit is one rate_limit as the request path applies it: what it
// counts by and the limit itself.
type RateLimit struct {
	// Key is the part of the request the limit counts by; the zero value
	// (client_ip) counts by the client's address.
	Key   HashKey
	Limit *ratelimit.Limit
}

// allow decides one request with fields h, normalised path and raw query
// from client.
func (r *RateLimit) allow(ctx context.Context, h Fields, path, rawQuery string, client netip.Addr) ratelimit.Decision {
	k := ratelimit.AddrKey(client)
	if r.Key.kind != keyNone {
		k = ratelimit.TextKey(r.Key.extract(h, path, rawQuery))
	}
	return r.Limit.Allow(ctx, k)
}

// Limited is a rate limit's refusal: the request gets 429 and never
// reaches a backend. The zero value (Limit nil) refuses nothing.
type Limited struct {
	Limit *ratelimit.Limit
	ratelimit.Decision
}

// Refused reports whether x is a refusal.
func (x *Limited) Refused() bool { return x.Limit != nil }

// The fields of a 429, in the order EachField gives them.
const (
	FieldRetryAfter      = "Retry-After"
	FieldRateLimitPolicy = "RateLimit-Policy"
	FieldRateLimit       = "RateLimit"
)

// EachField calls f with each field a 429 for x carries: Retry-After in
// whole seconds (at least 1), and the IETF httpapi ratelimit-headers draft's
// RateLimit-Policy ("NAME";q=BURST;w=SECONDS, the time an empty bucket takes
// to fill) and RateLimit ("NAME";r=REMAINING;t=SECONDS until the bucket is
// full). value is only valid during the call.
func (x *Limited) EachField(f func(name string, value []byte)) {
	var buf [96]byte
	p := x.Limit.Params()
	f(FieldRetryAfter, strconv.AppendInt(buf[:0], seconds(x.RetryAfter), 10))
	v := appendName(buf[:0], x.Limit.Name())
	v = append(v, ";q="...)
	v = strconv.AppendInt(v, p.BurstOrRate(), 10)
	v = append(v, ";w="...)
	f(FieldRateLimitPolicy, strconv.AppendInt(v, seconds(p.Window()), 10))
	v = appendName(buf[:0], x.Limit.Name())
	v = append(v, ";r="...)
	v = strconv.AppendInt(v, x.Remaining, 10)
	v = append(v, ";t="...)
	f(FieldRateLimit, strconv.AppendInt(v, seconds(x.Reset), 10))
}

// appendName appends name as a structured-field string; config validation
// keeps it printable ASCII without quotes or backslashes.
func appendName(dst []byte, name string) []byte {
	dst = append(dst, '"')
	dst = append(dst, name...)
	return append(dst, '"')
}

// seconds rounds d up to whole seconds, at least 1.
func seconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// SharedLimits reports whether a rate limit of l asks a store shared by
// the fleet (Redis) for each request: Resolve may then wait on the network,
// which a codec on an event loop must not.
func (l *Listener) SharedLimits() bool {
	if l.RateLimit != nil && l.RateLimit.Limit.Shared() {
		return true
	}
	for _, rl := range l.RouteLimits {
		if rl != nil && rl.Limit.Shared() {
			return true
		}
	}
	return false
}
