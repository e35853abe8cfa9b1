package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/config"
)

func TestRouting(t *testing.T) {
	bs := startBackends(t, "web", "api", "v2", "canary")
	routes := []config.Route{
		{Host: "api.example.com", Pool: "api"},
		{PathPrefix: "/v2", Pool: "v2"},
		{Headers: map[string]string{"X-Canary": "1"}, Pool: "canary"},
	}
	cfg := oneListener(poolOf("web", bs[0]), poolOf("api", bs[1]), poolOf("v2", bs[2]), poolOf("canary", bs[3]))
	cfg.Listeners[0].Routes = routes
	cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "nodefault", Address: "127.0.0.1:0", Routes: routes})
	s := startSluice(t, cfg)
	c := newClient(t)

	for _, tc := range []struct {
		name     string
		listener string
		host     string
		path     string
		header   map[string]string
		want     string // X-Backend; "" means sluice's own 404
	}{
		{"host route", "public", "api.example.com", "/", nil, "api"},
		{"host route ignores port and case", "public", "API.Example.com:8080", "/", nil, "api"},
		{"path prefix route", "public", "www.example.com", "/v2/items", nil, "v2"},
		{"header route", "public", "www.example.com", "/", map[string]string{"X-Canary": "1"}, "canary"},
		{"header route needs the value", "public", "www.example.com", "/", map[string]string{"X-Canary": "0"}, "web"},
		{"first match wins", "public", "api.example.com", "/v2/items", map[string]string{"X-Canary": "1"}, "api"},
		{"default pool", "public", "www.example.com", "/", nil, "web"},
		{"route without default pool", "nodefault", "www.example.com", "/v2/items", nil, "v2"},
		{"no route, no default pool: 404", "nodefault", "www.example.com", "/", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, s.URL(tc.listener)+tc.path, nil)
			req.Host = tc.host
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			r := do(t, c, req)
			got := r.Header.Get("X-Backend")
			if tc.want == "" {
				if r.Status != http.StatusNotFound || got != "" {
					t.Fatalf("status %d from backend %q, want sluice's own 404", r.Status, got)
				}
				if len(r.Body) == 0 || len(r.Body) > 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
					t.Errorf("404 body %q (%s), want a short plain text", r.Body, r.Header.Get("Content-Type"))
				}
				return
			}
			if got != tc.want {
				t.Fatalf("answered by %q (status %d), want %q", got, r.Status, tc.want)
			}
		})
	}

	t.Run("routes on the normalised path", func(t *testing.T) {
		r := rawExchange(t, s.Addr("nodefault"), "GET /x/..//v2/items HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
		if got := r.Header.Get("X-Backend"); got != "v2" {
			t.Fatalf("%q answered by %q, want v2", r.StatusLine, got)
		}
	})
}
