package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
	setForwarded(h, netip.MustParseAddr("127.0.0.1"), false, "example.com", false)
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
			setForwarded(tt.in, netip.MustParseAddr("10.0.0.1"), tt.trusted, "h", tt.tls)
			if diff := cmp.Diff(tt.want, tt.in); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name string
		peer string
		xff  []string
		want string
	}{
		{"untrusted peer", "1.1.1.1", []string{"9.9.9.9"}, "1.1.1.1"},
		{"trusted peer, one hop", "10.0.0.1", []string{"9.9.9.9"}, "9.9.9.9"},
		{"skips trusted hops from the right", "10.0.0.1", []string{"9.9.9.9, 10.1.1.1"}, "9.9.9.9"},
		{"spoofed left entries ignored", "10.0.0.1", []string{"6.6.6.6", "8.8.8.8"}, "8.8.8.8"},
		{"garbage stops the walk", "10.0.0.1", []string{"9.9.9.9, junk"}, "10.0.0.1"},
		{"no header", "10.0.0.1", nil, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clientIP(netip.MustParseAddr(tt.peer), stdFields(http.Header{"X-Forwarded-For": tt.xff}), trusted)
			if got.String() != tt.want {
				t.Errorf("clientIP = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	g := NewRequestIDs()
	a, b := g.Next(), g.Next()
	if a == b || !validRequestID(a) || !strings.HasPrefix(b, g.prefix) {
		t.Errorf("ids %q, %q: want distinct valid ids with prefix %q", a, b, g.prefix)
	}
	for _, bad := range []string{"", "a b", strings.Repeat("x", 201), "x\x00"} {
		if validRequestID(bad) {
			t.Errorf("validRequestID(%q) = true, want false", bad)
		}
	}
}
