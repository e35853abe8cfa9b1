package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Roots returns the pool of ca_root, or nil (the system's roots) when
// ca_root is "".
func (a ACME) Roots() (*x509.CertPool, error) {
	if a.CARoot == "" {
		return nil, nil
	}
	pool, err := loadCA(a.CARoot)
	if err != nil {
		return nil, fmt.Errorf("tls.acme.ca_root: %w", err)
	}
	return pool, nil
}

// acme checks a tls.acme block: names a CA can validate by HTTP-01 or
// TLS-ALPN-01, a usable directory URL and CA file, and a storage directory
// sluice can write (or create).
func (v *validator) acme(p string, a *ACME) {
	if len(a.Domains) == 0 {
		v.errorf(p+".domains", `tls.acme.domains is empty: list the names to obtain a certificate for, e.g. ["example.com", "www.example.com"]`)
	}
	seen := map[string]bool{}
	for i, d := range a.Domains {
		dp := index(p+".domains", i)
		name := strings.ToLower(strings.TrimSuffix(d, "."))
		switch {
		case strings.HasPrefix(name, "*."):
			v.errorf(dp, "tls.acme domain %q is a wildcard, which only DNS-01 can validate and sluice answers HTTP-01 and TLS-ALPN-01: list each name, or give a wildcard certificate under tls.certificates", d)
		case isIP(name):
			v.errorf(dp, "tls.acme domain %q is an IP address: list DNS names (clients reach sluice by them)", d)
		case !validHost(name) || !strings.Contains(name, ".") && name != "localhost":
			v.errorf(dp, `tls.acme domain %q is not a DNS name: write e.g. "example.com"`, d)
		case seen[name]:
			v.errorf(dp, "tls.acme domain %q is listed twice: remove one", d)
		}
		seen[name] = true
	}
	if a.Email != "" {
		if m, err := mail.ParseAddress(a.Email); err != nil || m.Address != a.Email {
			v.errorf(p+".email", `tls.acme.email %q is not an e-mail address: write e.g. "ops@example.com", or remove it`, a.Email)
		}
	}
	if u, err := url.Parse(a.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		v.errorf(p+".directory", `tls.acme.directory %q is not an https:// URL: give the CA's ACME directory, e.g. %q`, a.Directory, LetsEncrypt)
	}
	if a.CARoot != "" {
		if _, err := loadCA(a.CARoot); err != nil {
			v.errorf(p+".ca_root", "tls.acme.ca_root: %v: give a PEM file of the CA certificates the ACME server's HTTPS is signed by", err)
		}
	}
	if a.Storage == "" {
		v.errorf(p+".storage", "tls.acme.storage is empty: give a directory for the account key and certificates, e.g. /var/lib/sluice/acme")
	} else if err := writableDir(a.Storage); err != nil {
		v.errorf(p+".storage", "tls.acme.storage: %v", err)
	}
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}

// writableDir checks that path is a directory sluice can write, or that
// the nearest directory above it that exists is one (sluice creates the
// rest).
func writableDir(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	for dir := abs; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist) && dir != filepath.Dir(dir):
			continue
		case err != nil:
			return fmt.Errorf("%w: give a directory sluice can create or write", err)
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory: give a directory for the account key and certificates", dir)
		}
		if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
			if dir == abs {
				return fmt.Errorf("directory %s is not writable (%v): let the user sluice runs as write it", dir, err)
			}
			return fmt.Errorf("%s does not exist and %s is not writable to create it (%v): create it for the user sluice runs as", abs, dir, err)
		}
		return nil
	}
}
