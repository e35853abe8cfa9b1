package tlsterm

import (
	"crypto/tls"
	"fmt"

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
// store holds and whose tls block is cfg:
//
//   - TLS 1.2 and 1.3, or 1.3 only with min_version "1.3"; for 1.2 only
//     the suites in suites12;
//   - key exchange on X25519 or P-256;
//   - ALPN "h2" (when h2 is true) and "http/1.1", and with acme
//     "acme-tls/1" for the CA's TLS-ALPN-01 validation (Store answers it);
//   - session tickets on, with keys the tls package rotates;
//   - with client_ca, every client must present a certificate that CA
//     signed (RequireAndVerifyClientCert); see ClientCertHeader.
//
// Certificates come from store.GetCertificate, so a Store reload reaches
// every later handshake through this same Config. client_ca is read here:
// on a reload the server builds a new Config (and swaps it in, for
// example through its own GetConfigForClient) so a renewed CA is seen.
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
	if cfg.ACME != nil {
		// Offered only to a CA validating TLS-ALPN-01: a client asks
		// for it alone, and is never served HTTP on it.
		c.NextProtos = append(c.NextProtos, ALPNChallenge)
	}
	pool, err := cfg.ClientCAs()
	if err != nil {
		return nil, err
	}
	if pool != nil {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = pool
	}
	return c, nil
}
