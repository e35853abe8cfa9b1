package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"
)

// ClientConfig builds the TLS client config for https:// backends. A CA
// file that cannot be read was already reported by Validate; here it falls
// back to the system roots.
func (u UpstreamTLS) ClientConfig() *tls.Config {
	c := &tls.Config{InsecureSkipVerify: u.InsecureSkipVerify, ServerName: u.ServerName}
	if u.CA != "" {
		if pem, err := os.ReadFile(u.CA); err == nil {
			roots := x509.NewCertPool()
			if roots.AppendCertsFromPEM(pem) {
				c.RootCAs = roots
			}
		}
	}
	return c
}
