package e2e

import (
	"net/http"
	"strings"
	"testing"
)

func TestForwardedHeadersAndRequestID(t *testing.T) {
	b := startBackend(t, "echo")
	cfg := oneListener(poolOf("web", b))
	trusted := cfg.Listeners[0]
	trusted.Name, trusted.TrustedProxies = "trusted", []string{"127.0.0.1/32"}
	cfg.Listeners = append(cfg.Listeners, trusted)
	s := startSluice(t, cfg)
	c := newClient(t)

	send := func(t *testing.T, listener string, hdr map[string]string) (echo, reply) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.URL(listener)+"/echo", nil)
		req.Host = "shop.example:8443"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		r := do(t, c, req)
		if r.Status != 200 {
			t.Fatalf("status %d, want 200; body %q", r.Status, r.Body)
		}
		return parseEcho(t, r.Body), r
	}

	for _, tc := range []struct {
		name     string
		listener string
		xff      string // sent by the client ("" for none)
		wantXFF  string
	}{
		{"no X-Forwarded-For", "public", "", "127.0.0.1"},
		{"untrusted peer: replaced", "public", "1.2.3.4", "127.0.0.1"},
		{"trusted peer: appended", "trusted", "1.2.3.4", "1.2.3.4, 127.0.0.1"},
		{"trusted peer, none sent", "trusted", "", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.xff != "" {
				hdr["X-Forwarded-For"] = tc.xff
			}
			e, r := send(t, tc.listener, hdr)
			if got := strings.Join(e.Headers.Values("X-Forwarded-For"), ", "); got != tc.wantXFF {
				t.Errorf("backend saw X-Forwarded-For %q, want %q", got, tc.wantXFF)
			}
			if got := e.Headers.Get("X-Forwarded-Proto"); got != "http" {
				t.Errorf("backend saw X-Forwarded-Proto %q, want http", got)
			}
			if got := e.Headers.Get("X-Forwarded-Host"); got != "shop.example:8443" {
				t.Errorf("backend saw X-Forwarded-Host %q, want the client's Host shop.example:8443", got)
			}
			id := r.Header.Get("X-Request-Id")
			if id == "" {
				t.Fatalf("no X-Request-Id returned to the client; header %v", r.Header)
			}
			if got := e.Headers.Get("X-Request-Id"); got != id {
				t.Errorf("backend saw X-Request-Id %q, client got %q", got, id)
			}
		})
	}

	t.Run("generated request ids differ", func(t *testing.T) {
		_, r1 := send(t, "public", nil)
		_, r2 := send(t, "public", nil)
		if a, b := r1.Header.Get("X-Request-Id"), r2.Header.Get("X-Request-Id"); a == "" || a == b {
			t.Errorf("two requests got X-Request-Id %q and %q, want two different ids", a, b)
		}
	})
	t.Run("client request id kept end to end", func(t *testing.T) {
		const id = "client-chosen-id-42"
		e, r := send(t, "public", map[string]string{"X-Request-Id": id})
		if got := e.Headers.Get("X-Request-Id"); got != id {
			t.Errorf("backend saw X-Request-Id %q, want %q", got, id)
		}
		if got := r.Header.Get("X-Request-Id"); got != id {
			t.Errorf("client got X-Request-Id %q, want %q", got, id)
		}
	})
}

func TestHopByHopHeadersAreNotForwarded(t *testing.T) {
	b := startBackend(t, "echo")
	s := startSluice(t, oneListener(poolOf("web", b)))
	r := rawConversation(t, s.Addr("public"), "GET /echo HTTP/1.1\r\n"+
		"Host: hop.example\r\n"+
		"Connection: X-Forwarded-For, X-Custom\r\n"+
		"X-Custom: 1\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"Upgrade: h2c\r\n"+
		"X-Kept: yes\r\n"+
		"\r\n", 1, 0)[0]
	if r.Status != 200 {
		t.Fatalf("status line %q, want 200", r.StatusLine)
	}
	e := parseEcho(t, r.Body)
	for _, name := range []string{"X-Custom", "Keep-Alive", "Proxy-Connection", "Upgrade", "Connection"} {
		if v := e.Headers.Values(name); len(v) > 0 {
			t.Errorf("backend saw hop-by-hop %s: %q", name, v)
		}
	}
	if got := e.Headers.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("backend saw X-Forwarded-For %q, want sluice's 127.0.0.1 (a client naming it in Connection must not strip it)", got)
	}
	if got := e.Headers.Get("X-Kept"); got != "yes" {
		t.Errorf("backend saw X-Kept %q, want yes (end-to-end headers pass)", got)
	}
}

func TestBackendReceivesTheNormalisedPath(t *testing.T) {
	b := startBackend(t, "echo")
	s := startSluice(t, oneListener(poolOf("web", b)))
	for _, target := range []string{"/echo", "/a/../echo", "//echo", "/%65cho", "/./echo", "/a/b/../../echo"} {
		t.Run(target, func(t *testing.T) {
			r := rawExchange(t, s.Addr("public"), "GET "+target+" HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n")
			if r.Status != 200 {
				t.Fatalf("status line %q, want 200; body %q", r.StatusLine, r.Body)
			}
			if e := parseEcho(t, r.Body); e.Path != "/echo" {
				t.Fatalf("backend saw path %q, want /echo", e.Path)
			}
		})
	}
}
