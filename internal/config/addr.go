package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// ParseBackendAddress parses a backend address: http://host:port,
// https://host:port or tcp://host:port, with no path, query or user info (a
// lone trailing "/" is allowed and dropped). Validate uses it, and so does
// the admin API when it adds a backend.
func ParseBackendAddress(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" || u.Host == "" {
		return nil, fmt.Errorf("bad backend address %q: write scheme://host:port with scheme http, https or tcp, e.g. \"http://10.0.0.5:8080\"", s)
	}
	switch u.Scheme {
	case "http", "https", "tcp":
	default:
		return nil, fmt.Errorf("backend address %q has scheme %q: use http, https or tcp", s, u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("backend address %q has user info: remove it", s)
	}
	host, port := u.Hostname(), u.Port()
	if !validHost(host) {
		return nil, fmt.Errorf("backend address %q has a bad host %q: use an IP address or a host name", s, host)
	}
	if port == "" {
		return nil, fmt.Errorf("backend address %q has no port: add one, e.g. %q", s, u.Scheme+"://"+u.Host+":8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("backend address %q has a bad port %q: use 1 to 65535", s, port)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("backend address %q has a path or query: remove it (sluice forwards the client's path unchanged)", s)
	}
	u.Path, u.RawPath = "", ""
	return u, nil
}

// checkHostPort checks a listen address such as ":8080" or "127.0.0.1:0";
// key names it in the message.
func checkHostPort(key, s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%s %q is not host:port: write e.g. \":8080\" or \"127.0.0.1:8080\"", key, s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s %q has a bad port %q: use 0 to 65535", key, s, port)
	}
	if host != "" && !validHost(host) {
		return fmt.Errorf("%s %q has a bad host %q: use an IP address or a host name", key, s, host)
	}
	return nil
}

// isLoopback reports whether a host:port only listens on this machine.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// validHost reports whether s is an IP address or a DNS host name.
func validHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// parsePrefix parses a CIDR, or a bare IP as a one-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address %q has a zone", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// isToken reports whether s is a non-empty HTTP token (RFC 9110), as header
// and cookie names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > '~' || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}
