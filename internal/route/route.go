// Package route compiles a listener's routes into a table that maps a
// request's host, normalised path and headers to a pool, first match wins.
package route

import (
	"cmp"
	"net/textproto"
	"slices"
	"strings"

	"github.com/sluice-lb/sluice/internal/config"
)

// Header is the part of a header map the table reads. http.Header satisfies
// it; the HTTP/1.1 engine passes its own raw view.
type Header interface {
	Get(name string) string
}

// Table is an immutable compiled route list.
type Table struct {
	routes []compiled
	def    int
}

type compiled struct {
	host     string // lower case, no port; "" matches any
	wildcard bool   // host was "*.suffix": host holds ".suffix"
	prefix   string
	headers  []headerMatch
	pool     int
	name     string // how spans name the route (see Describe)
}

type headerMatch struct{ name, value string }

// Compile builds a table. poolIndex maps a pool name to the index Match
// returns; names were checked by config validation, so an unknown name maps
// to whatever poolIndex says (conventionally -1, never matched).
func Compile(routes []config.Route, defaultPool string, poolIndex func(string) int) *Table {
	t := &Table{def: -1}
	if defaultPool != "" {
		t.def = poolIndex(defaultPool)
	}
	for _, r := range routes {
		c := compiled{prefix: r.PathPrefix, pool: poolIndex(r.Pool)}
		h := strings.ToLower(r.Host)
		if r.SNI != "" {
			// A tcp listener's route: the server name is its host (the
			// listener matches it with no path and no header).
			h = strings.ToLower(r.SNI)
		}
		if strings.HasPrefix(h, "*.") {
			c.wildcard, h = true, h[1:]
		}
		c.host = h
		for name, value := range r.Headers {
			c.headers = append(c.headers, headerMatch{textproto.CanonicalMIMEHeaderKey(name), value})
		}
		slices.SortFunc(c.headers, func(a, b headerMatch) int { return strings.Compare(a.name, b.name) })
		c.name = strings.ToLower(r.Host) + cmp.Or(r.PathPrefix, "/")
		for _, hm := range c.headers {
			c.name += " " + hm.name + "=" + hm.value
		}
		if r.SNI != "" {
			c.name = "sni " + strings.ToLower(r.SNI)
		}
		t.routes = append(t.routes, c)
	}
	return t
}

// Match returns the pool index for a request, or -1 when no route matches
// and there is no default pool. host may carry a port; path must already be
// normalised (see NormalizePath).
func (t *Table) Match(host, path string, h Header) int {
	p, _ := t.Lookup(host, path, h)
	return p
}

// Lookup is Match that also says which route matched: its index in the
// listener's routes, or -1 for the default pool (or no match).
func (t *Table) Lookup(host, path string, h Header) (pool, route int) {
	host = stripPort(host)
	for i := range t.routes {
		r := &t.routes[i]
		if r.host != "" && !matchHost(r, host) {
			continue
		}
		if !strings.HasPrefix(path, r.prefix) {
			continue
		}
		ok := true
		for _, hm := range r.headers {
			if h.Get(hm.name) != hm.value {
				ok = false
				break
			}
		}
		if ok {
			return r.pool, i
		}
	}
	return t.def, -1
}

// Describe names route i (from Lookup) for tracing: its host and path
// prefix with any header conditions ("api.example.com/v1", "/ X-Canary=1"),
// or "default" for -1; and its path prefix, OpenTelemetry's http.route
// ("" for the default pool).
func (t *Table) Describe(i int) (name, prefix string) {
	if i < 0 || i >= len(t.routes) {
		return "default", ""
	}
	r := &t.routes[i]
	return r.name, r.prefix
}

func matchHost(r *compiled, host string) bool {
	if r.wildcard {
		return len(host) > len(r.host) && hasSuffixFold(host, r.host)
	}
	return strings.EqualFold(host, r.host)
}

func hasSuffixFold(s, suffix string) bool {
	return strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// stripPort removes a trailing :port, keeping IPv6 brackets intact.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.IndexByte(host[i:], ']') >= 0 {
		return host
	}
	return host[:i]
}

// MatchSNI returns the pool index for the server name of a TLS ClientHello
// on a tcp listener, whose routes match sni alone: the first route naming
// it (exactly, or by a "*." wildcard covering one or more labels), else the
// default pool, else -1. An empty name (no TLS, or no server name sent)
// goes to the default pool.
func (t *Table) MatchSNI(name string) int {
	p, _ := t.LookupSNI(name)
	return p
}

// LookupSNI is MatchSNI that also says which route matched (-1 for the
// default pool, or no match), as Lookup does.
func (t *Table) LookupSNI(name string) (pool, route int) {
	if name != "" {
		for i := range t.routes {
			r := &t.routes[i]
			if r.host != "" && matchHost(r, name) {
				return r.pool, i
			}
		}
	}
	return t.def, -1
}
