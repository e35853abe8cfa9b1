package h2

import (
	"net/url"
	"testing"
)

// TestValidRequestURI: validRequestURI answers as url.ParseRequestURI does
// for every target a stream may carry ("*" or beginning with "/"), so that
// a stream the loop forwards is refused exactly when one a worker serves is.
func TestValidRequestURI(t *testing.T) {
	targets := []string{"*", "/", "/a", "/a?b", "/a?", "/%41", "/%4", "/%", "/a%zz", "/a?%zz", "/a?b=%",
		"/%41%42?%", "/a b", "/a\x7f", "/a\tb", "/a?\x01", "//x", "/:x", "/a#b", "/%2F%2f", "/\xff", "/a??",
		"/x%", "/x%4g", "/x%g4", "/?a=%41&b"}
	// And every two-byte tail, over the bytes that matter.
	for _, a := range []byte{'%', '?', '4', 'g', 'F', 0, ' ', 0x7f, 0x80, '#'} {
		for _, b := range []byte{'%', '?', '4', 'g', 'F', 0, ' ', 0x7f, 0x80, '#'} {
			targets = append(targets, "/"+string([]byte{a, b}), "/%"+string([]byte{a, b}), "/?%"+string([]byte{a, b}))
		}
	}
	for _, p := range targets {
		_, err := url.ParseRequestURI(p)
		if got, want := validRequestURI(p), err == nil; got != want {
			t.Errorf("validRequestURI(%q) = %v, url.ParseRequestURI says %v (%v)", p, got, want, err)
		}
	}
}
