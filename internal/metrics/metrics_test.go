package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

type roundRobinish struct{}

func (roundRobinish) Build(s pool.Set) pool.Picker { return first(s.Ready) }

type first []*pool.Backend

func (f first) Pick(*pool.PickInfo) *pool.Backend {
	if len(f) == 0 {
		return nil
	}
	return f[0]
}

type source struct {
	pools []*pool.Pool
	lis   []Listener
}

func (s *source) Pools() []*pool.Pool       { return s.pools }
func (s *source) Listeners() []Listener     { return s.lis }
func (s *source) ListenerName(i int) string { return []string{"public", "internal"}[i] }
func (s *source) Reloads() (uint64, uint64, bool) {
	return 3, 1, false
}
func (s *source) DiscoveryErrors(fn func(pool, source string, n uint64)) { fn("web", "dns", 2) }
func (s *source) AccessLogDropped() uint64                               { return 7 }
func (s *source) TraceSpans() (uint64, uint64)                           { return 11, 2 }
func (s *source) RateLimitStore() (uint64, bool, bool)                   { return 4, true, false }
func (s *source) Build() Build {
	return Build{Version: "v1.2.3", Revision: "abcdef123456", GoVersion: "go1.26.8"}
}

func TestExposition(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:8081")
	b := pool.NewBackend("http://127.0.0.1:8081", u, 1)
	p := pool.New("web", roundRobinish{}, []*pool.Backend{b})
	b.Stats.Observe(0, 200, 3*time.Millisecond)
	b.Stats.Observe(0, 200, 30*time.Millisecond)
	b.Stats.Observe(1, 502, time.Second)
	b.Stats.ChecksPassed.Add(4)
	b.InFlight.Store(2)
	p.NoBackend.Observe(0, 503, time.Millisecond)
	p.Retries.Add(5)
	noPool := &pool.Stats{}
	noPool.Observe(0, 404, time.Millisecond)
	b.Stats.BytesIn.Add(100)
	b.Stats.BytesOut.Add(2000)
	p.QueueWait.Observe(20 * time.Millisecond)
	for range 4 { // the budget's minimum is 3 retries: the fourth is refused
		p.Budget.Allow()
	}
	b.Stats.Duration.Exemplify(&pool.Exemplar{TraceID: [16]byte{0x4b, 0xf9}, Value: 30 * time.Millisecond, At: time.Unix(1700000000, 0)})
	ls := &proxy.ListenerStats{}
	ls.Observe(proxy.HTTP2, 200, 2*time.Millisecond)
	ls.Observe(proxy.HTTP11, 503, time.Millisecond)
	ls.Observe(proxy.HTTP11, 201, time.Millisecond)
	src := &source{pools: []*pool.Pool{p}, lis: []Listener{{Name: "public", Active: 7, NoPool: noPool, Stats: ls, RateLimited: 9}}}

	text := scrape(t, src, "")
	for _, want := range []string{
		`sluice_requests_total{backend="http://127.0.0.1:8081",code="200",listener="public",pool="web"} 2`,
		`sluice_requests_total{backend="http://127.0.0.1:8081",code="502",listener="internal",pool="web"} 1`,
		`sluice_requests_total{backend="",code="503",listener="public",pool="web"} 1`,
		`sluice_requests_total{backend="",code="404",listener="public",pool=""} 1`,
		`sluice_request_duration_seconds_bucket{backend="http://127.0.0.1:8081",pool="web",le="0.005"} 1`,
		`sluice_request_duration_seconds_count{backend="http://127.0.0.1:8081",pool="web"} 3`,
		`sluice_backend_up{backend="http://127.0.0.1:8081",pool="web"} 1`,
		`sluice_backend_in_flight{backend="http://127.0.0.1:8081",pool="web"} 2`,
		`sluice_retries_total{pool="web"} 5`,
		`sluice_health_checks_total{backend="http://127.0.0.1:8081",pool="web",result="success"} 4`,
		`sluice_backend_ejections_total{backend="http://127.0.0.1:8081",pool="web"} 0`,
		`sluice_connections_active{listener="public"} 7`,
		`sluice_config_reloads_total{result="success"} 3`,
		`sluice_build_info{goversion="go1.26.8",revision="abcdef123456",version="v1.2.3"} 1`,
		`sluice_config_reloads_total{result="failure"} 1`,
		`sluice_config_last_reload_successful 0`,
		`sluice_discovery_errors_total{pool="web",source="dns"} 2`,
		`sluice_access_log_dropped_total 7`,
		`sluice_backend_bytes_in_total{backend="http://127.0.0.1:8081",pool="web"} 100`,
		`sluice_backend_bytes_out_total{backend="http://127.0.0.1:8081",pool="web"} 2000`,
		`sluice_pool_queue_wait_seconds_bucket{pool="web",le="0.025"} 1`,
		`sluice_pool_queue_wait_seconds_count{pool="web"} 1`,
		`sluice_retry_budget_exhausted_total{pool="web"} 1`,
		`sluice_listener_requests_total{code_class="2xx",listener="public",protocol="HTTP/2.0"} 1`,
		`sluice_listener_requests_total{code_class="2xx",listener="public",protocol="HTTP/1.1"} 1`,
		`sluice_listener_requests_total{code_class="5xx",listener="public",protocol="HTTP/1.1"} 1`,
		`sluice_listener_request_duration_seconds_count{code_class="2xx",listener="public"} 2`,
		`sluice_listener_request_duration_seconds_count{code_class="5xx",listener="public"} 1`,
		`sluice_listener_request_duration_seconds_count{code_class="4xx",listener="public"} 0`,
		`sluice_trace_spans_total{result="exported"} 11`,
		`sluice_trace_spans_total{result="failed"} 2`,
		`sluice_rate_limited_total{listener="public"} 9`,
		`sluice_rate_limit_store_errors_total 4`,
		`sluice_rate_limit_store_up 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want+" ") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}
}

// TestExemplars checks the OpenMetrics exposition carries a traced
// request's trace id on the bucket its duration fell in.
func TestExemplars(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:8081")
	b := pool.NewBackend("http://127.0.0.1:8081", u, 1)
	p := pool.New("web", roundRobinish{}, []*pool.Backend{b})
	b.Stats.Observe(0, 200, 30*time.Millisecond)
	b.Stats.Duration.Exemplify(&pool.Exemplar{TraceID: [16]byte{0x4b, 0xf9, 15: 1}, Value: 30 * time.Millisecond, At: time.Unix(1700000000, 0)})
	body := scrape(t, &source{pools: []*pool.Pool{p}}, "application/openmetrics-text; version=1.0.0")
	want := `sluice_request_duration_seconds_bucket{backend="http://127.0.0.1:8081",pool="web",le="0.05"} 1 # {trace_id="4bf90000000000000000000000000001"} 0.03 1.7e+09`
	if !strings.Contains(string(body), want) {
		t.Errorf("OpenMetrics exposition lacks the exemplar %q:\n%s", want, body)
	}
}

// TestLayer4Exposition: tcp:// backends get a connection counter (their
// bytes are the backends' bytes in and out), http ones do not; a
// listener's rejected connections show by reason.
func TestLayer4Exposition(t *testing.T) {
	tu, _ := url.Parse("tcp://127.0.0.1:5432")
	hu, _ := url.Parse("http://127.0.0.1:8081")
	tb, hb := pool.NewBackend("tcp://127.0.0.1:5432", tu, 1), pool.NewBackend("http://127.0.0.1:8081", hu, 1)
	tb.Stats.Connections.Add(3)
	tb.Stats.BytesIn.Add(100)
	tb.Stats.BytesOut.Add(1 << 20)
	src := &source{pools: []*pool.Pool{pool.New("db", roundRobinish{}, []*pool.Backend{tb}), pool.New("web", roundRobinish{}, []*pool.Backend{hb})},
		lis: []Listener{{Name: "l4", Rejected: map[string]uint64{"proxy_invalid": 2, "no_backend": 1}}}}
	text := scrape(t, src, "")
	for _, want := range []string{
		`sluice_backend_connections_total{backend="tcp://127.0.0.1:5432",pool="db"} 3`,
		`sluice_backend_bytes_in_total{backend="tcp://127.0.0.1:5432",pool="db"} 100`,
		`sluice_backend_bytes_out_total{backend="tcp://127.0.0.1:5432",pool="db"} 1.048576e+06`,
		`sluice_connections_rejected_total{listener="l4",reason="proxy_invalid"} 2`,
		`sluice_connections_rejected_total{listener="l4",reason="no_backend"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, `sluice_backend_connections_total{backend="http://127.0.0.1:8081"`) {
		t.Errorf("an http backend has a layer-4 connection counter")
	}
}

// TestAdminStateExposition: sluice_backend_up says whether a backend takes
// requests, sluice_backend_admin_state why not when an operator decided
// it: one series per state, 1 for the backend's, so that an alert can tell
// a drained backend from a failed one.
func TestAdminStateExposition(t *testing.T) {
	var bs []*pool.Backend
	for _, a := range []string{"http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083", "http://127.0.0.1:8084"} {
		u, _ := url.Parse(a)
		bs = append(bs, pool.NewBackend(a, u, 1))
	}
	p := pool.New("web", roundRobinish{}, bs)
	p.SetAdmin(bs[1], pool.Draining)
	p.SetAdmin(bs[2], pool.Disabled)
	p.SetHealth(bs[3], pool.Unhealthy, time.Time{})
	text := scrape(t, &source{pools: []*pool.Pool{p}}, "")
	for _, want := range []string{
		`sluice_backend_up{backend="http://127.0.0.1:8081",pool="web"} 1`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8081",pool="web",state="enabled"} 1`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8081",pool="web",state="draining"} 0`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8081",pool="web",state="disabled"} 0`,
		`sluice_backend_up{backend="http://127.0.0.1:8082",pool="web"} 0`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8082",pool="web",state="enabled"} 0`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8082",pool="web",state="draining"} 1`,
		`sluice_backend_up{backend="http://127.0.0.1:8083",pool="web"} 0`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8083",pool="web",state="disabled"} 1`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8083",pool="web",state="enabled"} 0`,
		// Failed, not set aside: down, and still enabled.
		`sluice_backend_up{backend="http://127.0.0.1:8084",pool="web"} 0`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8084",pool="web",state="enabled"} 1`,
		`sluice_backend_admin_state{backend="http://127.0.0.1:8084",pool="web",state="draining"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}
}

// scrape returns what the handler over src exposes, asked with accept
// (none when empty).
func scrape(t *testing.T, src *source, accept string) string {
	t.Helper()
	srv := httptest.NewServer(NewHandler(src))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
