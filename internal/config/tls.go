package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
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

// loadCA reads upstream_tls.ca or tls.client_ca: a PEM file of at least
// one certificate. Validate reports its error; ClientConfig uses its pool.
func loadCA(path string) (*x509.CertPool, error) {
	b, err := readSmallFile(path)
	if err != nil {
		return nil, err
	}
	return parseCA(path, b)
}

func parseCA(path string, pemBytes []byte) (*x509.CertPool, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return roots, nil
}

// ReadClientCA reads the client_ca file (as Validate does: a regular
// file of at most 1 MiB); nil, nil when client_ca is "". The error says
// what to do.
func (t TLS) ReadClientCA() ([]byte, error) {
	if t.ClientCA == "" {
		return nil, nil
	}
	b, err := readSmallFile(t.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("tls client_ca: %w: give a PEM file of the CA certificates that sign client certificates", err)
	}
	return b, nil
}

// ParseClientCA parses the contents of the client_ca file, as
// ReadClientCA returned them, into a pool.
func (t TLS) ParseClientCA(pemBytes []byte) (*x509.CertPool, error) {
	pool, err := parseCA(t.ClientCA, pemBytes)
	if err != nil {
		return nil, fmt.Errorf("tls client_ca: %w: give a PEM file of the CA certificates that sign client certificates", err)
	}
	return pool, nil
}

// CertError is a problem with one file of a certificate/key pair.
type CertError struct {
	// Field is the key naming the file at fault: "cert" or "key".
	Field string
	// Msg names the file, says what is wrong and what to do.
	Msg string
	// Err is the underlying error, if any, for errors.Is (fs.ErrNotExist).
	Err error
}

func (e *CertError) Error() string { return e.Msg }
func (e *CertError) Unwrap() error { return e.Err }

// ReadFiles reads the pair's two files (each a regular file of at most
// 1 MiB). An error is a *CertError naming the first file that cannot be
// read.
func (c Certificate) ReadFiles() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = readPEMFile("cert", c.Cert); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = readPEMFile("key", c.Key); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

func readPEMFile(field, path string) ([]byte, error) {
	if path == "" {
		return nil, &CertError{Field: field, Msg: fmt.Sprintf("tls certificate has no %s: give the path of its PEM file", field)}
	}
	b, err := readSmallFile(path)
	if err != nil {
		return nil, &CertError{Field: field, Err: err, Msg: fmt.Sprintf("tls %s: %v: give the path of a readable PEM file", field, err)}
	}
	return b, nil
}

// KeyPair parses the pair's PEM contents, as read by ReadFiles, into a
// certificate with its Leaf set. It is tls.X509KeyPair with errors, each a
// *CertError, that say which file is wrong and what to do. Validity dates
// are not checked here: see CertWarning.
func (c Certificate) KeyPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	leaf, err := c.leaf(certPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if _, hasKey := firstBlock(keyPEM, isKeyBlock); !hasKey {
			return tls.Certificate{}, &CertError{Field: "key", Err: err,
				Msg: fmt.Sprintf(`tls key %q holds no PEM private key: give the file with the "-----BEGIN ... PRIVATE KEY-----" block of cert %q`, c.Key, c.Cert)}
		}
		return tls.Certificate{}, &CertError{Field: "key", Err: err,
			Msg: fmt.Sprintf("tls key %q does not go with cert %q (%v): give the private key the certificate was issued for", c.Key, c.Cert, err)}
	}
	if pair.Leaf == nil {
		pair.Leaf = leaf
	}
	return pair, nil
}

// leaf parses the first certificate of a PEM chain.
func (c Certificate) leaf(certPEM []byte) (*x509.Certificate, error) {
	block, ok := firstBlock(certPEM, func(t string) bool { return t == "CERTIFICATE" })
	if !ok {
		msg := fmt.Sprintf(`tls cert %q holds no PEM certificate: give a file with a "-----BEGIN CERTIFICATE-----" block`, c.Cert)
		if _, isKey := firstBlock(certPEM, isKeyBlock); isKey {
			msg = fmt.Sprintf("tls cert %q holds a private key, not a certificate: are cert and key swapped?", c.Cert)
		}
		return nil, &CertError{Field: "cert", Msg: msg}
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, &CertError{Field: "cert", Err: err,
			Msg: fmt.Sprintf("tls cert %q: its first certificate does not parse (%v): give a valid PEM certificate", c.Cert, err)}
	}
	return leaf, nil
}

// firstBlock returns the first PEM block whose type is wanted.
func firstBlock(data []byte, wanted func(typ string) bool) (*pem.Block, bool) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, false
		}
		if wanted(block.Type) {
			return block, true
		}
	}
}

func isKeyBlock(typ string) bool { return strings.HasSuffix(typ, "PRIVATE KEY") }

// CertExpiryWarning is how long before its NotAfter a certificate is
// warned about.
const CertExpiryWarning = 7 * 24 * time.Hour

// CertName is the name a certificate goes by in logs and metrics: its
// first DNS name, else its subject's common name, else "".
func CertName(leaf *x509.Certificate) string {
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames[0]
	}
	return leaf.Subject.CommonName
}

// CertWarning returns a warning about the certificate in file when, at
// now, it has expired, expires within CertExpiryWarning, or is not valid
// yet; else "". Clients refuse such a certificate, but sluice still serves
// it: an expired certificate must not take a site down harder than it is.
func CertWarning(file string, leaf *x509.Certificate, now time.Time) string {
	const layout = "2006-01-02 15:04 MST"
	what := fmt.Sprintf("tls cert %q", file)
	if name := CertName(leaf); name != "" {
		what += " (" + name + ")"
	}
	switch until := leaf.NotAfter.Sub(now); {
	case until <= 0:
		return fmt.Sprintf("%s expired %s: clients refuse it; renew it", what, leaf.NotAfter.UTC().Format(layout))
	case until <= CertExpiryWarning:
		return fmt.Sprintf("%s expires %s, in %s: renew it", what, leaf.NotAfter.UTC().Format(layout), roughly(until))
	case now.Before(leaf.NotBefore):
		return fmt.Sprintf("%s is not valid before %s: clients refuse it until then; check the clock", what, leaf.NotBefore.UTC().Format(layout))
	}
	return ""
}

// roughly says how long d is, in days, or in hours and minutes under a day.
func roughly(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= 2*day:
		return fmt.Sprintf("%d days", d/day)
	case d >= day:
		return "1 day"
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// tls checks a listener's tls block: its files must be usable PEM, each
// key must go with its certificate. A certificate out of its validity
// dates is a warning, not an error.
func (v *validator) tls(p string, t *TLS) {
	if len(t.Certificates) == 0 && t.ACME == nil {
		v.errorf(p+".certificates", "tls has no certificates: add certificates: [{cert: FILE, key: FILE}] (the first is the default)")
	}
	v.oneOf(p+".min_version", "tls.min_version", t.MinVersion, "1.2", "1.3")
	if t.ClientCA != "" {
		if _, err := loadCA(t.ClientCA); err != nil {
			v.errorf(p+".client_ca", "tls.client_ca: %v: give a PEM file of the CA certificates that sign client certificates", err)
		}
	}
	for i, c := range t.Certificates {
		cp := index(p+".certificates", i)
		certPEM, certErr := readPEMFile("cert", c.Cert)
		keyPEM, keyErr := readPEMFile("key", c.Key)
		v.certError(cp, certErr)
		v.certError(cp, keyErr)
		if certErr != nil || keyErr != nil {
			continue
		}
		pair, err := c.KeyPair(certPEM, keyPEM)
		if err != nil {
			v.certError(cp, err)
			continue
		}
		if w := CertWarning(c.Cert, pair.Leaf, v.now); w != "" {
			v.warnf(cp+".cert", "%s", w)
		}
	}
	if t.ACME != nil {
		v.acme(p+".acme", t.ACME)
	}
}

// certError reports a *CertError at the cert or key of the pair at p.
func (v *validator) certError(p string, err error) {
	var ce *CertError
	if errors.As(err, &ce) {
		v.errorf(p+"."+ce.Field, "%s", ce.Msg)
	} else if err != nil {
		v.errorf(p, "%v", err)
	}
}
