package admin

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// An address put in the path without escaping gets a 400 that names the
// escaped URL to call, and that URL works; the runtime is not called with
// the bad one.
func TestUnescapedAddress(t *testing.T) {
	const escaped = "/api/v1/pools/web/backends/http%3A%2F%2F127.0.0.1%3A8081"
	const msg = `the backend address "http://127.0.0.1:8081" must be escaped in the path: it is one segment, and its slashes would end it. ` +
		`Call %s %s instead (JavaScript: encodeURIComponent(address); shell: jq -rn --arg a ADDRESS '$a|@uri')`
	tests := []struct {
		name, method, path, body, want string
		wantCode                       int
	}{
		{"drain", "POST", "/api/v1/pools/web/backends/http://127.0.0.1:8081/drain", "", escaped + "/drain", 200},
		{"weight", "POST", "/api/v1/pools/web/backends/http://127.0.0.1:8081/weight", `{"weight": 2}`, escaped + "/weight", 200},
		{"delete", "DELETE", "/api/v1/pools/web/backends/http://127.0.0.1:8081", "", escaped, 202},
		{"get", "GET", "/api/v1/pools/web/backends/http://127.0.0.1:8081", "", escaped, 200},
		{"slashes already merged", "POST", "/api/v1/pools/web/backends/http:/127.0.0.1:8081/disable", "", escaped + "/disable", 200},
		{"query kept", "GET", "/api/v1/pools/web/backends/http://127.0.0.1:8081?x=1", "", escaped + "?x=1", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFake(t)
			srv := start(t, rt, Options{})
			got := call(t, srv, tt.method, tt.path, tt.body, nil)
			want := map[string]any{"error": fmt.Sprintf(msg, tt.method, tt.want)}
			if diff := cmp.Diff(any(want), decode(t, got)); got.code != 400 || diff != "" {
				t.Fatalf("%s %s = %d, want 400; body (-want +got):\n%s", tt.method, tt.path, got.code, diff)
			}
			if calls := rt.Calls(); len(calls) != 0 {
				t.Fatalf("runtime calls = %q, want none", calls)
			}
			if again := call(t, srv, tt.method, tt.want, tt.body, nil); again.code != tt.wantCode {
				t.Errorf("%s %s (the suggested URL) = %d %s, want %d", tt.method, tt.want, again.code, again.body, tt.wantCode)
			}
		})
	}
	t.Run("IPv6", func(t *testing.T) {
		srv := start(t, newFake(t), Options{})
		got := call(t, srv, "POST", "/api/v1/pools/api/backends/http://[::1]:9001/drain", "", nil)
		want := "/api/v1/pools/api/backends/http%3A%2F%2F%5B%3A%3A1%5D%3A9001/drain"
		if got.code != 400 {
			t.Fatalf("POST = %d %s, want 400", got.code, got.body)
		}
		if again := call(t, srv, "POST", want, "", nil); again.code != 200 {
			t.Errorf("POST %s = %d %s, want 200", want, again.code, again.body)
		}
	})
	t.Run("a path ServeMux would clean is a 400, not a redirect", func(t *testing.T) {
		rt := newFake(t)
		srv := start(t, rt, Options{})
		got := call(t, srv, "POST", "/api/v1//reload", "", nil)
		want := map[string]any{"error": `path "/api/v1//reload" is not clean (empty segments, . or ..): call /api/v1/reload instead`}
		if diff := cmp.Diff(any(want), decode(t, got)); got.code != 400 || diff != "" {
			t.Errorf("POST /api/v1//reload = %d, want 400; body (-want +got):\n%s", got.code, diff)
		}
		if calls := rt.Calls(); len(calls) != 0 {
			t.Errorf("runtime calls = %q, want none", calls)
		}
	})
}

func TestIsScheme(t *testing.T) {
	for seg, want := range map[string]bool{"http:": true, "https:": true, "tcp:": true, "svc+h2.x-y:": true,
		"http": false, ":": false, "1http:": false, "127.0.0.1:8081": false, "http%3A": false} {
		if got := isScheme(seg); got != want {
			t.Errorf("isScheme(%q) = %v, want %v", seg, got, want)
		}
	}
}
