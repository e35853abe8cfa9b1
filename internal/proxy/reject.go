package proxy

import (
	"errors"
	"sync/atomic"

	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// Reject says why a client connection was closed before any backend saw
// it: its PROXY protocol header (missing or malformed, from a peer outside
// trusted_proxies, or too slow to arrive), or, on a tcp listener, no route
// for its server name, a rate limit, or no backend to take it.
type Reject uint8

const (
	RejectProxyInvalid Reject = iota
	RejectProxyUntrusted
	RejectProxyTimeout
	RejectNoRoute
	RejectNoBackend
	RejectRateLimited
	numRejects
)

var rejectNames = [numRejects]string{"proxy_invalid", "proxy_untrusted", "proxy_timeout", "no_route", "no_backend", "rate_limited"}

func (r Reject) String() string { return rejectNames[r] }

// ProxyReject classifies an error of proxyproto.Accept.
func ProxyReject(err error) Reject {
	var ae *proxyproto.AcceptError
	if errors.As(err, &ae) {
		switch ae.Reason {
		case proxyproto.ReasonUntrusted:
			return RejectProxyUntrusted
		case proxyproto.ReasonTimeout:
			return RejectProxyTimeout
		}
	}
	return RejectProxyInvalid
}

// Rejects counts a listener's rejected connections by reason; the zero
// value is ready. It outlives the listener's generations.
type Rejects struct{ n [numRejects]atomic.Uint64 }

// Add counts one rejected connection.
func (r *Rejects) Add(why Reject) { r.n[why].Add(1) }

// Each calls fn for every reason with its count, zero counts included.
func (r *Rejects) Each(fn func(reason string, n uint64)) {
	for i := range r.n {
		fn(rejectNames[i], r.n[i].Load())
	}
}
