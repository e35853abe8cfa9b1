package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// discovery checks a pool's discovery block.
func (v *validator) discovery(p string, pl *Pool) {
	d := pl.Discovery
	if d.DNS == nil && d.Etcd == nil {
		v.errorf(p, "discovery has no source: add dns or etcd under it, or remove it")
	}
	if dns := d.DNS; dns != nil {
		v.dnsDiscovery(p+".dns", dns, pl)
	}
	if e := d.Etcd; e != nil {
		v.etcdDiscovery(p+".etcd", e)
	}
}

func (v *validator) dnsDiscovery(p string, d *DNSDiscovery, pl *Pool) {
	if d.Name == "" {
		v.errorf(p+".name", `discovery.dns needs a name to resolve, e.g. "web.internal" or "_http._tcp.web.internal" (SRV)`)
	} else if _, err := netip.ParseAddr(d.Name); err == nil || !validHost(d.Name) {
		v.errorf(p+".name", "discovery.dns.name %q is not a DNS name: write e.g. \"web.internal\" (an address belongs under backends)", d.Name)
	}
	v.oneOf(p+".type", "discovery.dns.type", d.Type, "A", "AAAA", "SRV")
	if d.Type == "SRV" {
		if d.Port != 0 {
			v.errorf(p+".port", "discovery.dns.port has no effect with type SRV, whose records carry the port: remove it")
		}
	} else if d.Port < 1 || d.Port > 65535 {
		v.errorf(p+".port", "discovery.dns.port %d is out of range: type %s answers addresses only, so give the backends' port, 1 to 65535", d.Port, d.Type)
	}
	v.oneOf(p+".scheme", "discovery.dns.scheme", d.Scheme, "http", "https", "tcp")
	if l, ok := v.usedBy[pl.Name]; ok && d.Scheme == "tcp" {
		v.errorf(p+".scheme", "discovery.dns.scheme is tcp but http listener %q sends to pool %q: use http or https", l, pl.Name)
	}
	v.positive(p+".refresh", d.Refresh, "")
	if d.Resolver != "" {
		if err := checkResolver(d.Resolver); err != nil {
			v.errorf(p+".resolver", "%v", err)
		}
	}
}

// checkResolver checks a DNS server address: an IP address and a port.
func checkResolver(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf(`discovery.dns.resolver %q is not ip:port: write e.g. "10.0.0.2:53" or "[fd00::53]:53", or "" for the servers of /etc/resolv.conf`, s)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("discovery.dns.resolver %q must name the server by IP address (a name would itself need resolving): write e.g. \"10.0.0.2:53\"", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("discovery.dns.resolver %q has a bad port %q: use 1 to 65535 (DNS is 53)", s, port)
	}
	return nil
}

func (v *validator) etcdDiscovery(p string, e *EtcdDiscovery) {
	if len(e.Endpoints) == 0 {
		v.errorf(p+".endpoints", `discovery.etcd needs endpoints: write e.g. ["10.0.0.7:2379"]`)
	}
	for i, ep := range e.Endpoints {
		if err := checkEtcdEndpoint(ep, e.TLS != nil); err != nil {
			v.errorf(index(p+".endpoints", i), "%v", err)
		}
	}
	switch {
	case e.Prefix == "":
		v.errorf(p+".prefix", `discovery.etcd needs a prefix, e.g. "/sluice/pools/web/"`)
	case !strings.HasSuffix(e.Prefix, "/"):
		v.errorf(p+".prefix", "discovery.etcd.prefix %q must end with \"/\", so that it does not also take the keys of %q: write %q", e.Prefix, e.Prefix+"2/", e.Prefix+"/")
	}
	switch {
	case e.Username != "" && e.PasswordFile == "":
		v.errorf(p+".password_file", "discovery.etcd.username needs a password_file too")
	case e.Username == "" && e.PasswordFile != "":
		v.errorf(p+".username", "discovery.etcd.password_file needs a username too")
	case e.PasswordFile != "":
		if _, err := e.Password(); err != nil {
			v.errorf(p+".password_file", "%v", err)
		}
	}
	if t := e.TLS; t != nil {
		if t.CA != "" {
			if _, err := loadCA(t.CA); err != nil {
				v.errorf(p+".tls.ca", "discovery.etcd.tls.ca: %v", err)
			}
		}
		switch {
		case (t.Cert == "") != (t.Key == ""):
			v.errorf(p+".tls", "discovery.etcd.tls needs both cert and key for a client certificate, or neither")
		case t.Cert != "":
			certPEM, certErr := readPEMFile("cert", t.Cert)
			keyPEM, keyErr := readPEMFile("key", t.Key)
			v.certError(p+".tls", certErr)
			v.certError(p+".tls", keyErr)
			if certErr == nil && keyErr == nil {
				if _, err := (Certificate{Cert: t.Cert, Key: t.Key}).KeyPair(certPEM, keyPEM); err != nil {
					v.certError(p+".tls", err)
				}
			}
		}
	}
}

// checkEtcdEndpoint checks one etcd endpoint: host:port, or a URL with
// scheme http or https and a port.
func checkEtcdEndpoint(ep string, withTLS bool) error {
	hostport := ep
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf(`etcd endpoint %q is not host:port or http(s)://host:port: write e.g. "10.0.0.7:2379"`, ep)
		}
		if u.Scheme == "http" && withTLS {
			return fmt.Errorf("etcd endpoint %q is http:// but discovery.etcd.tls is set: write https:// or host:port", ep)
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || !validHost(host) {
		return fmt.Errorf(`etcd endpoint %q is not host:port: write e.g. "10.0.0.7:2379"`, ep)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("etcd endpoint %q has a bad port %q: use 1 to 65535 (etcd listens on 2379)", ep, port)
	}
	return nil
}

// Password reads PasswordFile ("" when none is set): its first line,
// without surrounding white space.
func (e EtcdDiscovery) Password() (string, error) {
	if e.PasswordFile == "" {
		return "", nil
	}
	b, err := readSmallFile(e.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("discovery.etcd.password_file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	if pw = strings.TrimSpace(pw); pw == "" {
		return "", fmt.Errorf("discovery.etcd.password_file %s is empty", e.PasswordFile)
	}
	return pw, nil
}

// ClientConfig builds the TLS config for connections to etcd. Validate
// has checked the files; an error here means they changed since.
func (t EtcdTLS) ClientConfig() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		roots, err := loadCA(t.CA)
		if err != nil {
			return nil, fmt.Errorf("discovery.etcd.tls.ca: %w", err)
		}
		c.RootCAs = roots
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("discovery.etcd.tls: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}
