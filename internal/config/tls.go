package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// ClientConfig builds the TLS client config for https:// backends. A CA
// file that cannot be used was already reported by Validate; here it falls
// back to the system roots.
func (u UpstreamTLS) ClientConfig() *tls.Config {
	c := &tls.Config{InsecureSkipVerify: u.InsecureSkipVerify, ServerName: u.ServerName}
	if u.CA != "" {
		if roots, err := loadCA(u.CA); err == nil {
			c.RootCAs = roots
		}
	}
	return c
}

// loadCA reads upstream_tls.ca: a PEM file of at least one certificate.
// Validate reports its error; ClientConfig uses its pool.
func loadCA(path string) (*x509.CertPool, error) {
	pem, err := readSmallFile(path)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return roots, nil
}
