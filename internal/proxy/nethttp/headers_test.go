package nethttp

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/proxy"
)

func TestRemoveHopHeaders(t *testing.T) {
	h := http.Header{
		"Connection":        {"X-Forwarded-For, x-custom", "keep-alive"},
		"X-Custom":          {"1"},
		"X-Forwarded-For":   {"1.2.3.4"},
		"Keep-Alive":        {"timeout=5"},
		"Proxy-Connection":  {"keep-alive"},
		"Upgrade":           {"h2c"},
		"Te":                {"trailers"},
		"Transfer-Encoding": {"chunked"},
		"Accept":            {"*/*"},
	}
	removeHopHeaders(h)
	// sluice then sets its own X-Forwarded-For: the client's Connection
	// header cannot remove what sluice adds, because removal comes first.
	setForwarded(h, forwarding(h, "127.0.0.1", false, "example.com", false), newOne)
	want := http.Header{
		"Accept":            {"*/*"},
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Forwarded-Proto": {"http"},
		"X-Forwarded-Host":  {"example.com"},
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

func TestSetForwarded(t *testing.T) {
	tests := []struct {
		name    string
		in      http.Header
		trusted bool
		tls     bool
		want    http.Header
	}{
		{"untrusted peer replaces everything", http.Header{
			"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"evil"},
			"Forwarded": {"for=1.2.3.4"}, "X-Real-Ip": {"1.2.3.4"}}, false, false,
			http.Header{"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"h"}}},
		{"trusted peer appends and keeps proto/host", http.Header{
			"X-Forwarded-For": {"1.2.3.4", "5.6.7.8"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"orig"}}, true, false,
			http.Header{"X-Forwarded-For": {"1.2.3.4, 5.6.7.8, 10.0.0.1"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"orig"}}},
		{"tls listener", http.Header{}, false, true,
			http.Header{"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"h"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setForwarded(tt.in, forwarding(tt.in, "10.0.0.1", tt.trusted, "h", tt.tls), newOne)
			if diff := cmp.Diff(tt.want, tt.in); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

// forwarding is the core's decision for a request from peer over h.
func forwarding(h http.Header, peer string, trusted bool, host string, tls bool) *proxy.Forwarding {
	l := &proxy.Listener{TLS: tls}
	if trusted {
		l.Trusted = []netip.Prefix{netip.MustParsePrefix(peer + "/32")}
	}
	f := l.NewForwarding(netip.MustParseAddr(peer), host, stdFields(h))
	return &f
}

// newOne is http.Header.Set's value list.
func newOne(v string) []string { return []string{v} }
