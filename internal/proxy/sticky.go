package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"sync"
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
	ids sync.Map // *pool.Backend → string, filled lazily
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

// id returns b's opaque cookie value.
func (s *Sticky) id(b *pool.Backend) string {
	if v, ok := s.ids.Load(b); ok {
		return v.(string)
	}
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(b.Address))
	id := base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:12])
	s.ids.Store(b, id)
	return id
}

// lookup returns the eligible backend of p that value names, or nil.
func (s *Sticky) lookup(p *pool.Pool, value string) *pool.Backend {
	if value == "" {
		return nil
	}
	for _, b := range p.Backends() {
		if s.id(b) == value {
			if b.Eligible() {
				return b
			}
			return nil
		}
	}
	return nil
}

// setCookie adds the affinity cookie for b to h.
func (s *Sticky) setCookie(h http.Header, b *pool.Backend, secure bool) {
	v := s.Cookie + "=" + s.id(b) + "; Path=/; HttpOnly; SameSite=Lax"
	if secure {
		v += "; Secure"
	}
	if s.TTL > 0 {
		v += "; Max-Age=" + strconv.Itoa(int(s.TTL/time.Second))
	}
	h.Add("Set-Cookie", v)
}
