package tlsterm

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"github.com/sluice-lb/sluice/internal/config"
)

// suites12 are the TLS 1.2 cipher suites offered: forward-secret ECDHE
// with an AEAD, for ECDSA and RSA certificates (Mozilla's "intermediate"
// list). TLS 1.3's suites are not configurable and all modern.
var suites12 = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Config returns the server tls.Config of a listener whose certificates
// store holds and whose tls block is cfg (store was loaded from it):
//
//   - TLS 1.2 and 1.3, or 1.3 only with min_version "1.3"; for 1.2 only
//     the suites in suites12;
//   - key exchange on X25519 or P-256;
//   - ALPN "h2" (when h2 is true) and "http/1.1"; with acme, a CA
//     validating TLS-ALPN-01 gets "acme-tls/1" (see forClient);
//   - session tickets on, with keys the tls package rotates;
//   - with client_ca, every client must present a certificate that CA
//     signed (RequireAndVerifyClientCert); see ClientCertHeader.
//
// Certificates come from store.GetCertificate and client_ca from
// store.ClientCAs at each handshake (forClient), so a Store reload, or a
// change of the files, reaches every later handshake through this same
// Config; connections already open keep what they were handed.
func Config(store *Store, cfg config.TLS, h2 bool) (*tls.Config, error) {
	c := &tls.Config{
		GetCertificate:   store.GetCertificate,
		CipherSuites:     suites12,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
		NextProtos:       []string{"http/1.1"},
	}
	switch cfg.MinVersion {
	case "", "1.2":
		c.MinVersion = tls.VersionTLS12
	case "1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("tls min_version %q is not valid: use 1.2 or 1.3", cfg.MinVersion)
	}
	if h2 {
		c.NextProtos = []string{"h2", "http/1.1"}
	}
	if cfg.ClientCA != "" {
		set := store.set.Load()
		if set.clientCA.ClientCA != cfg.ClientCA || set.clientCAs == nil {
			return nil, fmt.Errorf("tls client_ca %q is not the one the listener's certificates were loaded with (%q)", cfg.ClientCA, set.clientCA.ClientCA)
		}
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = set.clientCAs
	}
	if cfg.ClientCA != "" || cfg.ACME != nil {
		c.GetConfigForClient = forClient(store, c)
	}
	return c, nil
}

// forClient returns c's GetConfigForClient, which keeps c current with
// its Store s:
//
//   - a handshake gets c itself while s's client_ca pool is the one c
//     was built with, else a copy of c with the current pool, made once
//     per change: a CA renewed by a reload or in its file reaches new
//     handshakes as certificates do, and no connection is closed for it
//     (a session resumed from a ticket is verified against the current
//     pool by the tls package);
//   - a CA validating TLS-ALPN-01 (a hello that offers "acme-tls/1"
//     alone, while s answers challenges) gets a copy of c that offers
//     that protocol alone and asks for no client certificate: the CA has
//     none to give, and a listener with client_ca would fail it.
//
// c's callers may change c (its NextProtos) after Config and before its
// first handshake: the copies are made from c as it is then.
func forClient(s *Store, c *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	var current, challenge atomic.Pointer[tls.Config]
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPNChallenge && s.challenges.Load() != nil {
			ch := challenge.Load()
			if ch == nil {
				ch = c.Clone()
				ch.GetConfigForClient, ch.ClientAuth, ch.ClientCAs = nil, tls.NoClientCert, nil
				ch.NextProtos = []string{ALPNChallenge}
				challenge.Store(ch)
			}
			return ch, nil
		}
		pool := s.ClientCAs()
		if pool == nil || pool == c.ClientCAs {
			return nil, nil
		}
		cur := current.Load()
		if cur == nil || cur.ClientCAs != pool {
			cur = c.Clone()
			cur.GetConfigForClient, cur.ClientCAs = nil, pool
			current.Store(cur)
		}
		return cur, nil
	}
}
