package config

import (
	"slices"
	"strings"
	"time"
)

// The rules of layer 4: a protocol tcp listener relays connections to pools
// of tcp:// backends, routes on the server name of the TLS ClientHello
// (sni) only, and refuses the HTTP-only keys a file sets for it, as a tcp
// pool refuses the keys that only mean something to HTTP requests. A key
// that would have no effect is an error, never silently ignored.

// tcpListener checks the keys of a protocol tcp listener.
func (v *validator) tcpListener(p string, l *Listener) {
	if l.H2C {
		v.errorf(p+".h2c", "h2c has no effect on a tcp listener, which relays bytes without reading HTTP: remove it")
	}
	if l.HTTP3 {
		v.errorf(p+".http3", "http3 has no effect on a tcp listener, which relays TCP connections: remove it")
	}
	v.tcpRateLimit(p+".rate_limit", l.RateLimit)
	// A key at its default is fine (a full dump of the config writes
	// them all); any other value would be ignored.
	for _, k := range []struct {
		key string
		set bool
	}{
		{"engine", l.Engine != "h1" && l.Engine != ""},
		{"timeouts.read", l.Timeouts.Read != 0},
		{"timeouts.write", l.Timeouts.Write != 0},
		{"limits.max_header_bytes", l.Limits.MaxHeaderBytes != 65536},
		{"limits.max_headers", l.Limits.MaxHeaders != 100},
		{"limits.max_uri_bytes", l.Limits.MaxURIBytes != 8192},
		{"limits.max_body_bytes", l.Limits.MaxBodyBytes != 0},
		{"limits.max_concurrent_streams", l.Limits.MaxConcurrentStreams != DefaultMaxConcurrentStreams},
	} {
		if k.set {
			v.errorf(p+"."+k.key, "%s has no effect on a tcp listener, which relays bytes without reading HTTP: remove it", k.key)
		}
	}
}

// tcpRateLimit checks a rate_limit of a tcp listener or route: it counts
// connections, by the client's address alone.
func (v *validator) tcpRateLimit(p string, rl *RateLimit) {
	if rl != nil && rl.Key != "client_ip" && validHashKey(rl.Key) {
		v.errorf(p+".key", "rate_limit.key %q has no meaning on a tcp listener, which reads no request: use client_ip (the default), which counts connections by client", rl.Key)
	}
}

// tcpRoute checks a route of a tcp listener: it matches on sni alone.
func (v *validator) tcpRoute(p string, r *Route) {
	v.tcpRateLimit(p+".rate_limit", r.RateLimit)
	for _, k := range []struct {
		key string
		set bool
	}{{"host", r.Host != ""}, {"path_prefix", r.PathPrefix != ""}, {"headers", len(r.Headers) > 0}} {
		if k.set {
			v.errorf(p+"."+k.key, "%s has no meaning on a tcp listener, which reads no HTTP request: route on sni, the server name of the TLS ClientHello", k.key)
		}
	}
	switch name := strings.TrimPrefix(r.SNI, "*."); {
	case r.SNI == "":
		v.errorf(p+".sni", `a route of a tcp listener needs sni: write e.g. sni: "db.example.com" or "*.example.com" (the listener's pool takes the rest)`)
	case !validHost(name) || strings.Contains(name, "*"):
		v.errorf(p+".sni", `sni %q is not a server name: write e.g. "db.example.com" or "*.example.com", without a port`, r.SNI)
	case isIP(name):
		v.errorf(p+".sni", "sni %q is an IP address, which TLS clients never send as a server name (RFC 6066): use a host name", r.SNI)
	}
}

// isTCPPool reports whether a pool is a layer-4 one: a tcp listener sends
// to it, or it has tcp:// backends.
func (v *validator) isTCPPool(pl *Pool) bool {
	if _, ok := v.tcpUsedBy[pl.Name]; ok {
		return true
	}
	for _, b := range pl.Backends {
		if b.URL != nil && b.URL.Scheme == "tcp" {
			return true
		}
	}
	return false
}

// tcpPool checks the keys of a pool of tcp:// backends: those that only
// mean something to HTTP requests are errors when set.
func (v *validator) tcpPool(p string, pl *Pool) {
	_, byTCP := v.tcpUsedBy[pl.Name]
	_, byHTTP := v.usedBy[pl.Name]
	if !byTCP && !byHTTP {
		// Used by no listener (yet): its backends must agree with each other.
		for i, b := range pl.Backends {
			if b.URL != nil && b.URL.Scheme != "tcp" {
				v.errorf(index(p+".backends", i)+".address", "pool %q mixes tcp:// backends with %s:// ones: a pool is either layer 4 (tcp://) or HTTP", pl.Name, b.URL.Scheme)
				break
			}
		}
	}
	const why = "has no effect on a pool of tcp:// backends, which relays connections without reading HTTP"
	if pl.Sticky != nil {
		v.errorf(p+".sticky", "sticky %s (its cookie is HTTP): remove it; balance: ip_hash keeps a client on one backend", why)
	}
	if pl.UpstreamHTTP2 {
		v.errorf(p+".upstream_http2", "upstream_http2 %s: remove it", why)
	}
	if pl.GRPCWeb {
		v.errorf(p+".grpc_web", "grpc_web %s: remove it", why)
	}
	if pl.UpstreamTLS != (UpstreamTLS{}) {
		v.errorf(p+".upstream_tls", "upstream_tls %s: remove it (sluice relays TLS untouched, or terminates it on a tcp listener with tls)", why)
	}
	if pl.HashKey != "client_ip" && validHashKey(pl.HashKey) {
		v.errorf(p+".hash_key", "hash_key %q %s: use client_ip (the default), the only key a connection has", pl.HashKey, why)
	}
	for _, k := range []struct {
		key string
		set bool
	}{{"timeouts.response_header", pl.Timeouts.ResponseHeader != 30*time.Second}, {"timeouts.request", pl.Timeouts.Request != 0}} {
		if k.set {
			v.errorf(p+"."+k.key, "%s %s: remove it (timeouts.connect and timeouts.idle apply)", k.key, why)
		}
	}
	if !slices.Equal(pl.Retries.RetryOn, defaultRetryOn) {
		for i, on := range pl.Retries.RetryOn {
			if on != "connect_failure" {
				v.errorf(index(p+".retries.retry_on", i), "retry_on %q %s: only connect_failure is retried, before any byte was relayed", on, why)
			}
		}
	}
}

// sendProxy checks a pool's send_proxy_protocol.
func (v *validator) sendProxy(p string, pl *Pool) {
	if pl.SendProxyProtocol == "" {
		return
	}
	v.oneOf(p+".send_proxy_protocol", "send_proxy_protocol", pl.SendProxyProtocol, "v1", "v2")
	if pl.UpstreamHTTP2 {
		v.errorf(p+".send_proxy_protocol", "send_proxy_protocol cannot go with upstream_http2: a PROXY header names one client, and an HTTP/2 connection carries the requests of many; remove one of them")
	}
}
