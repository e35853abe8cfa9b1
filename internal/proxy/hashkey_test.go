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
	for _, tt := range tests {
		if got := ParseHashKey(tt.key).extract(r, "/p"); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.key, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ParseHashKey("cookie:sid").extract(r, "/p") }); n != 0 {
		t.Errorf("cookie extraction allocates %v times, want 0", n)
	}
}
