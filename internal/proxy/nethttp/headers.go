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
// header map from which hop-by-hop fields are already removed.
func setForwarded(out http.Header, f *proxy.Forwarding) {
	xff := string(f.AppendFor(nil, stdFields(out)))
	for name := range out {
		if f.Drops(name) {
			delete(out, name)
		}
	}
	out.Set("X-Forwarded-For", xff)
	if !f.KeepProto {
		out.Set("X-Forwarded-Proto", f.Proto)
	}
	if !f.KeepHost && f.Host != "" {
		out.Set("X-Forwarded-Host", f.Host)
	}
	if f.ClientCert != "" {
		out.Set("X-Forwarded-Client-Cert", f.ClientCert)
	}
}
