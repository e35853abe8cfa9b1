package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// Sticky is cookie affinity for one pool: the first response names its
// backend in a cookie, and later requests carrying it go back to that
// backend while it is eligible. The cookie holds an HMAC of the backend's
// address, never the address itself.
type Sticky struct {
	// Cookie is the cookie's name.
	Cookie string
	// TTL sets Max-Age; 0 makes a session cookie.
	TTL time.Duration

	key []byte
	idx atomic.Pointer[stickyIndex]
}

// stickyIndex maps cookie values to backends and back for one membership
// of the pool; it is rebuilt when the pool's backend list changes (the pool
// replaces the list, never edits it).
type stickyIndex struct {
	backends []*pool.Backend
	byID     map[string]*pool.Backend
	ids      map[*pool.Backend]string
}

// NewSticky returns affinity keyed by key (the same key on every instance
// of a fleet makes their cookies agree).
func NewSticky(cookie string, ttl time.Duration, key []byte) *Sticky {
	return &Sticky{Cookie: cookie, TTL: ttl, key: key}
}

// StickyKey turns a configured secret into an HMAC key.
func StickyKey(secret string) []byte {
	k := sha256.Sum256([]byte("sluice sticky v1\x00" + secret))
	return k[:]
}

// index returns the index for the pool's current backends.
func (s *Sticky) index(p *pool.Pool) *stickyIndex {
	bs := p.Backends()
	if ix := s.idx.Load(); ix != nil && len(ix.backends) == len(bs) &&
		(len(bs) == 0 || &ix.backends[0] == &bs[0]) {
		return ix
	}
	ix := &stickyIndex{backends: bs, byID: make(map[string]*pool.Backend, len(bs)),
		ids: make(map[*pool.Backend]string, len(bs))}
	for _, b := range bs {
		m := hmac.New(sha256.New, s.key)
		m.Write([]byte(b.Address))
		id := base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:12])
		ix.byID[id], ix.ids[b] = b, id
	}
	s.idx.Store(ix)
	return ix
}

// lookup returns the eligible backend of p that value names, or nil.
func (s *Sticky) lookup(p *pool.Pool, value string) *pool.Backend {
	if value == "" {
		return nil
	}
	if b := s.index(p).byID[value]; b != nil && b.Eligible() {
		return b
	}
	return nil
}

// preferred returns the eligible backend of p that the request's affinity
// cookie names, or nil.
func (s *Sticky) preferred(p *pool.Pool, h Fields) *pool.Backend {
	return s.lookup(p, cookie(h, s.Cookie))
}

// CookieValue is the Set-Cookie value naming b, a backend of p ("" when b
// left the pool meanwhile: no affinity to it).
func (s *Sticky) CookieValue(p *pool.Pool, b *pool.Backend, secure bool) string {
	id, ok := s.index(p).ids[b]
	if !ok {
		return ""
	}
	v := s.Cookie + "=" + id + "; Path=/; HttpOnly; SameSite=Lax"
	if secure {
		v += "; Secure"
	}
	if s.TTL > 0 {
		v += "; Max-Age=" + strconv.Itoa(int(s.TTL/time.Second))
	}
	return v
}
