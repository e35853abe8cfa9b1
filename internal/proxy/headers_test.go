package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

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
			got := clientIP(netip.MustParseAddr(tt.peer), headerFields(http.Header{"X-Forwarded-For": tt.xff}), trusted)
			if got.String() != tt.want {
				t.Errorf("clientIP = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	g := NewRequestIDs()
	a, b := g.Next(), g.Next()
	if a == b || !ValidRequestID(a) || !strings.HasPrefix(b, g.prefix) {
		t.Errorf("ids %q, %q: want distinct valid ids with prefix %q", a, b, g.prefix)
	}
	for _, bad := range []string{"", "a b", strings.Repeat("x", 201), "x\x00"} {
		if ValidRequestID(bad) {
			t.Errorf("ValidRequestID(%q) = true, want false", bad)
		}
	}
}
