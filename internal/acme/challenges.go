package acme

import (
	"crypto/tls"
	"strings"
	"sync"
)

// Challenges holds the answers to the challenges under way, for every
// Manager of one sluice: HTTP-01 key authorizations by token, which each
// plain-HTTP listener serves under /.well-known/acme-challenge/, and
// TLS-ALPN-01 certificates by name, which the TLS listener of the Manager
// presents to a client offering only "acme-tls/1". Its methods are safe
// for concurrent use; the zero value is not, use NewChallenges.
type Challenges struct {
	mu   sync.RWMutex                // guards http and alpn
	http map[string]string           // token → key authorization
	alpn map[string]*tls.Certificate // lower-case name → certificate
}

// NewChallenges returns an empty set of challenges.
func NewChallenges() *Challenges {
	return &Challenges{http: map[string]string{}, alpn: map[string]*tls.Certificate{}}
}

// KeyAuthorization returns the key authorization of an HTTP-01 challenge
// under way by its token (proxy.HTTPChallenges).
func (c *Challenges) KeyAuthorization(token string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ka, ok := c.http[token]
	return ka, ok
}

// TLSALPN returns the certificate of a TLS-ALPN-01 challenge under way for
// name (tlsterm.Store.SetChallenges).
func (c *Challenges) TLSALPN(name string) (*tls.Certificate, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	cert, ok := c.alpn[strings.ToLower(name)]
	return cert, ok
}

func (c *Challenges) setHTTP(token, keyAuth string) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.http[token] = keyAuth
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.http, token)
	}
}

func (c *Challenges) setALPN(name string, cert *tls.Certificate) func() {
	name = strings.ToLower(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alpn[name] = cert
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.alpn[name] == cert {
			delete(c.alpn, name)
		}
	}
}
