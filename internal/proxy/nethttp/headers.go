package nethttp

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/sluice-lb/sluice/internal/proxy"
)

// removeHopHeaders deletes hop-by-hop fields from h (proxy.HopFields),
// including every field that a Connection header names. It runs before
// sluice adds its own headers, so a client cannot name X-Forwarded-For in
// Connection to strip what sluice sets.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range proxy.HopFields {
		h.Del(name)
	}
}

// upgradeType returns the protocol a request asks to upgrade to, in lower
// case, when it carries both "Connection: upgrade" and an Upgrade header.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h.Get("Upgrade")))
}

// setForwarded applies the core's forwarding decision f to an outbound
// header map from which hop-by-hop fields are already removed. one makes
// the value list of a field (the request's preallocated ones); the names
// are canonical constants, so each assignment is out.Set's.
func setForwarded(out http.Header, f *proxy.Forwarding, one func(string) []string) {
	var buf [64]byte // an address and then some: the string is the only allocation
	xff := string(f.AppendFor(buf[:0], stdFields(out)))
	for name := range out {
		if f.Drops(name) {
			delete(out, name)
		}
	}
	out["X-Forwarded-For"] = one(xff)
	if !f.KeepProto {
		out["X-Forwarded-Proto"] = one(f.Proto)
	}
	if !f.KeepHost && f.Host != "" {
		out["X-Forwarded-Host"] = one(f.Host)
	}
	if f.ClientCert != "" {
		out["X-Forwarded-Client-Cert"] = one(f.ClientCert)
	}
}
