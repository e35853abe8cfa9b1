package proxy

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/sluice-lb/sluice/internal/edge"
)

func TestHashKeyExtract(t *testing.T) {
	r := &http.Request{
		Header: http.Header{"X-User": {"alice"}, "Cookie": {"a=1; sid=xyz; b=2"}},
		URL:    &url.URL{RawQuery: "x=1&user=bob&y"},
	}
	tests := []struct{ key, want string }{
		{"header:x-user", "alice"},
		{"header:X-Missing", ""},
		{"cookie:sid", "xyz"},
		{"cookie:nope", ""},
		{"path", "/p"},
		{"query:user", "bob"},
		{"query:y", ""},
		{"client_ip", ""},
	}
	// The same request as the engine sees it.
	head := []byte("GET /p?x=1&user=bob&y HTTP/1.1\r\nHost: h\r\nx-user: alice\r\ncookie: a=1; sid=xyz; b=2\r\n\r\n")
	var eh edge.Head
	if _, err := edge.ParseRequestHead(head, edge.Limits{}, &eh); err != nil {
		t.Fatal(err)
	}
	raw := &rawFields{head: head, first: edge.FirstField(head, eh.Lead)}
	for name, h := range map[string]fields{"net/http": stdFields(r.Header), "raw": raw} {
		for _, tt := range tests {
			if got := ParseHashKey(tt.key).extract(h, "/p", r.URL.RawQuery); got != tt.want {
				t.Errorf("%s %s: got %q, want %q", name, tt.key, got, tt.want)
			}
		}
		if n := testing.AllocsPerRun(100, func() { ParseHashKey("cookie:sid").extract(h, "/p", "") }); n != 0 {
			t.Errorf("%s: cookie extraction allocates %v times, want 0", name, n)
		}
	}
}
