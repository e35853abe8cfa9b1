package proxy

import (
	"net/http"
	"net/url"
	"testing"
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
	for name, h := range map[string]Fields{"header": headerFields(r.Header)} {
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

// headerFields is http.Header as Fields, for tests of the core (each codec
// tests its own view against these same expectations).
type headerFields http.Header

func (h headerFields) Get(name string) string { return http.Header(h).Get(name) }

func (h headerFields) Value(name string, i int) (string, bool) {
	if v := h[name]; i < len(v) {
		return v[i], true
	}
	return "", false
}
