package nethttp

import (
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/health"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
)

// fixture is a handler over real loopback backends that name themselves.
type fixture struct {
	backends []*httptest.Server
	pool     *pool.Pool
	target   *proxy.Target
	proxy    *httptest.Server
}

func newFixture(t *testing.T, n int, policy pool.Policy, configure func(*proxy.Target)) *fixture {
	t.Helper()
	f := &fixture{}
	var bs []*pool.Backend
	for i := range n {
		name := string(rune('a' + i))
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			io.WriteString(w, name)
		}))
		t.Cleanup(srv.Close)
		f.backends = append(f.backends, srv)
		u, _ := url.Parse(srv.URL)
		bs = append(bs, pool.NewBackend(srv.URL, u, 1))
	}
	f.pool = pool.New("web", policy, bs)
	f.pool.Budget.SetPercent(100)
	timeouts := config.PoolTimeouts{Connect: time.Second, ResponseHeader: 5 * time.Second, Idle: time.Minute}
	up := proxy.NewUpstream(timeouts, nil)
	t.Cleanup(up.Close)
	f.target = &proxy.Target{Pool: f.pool, Health: health.New(f.pool, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), health.Options{}), Timeouts: timeouts, Upstream: up, RetryAfter: "1",
		Retries: config.Retries{NumRetries: 2, OnConnectFailure: true}}
	if configure != nil {
		configure(f.target)
	}
	var cur atomic.Pointer[proxy.Listener]
	cur.Store(&proxy.Listener{Name: "test", Routes: route.Compile(nil, "web", func(string) int { return 0 }),
		Targets: []*proxy.Target{f.target}, NoPool: &pool.Stats{}, Limits: config.Limits{}})
	h := NewHandler(&cur, proxy.NewRequestIDs(), slog.New(slog.NewTextHandler(io.Discard, nil)), &proxy.Tunnels{})
	f.proxy = httptest.NewServer(h)
	t.Cleanup(f.proxy.Close)
	return f
}

func (f *fixture) get(t *testing.T, cookie string) (backend string, setCookie string) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.proxy.URL+"/", nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := f.proxy.Client().Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	return resp.Header.Get("X-Backend"), resp.Header.Get("Set-Cookie")
}

func TestSticky(t *testing.T) {
	f := newFixture(t, 3, balance.RoundRobin{}, func(tg *proxy.Target) {
		tg.Sticky = proxy.NewSticky("AFF", time.Hour, proxy.StickyKey("s3cret"))
	})
	first, set := f.get(t, "")
	if !strings.HasPrefix(set, "AFF=") || !strings.Contains(set, "HttpOnly") || !strings.Contains(set, "SameSite=Lax") ||
		!strings.Contains(set, "Max-Age=3600") {
		t.Fatalf("Set-Cookie = %q, want AFF=…; HttpOnly; SameSite=Lax; Max-Age=3600", set)
	}
	if strings.Contains(set, "127.0.0.1") {
		t.Fatalf("Set-Cookie %q reveals the backend address", set)
	}
	cookie := strings.Split(set, ";")[0]
	for i := range 6 {
		got, again := f.get(t, "other=1; "+cookie)
		if got != first {
			t.Fatalf("request %d with the cookie went to %s, want %s", i, got, first)
		}
		if again != "" {
			t.Fatalf("request %d: cookie set again (%q) though it was honoured", i, again)
		}
	}
	// The sticky backend dies: its clients move, and get a new cookie.
	b := f.pool.Find(f.backends[first[0]-'a'].URL)
	f.pool.SetHealth(b, pool.Unhealthy, time.Time{})
	got, set2 := f.get(t, cookie)
	if got == first {
		t.Fatalf("with its backend down the request still went to %s", got)
	}
	if set2 == "" || strings.Split(set2, ";")[0] == cookie {
		t.Fatalf("after moving, Set-Cookie = %q, want a new cookie", set2)
	}
	// A forged cookie is ignored.
	if _, set3 := f.get(t, "AFF=forged"); set3 == "" {
		t.Fatalf("forged cookie: no new cookie set")
	}
}

func TestConnectFailureRetriedElsewhere(t *testing.T) {
	f := newFixture(t, 3, balance.RoundRobin{}, nil)
	f.backends[1].Close() // refuses connections now
	for i := range 9 {
		if got, _ := f.get(t, ""); got == "b" {
			t.Fatalf("request %d answered by the closed backend", i)
		}
	}
	b := f.pool.Find(f.backends[1].URL)
	if got, want := b.State(), "ejected"; got != want {
		t.Errorf("closed backend state = %q, want %q", got, want)
	}
	if got := b.Stats.Failures.Load(); got != 1 {
		t.Errorf("failures = %d, want 1: it leaves rotation after the first", got)
	}
}

// TestHTTPSBackend: an https:// backend verified against upstream_tls.ca.
func TestHTTPSBackend(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "over tls")
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		tls  config.UpstreamTLS
		want int
	}{
		{"verified with the CA", config.UpstreamTLS{CA: ca}, 200},
		{"unknown CA refused", config.UpstreamTLS{}, 502},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 0, balance.RoundRobin{}, func(tg *proxy.Target) {
				up := proxy.NewUpstream(tg.Timeouts, tt.tls.ClientConfig())
				t.Cleanup(up.Close)
				tg.Upstream = up
			})
			u, _ := url.Parse(srv.URL)
			f.pool.Add(pool.NewBackend(srv.URL, u, 1))
			resp, err := f.proxy.Client().Get(f.proxy.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d (%q), want %d", resp.StatusCode, body, tt.want)
			}
			if tt.want == 200 && string(body) != "over tls" {
				t.Errorf("body = %q", body)
			}
		})
	}
}
