package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/metrics"
	"github.com/sluice-lb/sluice/internal/ratelimit/redistest"
)

// counted is a backend that counts the requests it got.
func counted(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// metric reads one sample of s's metrics (-1 when absent).
func (s *sluice) metric(name string) float64 {
	s.t.Helper()
	rec := httptest.NewRecorder()
	metrics.NewHandler(s.srv).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(rec.Body.String())
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// check429 checks a refusal: the status, the body, and the fields with
// their exact values. Retry-After and RateLimit's t count down from the
// first request of the bucket, elapsed ago: they may be up to elapsed
// (rounded up) below the values given.
func check429(t *testing.T, r reply, name string, burst, window, retryAfter, reset int, elapsed time.Duration) {
	t.Helper()
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429 (body %q)", r.Status, r.Body)
	}
	if got := r.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" || r.Body != "too many requests: retry after the seconds Retry-After gives\n" {
		t.Errorf("429 body %q (%s), want sluice's short plain-text answer", r.Body, got)
	}
	if got, want := r.Header.Get("RateLimit-Policy"), fmt.Sprintf(`"%s";q=%d;w=%d`, name, burst, window); got != want {
		t.Errorf("RateLimit-Policy = %q, want %q", got, want)
	}
	slack := int((elapsed + time.Second - 1) / time.Second)
	seconds := func(field, v string, want int) {
		n, err := strconv.Atoi(v)
		if err != nil || n > want || n < want-slack || n < 1 {
			t.Errorf("%s = %q, want %d (down to %d after %v)", field, v, want, max(1, want-slack), elapsed)
		}
	}
	seconds("Retry-After", r.Header.Get("Retry-After"), retryAfter)
	m := regexp.MustCompile(`^"` + regexp.QuoteMeta(name) + `";r=0;t=(\d+)$`).FindStringSubmatch(r.Header.Get("RateLimit"))
	if m == nil {
		t.Errorf(`RateLimit = %q, want "%s";r=0;t=N`, r.Header.Get("RateLimit"), name)
		return
	}
	seconds("RateLimit t", m[1], reset)
}

func withKey(t *testing.T, c *http.Client, url, header, value string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if header != "" {
		req.Header.Set(header, value)
	}
	return do(t, c, req)
}

func TestRateLimitListenerAndRoute(t *testing.T) {
	be, hits := counted(t)
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "public", Address: "127.0.0.1:0", Pool: "web", H2C: true,
			// 6 per hour per client address: about one per 10 minutes.
			RateLimit: &config.RateLimit{Rate: 6, Per: time.Hour},
			Routes: []config.Route{
				{PathPrefix: "/api", Pool: "web",
					// 2 per hour per API key: one per 30 minutes.
					RateLimit: &config.RateLimit{Key: "header:X-Api-Key", Rate: 2, Per: time.Hour, Name: "api"}},
				{PathPrefix: "/", Pool: "web"},
			}}},
		Pools:           []config.Pool{{Name: "web", Backends: []config.Backend{{Address: be.URL}}}},
		Admin:           config.Admin{Address: "127.0.0.1:0"},
		ShutdownTimeout: 5 * time.Second,
	}
	s := startSluice(t, cfg)
	c := newClient(t)
	url := s.URL("public")
	start := time.Now()

	// The route's limit counts per API key: key a has 2.
	for i := range 2 {
		if r := withKey(t, c, url+"/api/x", "X-Api-Key", "a"); r.Status != 200 {
			t.Fatalf("api request %d of key a: status %d, want 200", i+1, r.Status)
		}
	}
	r := withKey(t, c, url+"/api/x", "X-Api-Key", "a")
	check429(t, r, "api", 2, 3600, 1800, 3600, time.Since(start))
	if r := withKey(t, c, url+"/api/x", "X-Api-Key", "b"); r.Status != 200 {
		t.Errorf("key b's first request: status %d, want 200 (its own bucket)", r.Status)
	}
	// The listener's limit counted all four (the refused one too): two are
	// left for this client, on any path, over HTTP/1.1 or HTTP/2.
	if r := get(t, c, url+"/other"); r.Status != 200 {
		t.Errorf("5th request of the client: %d, want 200", r.Status)
	}
	if r := get(t, h2cClient(t), url+"/other"); r.Status != 200 {
		t.Errorf("6th request of the client, over HTTP/2: %d, want 200", r.Status)
	}
	check429(t, get(t, c, url+"/other"), "public", 6, 3600, 600, 3600, time.Since(start))
	check429(t, get(t, h2cClient(t), url+"/api/x"), "public", 6, 3600, 600, 3600, time.Since(start))

	if got := hits.Load(); got != 5 {
		t.Errorf("the backend got %d requests, want 5: a refused request never reaches it", got)
	}
	if got := s.metric(`sluice_rate_limited_total{listener="public"}`); got != 3 {
		t.Errorf("sluice_rate_limited_total = %v, want 3 (one of the route's, two of the listener's)", got)
	}
	if got := s.metric(`sluice_requests_total{backend="",code="429",listener="public",pool=""}`); got != 3 {
		t.Errorf("429s in sluice_requests_total = %v, want 3", got)
	}
}

// redisConfig is a listener limited to 10 per hour per X-Client, shared
// through the Redis at addr.
func redisConfig(backend, addr string) *config.Config {
	return &config.Config{
		Listeners: []config.Listener{{Name: "public", Address: "127.0.0.1:0", Pool: "web",
			RateLimit: &config.RateLimit{Key: "header:X-Client", Rate: 10, Per: time.Hour}}},
		Pools:           []config.Pool{{Name: "web", Backends: []config.Backend{{Address: backend}}}},
		Admin:           config.Admin{Address: "127.0.0.1:0"},
		ShutdownTimeout: 5 * time.Second,
		RateLimitStore:  &config.RateLimitStore{Redis: &config.RedisStore{Address: addr, Prefix: "e2e:"}},
	}
}

func TestRateLimitSharedThroughRedis(t *testing.T) {
	rs := redistest.Start(t)
	be, _ := counted(t)
	fleet := []*sluice{startSluice(t, redisConfig(be.URL, rs.Addr)), startSluice(t, redisConfig(be.URL, rs.Addr))}
	c := newClient(t)
	shared := func(want float64) {
		t.Helper()
		for i, s := range fleet {
			eventually(t, 10*time.Second, fmt.Sprintf("instance %d: sluice_rate_limit_store_up is %v", i, want), func() bool {
				return s.metric("sluice_rate_limit_store_up") == want
			})
		}
	}
	// through sends n requests of client through the instances in turn and
	// counts the 200s.
	through := func(instances []*sluice, client string, n int) int {
		ok := 0
		for i := range n {
			r := withKey(t, c, instances[i%len(instances)].URL("public"), "X-Client", client)
			switch r.Status {
			case 200:
				ok++
			case 429:
			default:
				t.Fatalf("status %d, want 200 or 429", r.Status)
			}
		}
		return ok
	}
	shared(1)
	if got := through(fleet, "alice", 30); got != 10 {
		t.Errorf("Redis up: %d of 30 requests through two instances allowed, want 10 (one limit for both)", got)
	}
	for _, k := range rs.Keys() {
		if k != "e2e:public:alice" {
			t.Errorf("Redis holds key %q, want only e2e:public:alice", k)
		}
	}

	// Redis dies: each instance counts alone, with the full limit.
	rs.Stop()
	for i, s := range fleet {
		if got := through([]*sluice{s}, "bob", 25); got != 10 {
			t.Errorf("Redis down: instance %d allowed %d of 25, want 10 (its own limit: never none, never all refused)", i, got)
		}
	}
	shared(0)
	for i, s := range fleet {
		if got := s.metric("sluice_rate_limit_store_errors_total"); got < 1 {
			t.Errorf("instance %d: sluice_rate_limit_store_errors_total = %v, want at least 1", i, got)
		}
	}

	// Redis is back: shared again.
	rs.Start()
	shared(1)
	if got := through(fleet, "carol", 30); got != 10 {
		t.Errorf("Redis back: %d of 30 requests through two instances allowed, want 10", got)
	}
}

func TestRateLimitKeptAcrossReload(t *testing.T) {
	be, _ := counted(t)
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	write := func(rate, weight int) {
		t.Helper()
		yaml := withEngineYAML(fmt.Sprintf(`listeners:
  - name: public
    address: "127.0.0.1:0"
    pool: web
    rate_limit: {rate: %d, per: 1h}
pools:
  - name: web
    backends: [{address: %q, weight: %d}]
admin: {address: "127.0.0.1:0"}
access_log: {format: "off"}
shutdown_timeout: 5s
`, rate, be.URL, weight))
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(3, 1)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	s := startSluice(t, cfg)
	c := newClient(t)
	status := func() int { return get(t, c, s.URL("public")).Status }
	for range 3 {
		status()
	}
	if got := status(); got != 429 {
		t.Fatalf("4th request of 3 per hour: %d, want 429", got)
	}
	reload := func() {
		t.Helper()
		if err := s.srv.Reload(); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	write(3, 2) // the limit is as it was
	reload()
	if got := status(); got != 429 {
		t.Errorf("after a reload that kept the limit: %d, want 429 (the bucket is kept)", got)
	}
	write(4, 2) // a new limit: new buckets
	reload()
	if got := status(); got != 200 {
		t.Errorf("after a reload that changed the limit: %d, want 200 (a new bucket)", got)
	}
}
