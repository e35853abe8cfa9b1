package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/route"
)

// fields is the part of a request's header that routing, hashing, affinity
// and the client address read. Both codecs provide it: the net/http codec
// over http.Header, the HTTP/1.1 engine over the raw head, so this logic
// exists once.
type fields interface {
	route.Header
	// Value returns the i-th value (from 0) of the field name, given in
	// canonical form.
	Value(name string, i int) (string, bool)
}

// stdFields is http.Header as fields.
type stdFields http.Header

func (h stdFields) Get(name string) string { return http.Header(h).Get(name) }

func (h stdFields) Value(name string, i int) (string, bool) {
	if v := h[name]; i < len(v) {
		return v[i], true
	}
	return "", false
}

// rawFields reads the field lines of a head that edge.ParseRequestHead
// accepted. The strings it returns alias the head (see bstr).
type rawFields struct {
	head  []byte
	first int // position of the first field line
}

func (f *rawFields) Get(name string) string {
	v, _ := f.Value(name, 0)
	return v
}

func (f *rawFields) Value(name string, i int) (string, bool) {
	for p := f.first; ; {
		fl, next, ok := edge.NextField(f.head, p)
		if !ok {
			return "", false
		}
		if equalFoldName(fl.Name, name) {
			if i == 0 {
				return bstr(fl.Value), true
			}
			i--
		}
		p = next
	}
}

// connTokens are the field names the Connection fields of a head list
// (which makes them hop-by-hop, RFC 9110 §7.6.1), collected in one pass so
// that checking every field against them stays linear in the head's size.
// The strings alias the head.
type connTokens struct {
	arr  [16]string
	toks []string
}

// collect gathers the tokens of f's Connection fields.
func (ct *connTokens) collect(f *rawFields) {
	ct.toks = ct.arr[:0]
	for p := f.first; ; {
		fl, next, ok := edge.NextField(f.head, p)
		if !ok {
			return
		}
		p = next
		if !equalFoldName(fl.Name, "connection") {
			continue
		}
		v := bstr(fl.Value)
		for v != "" {
			tok := v
			if j := strings.IndexByte(v, ','); j >= 0 {
				tok, v = v[:j], v[j+1:]
			} else {
				v = ""
			}
			if tok = strings.Trim(tok, " \t"); tok != "" {
				ct.toks = append(ct.toks, tok) // allocates only past 16 tokens
			}
		}
	}
}

// has reports whether name is among the tokens.
func (ct *connTokens) has(name string) bool {
	for _, t := range ct.toks {
		if len(t) == len(name) && strings.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// equalFoldName compares a field name as sent with a name in any case.
func equalFoldName(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		if c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z' {
			return false
		}
	}
	return true
}

// bstr views b as a string without copying. The engine uses it for values
// that alias its read buffer and are only used while the buffer holds them
// (routing, hashing, affinity lookups), which is what keeps its request path
// free of allocations; nothing that outlives the request keeps such a
// string.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// splitTarget returns the path (as sent, still escaped) and the query of a
// request target in origin form ("/p?q") or absolute form
// ("http://host/p?q"), and the authority of the latter. Both codecs route
// and forward the path from here, so a path reaches the backend as the
// client escaped it (after NormalizePath).
func splitTarget(t string) (authority, path, query string) {
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

// account counts one answered request: on the backend that answered, else
// on the pool that had none to offer, else on the listener.
func (l *Listener) account(b *pool.Backend, t *Target, status int, d time.Duration) {
	switch {
	case b != nil:
		b.Stats.Observe(l.Slot, status, d)
	case t != nil:
		t.Pool.NoBackend.Observe(l.Slot, status, d)
	default:
		l.NoPool.Observe(l.Slot, status, d)
	}
}

// resolve is the part of a request's way shared by both codecs before any
// backend is picked: the client address, the route, the hash key and the
// affinity cookie. It returns nil when no route matches.
func (l *Listener) resolve(host, path, rawQuery string, h fields, peer netip.Addr, info *pool.PickInfo) *Target {
	info.ClientIP = clientIP(peer, h, l.Trusted)
	idx := l.Routes.Match(host, path, h)
	if idx < 0 || idx >= len(l.Targets) {
		return nil
	}
	t := l.Targets[idx]
	info.Key = t.HashKey.extract(h, path, rawQuery)
	if t.Sticky != nil {
		info.Preferred = t.Sticky.preferred(t.Pool, h)
	}
	return t
}
