package route

import (
	"net/http"
	"testing"

	"github.com/sluice-lb/sluice/internal/config"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"", "/"},
		{"a/b", "/a/b"},
		{"//a///b", "/a/b"},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/../../etc/passwd", "/etc/passwd"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/a/", "/a/"},
		{"/%61%62c", "/abc"},
		{"/%2e%2e/secret", "/secret"},
		{"/a%2fb", "/a%2Fb"},
		{"/a%2Fb/../c", "/c"},
		{"/%7euser", "/~user"},
		{"/100%", "/100%25"}, {"/%%610", "/%25a0"},
		{"/.well-known/x", "/.well-known/x"},
		{"/a..b/c.", "/a..b/c."},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := NormalizePath(tt.in); got != tt.want {
				t.Errorf("NormalizePath(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalizePathNoAllocWhenNormal(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { NormalizePath("/api/v1/users/42") }); n != 0 {
		t.Errorf("allocs = %v, want 0", n)
	}
}

func TestMatch(t *testing.T) {
	pools := map[string]int{"api": 0, "canary": 1, "web": 2, "wild": 3}
	idx := func(n string) int { return pools[n] }
	tbl := Compile([]config.Route{
		{Host: "api.example.com", PathPrefix: "/v1", Pool: "api"},
		{Host: "*.wild.test", Pool: "wild"},
		{PathPrefix: "/", Headers: map[string]string{"x-canary": "1"}, Pool: "canary"},
	}, "web", idx)
	noDefault := Compile(nil, "", idx)

	tests := []struct {
		name string
		tbl  *Table
		host string
		path string
		hdr  http.Header
		want int
	}{
		{"host and prefix", tbl, "api.example.com", "/v1/users", nil, 0},
		{"host with port, any case", tbl, "API.example.com:8080", "/v1", nil, 0},
		{"host matches, prefix not", tbl, "api.example.com", "/v2", nil, 2},
		{"wildcard", tbl, "a.wild.test", "/", nil, 3},
		{"wildcard needs a label", tbl, "wild.test", "/", nil, 2},
		{"header", tbl, "other", "/x", http.Header{"X-Canary": {"1"}}, 1},
		{"header value differs", tbl, "other", "/x", http.Header{"X-Canary": {"2"}}, 2},
		{"default", tbl, "other", "/", http.Header{}, 2},
		{"no default", noDefault, "x", "/", http.Header{}, -1},
		{"ipv6 host", tbl, "[::1]:8080", "/", http.Header{}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.hdr
			if h == nil {
				h = http.Header{}
			}
			if got := tt.tbl.Match(tt.host, tt.path, h); got != tt.want {
				t.Errorf("Match(%q, %q) = %d, want %d", tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestMatchSNI(t *testing.T) {
	pools := map[string]int{"db": 0, "wild": 1, "other": 2}
	idx := func(n string) int { return pools[n] }
	tbl := Compile([]config.Route{
		{SNI: "db.example.com", Pool: "db"},
		{SNI: "*.wild.test", Pool: "wild"},
	}, "other", idx)
	noDefault := Compile([]config.Route{{SNI: "db.example.com", Pool: "db"}}, "", idx)
	tests := []struct {
		name string
		tbl  *Table
		sni  string
		want int
	}{
		{"exact", tbl, "db.example.com", 0},
		{"any case", tbl, "DB.Example.COM", 0},
		{"wildcard", tbl, "a.wild.test", 1},
		{"wildcard, deeper", tbl, "a.b.wild.test", 1},
		{"wildcard needs a label", tbl, "wild.test", 2},
		{"no match: default", tbl, "x.example.com", 2},
		{"no server name: default", tbl, "", 2},
		{"no match, no default", noDefault, "x.example.com", -1},
		{"no server name, no default", noDefault, "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tbl.MatchSNI(tt.sni); got != tt.want {
				t.Errorf("MatchSNI(%q) = %d, want %d", tt.sni, got, tt.want)
			}
		})
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//x/%2e%2E/y", "/%zz", "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got := NormalizePath(p)
		if got == "" || got[0] != '/' {
			t.Fatalf("NormalizePath(%q) = %q: must start with /", p, got)
		}
		if again := NormalizePath(got); again != got {
			t.Fatalf("not idempotent: %q → %q → %q", p, got, again)
		}
	})
}
