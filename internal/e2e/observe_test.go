package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scrape reads the admin address's /metrics into series → value (series
// as the text format writes them: name{labels}).
func scrape(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	r := get(t, newClient(t), "http://"+admin+"/metrics")
	if r.Status != 200 {
		t.Fatalf("/metrics: status %d", r.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(r.Body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// observeYAML: listener "public" (h2c on) sends requests with X-Pool: a
// to pool "a" (backend a) and the rest to pool "b" (backend b); the
// access log is in format.
func observeYAML(a, b *demoBackend, format string) string {
	return fmt.Sprintf(`listeners:
  - name: public
    address: "127.0.0.1:0"
    h2c: true
    routes:
      - {headers: {X-Pool: a}, pool: a}
    pool: b
pools:
  - {name: a, backends: [{address: %q}]}
  - {name: b, backends: [{address: %q}]}
admin:
  address: "127.0.0.1:0"
access_log: {path: stdout, format: %s}
shutdown_timeout: 10s
`, a.URL(), b.URL(), format)
}

// TestMetricsAfterKnownTraffic sends known traffic over HTTP/1.1 and
// HTTP/2 to two pools and reads /metrics of the running binary: requests
// per backend and status, per protocol and status class, durations by
// status class, and bytes in and out per backend match what was sent.
func TestMetricsAfterKnownTraffic(t *testing.T) {
	t.Parallel()
	ba, bb := startBackend(t, "a"), startBackend(t, "b")
	_, _, addr, admin := runConfig(t, observeYAML(ba, bb, "json"))
	base := "http://" + addr
	h1c, h2c := newClient(t), h2cClient(t)
	var outA int64 // response body bytes pool a's backend sent
	send := func(c *http.Client, method, path, pool, body string, wantStatus int) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if pool == "a" {
			req.Header.Set("X-Pool", "a")
		}
		r := do(t, c, req)
		if r.Status != wantStatus {
			t.Fatalf("%s %s: status %d, want %d", method, path, r.Status, wantStatus)
		}
		if pool == "a" {
			outA += int64(len(r.Body))
		}
	}
	for range 3 {
		send(h1c, "GET", "/bytes/1000", "a", "", 200)
	}
	send(h1c, "POST", "/echo", "a", strings.Repeat("x", 500), 200)
	send(h2c, "POST", "/echo", "a", strings.Repeat("y", 300), 200)
	send(h2c, "GET", "/status/503", "b", "", 503)
	send(h2c, "GET", "/status/503", "b", "", 503)
	send(h2c, "GET", "/", "b", "", 200)
	send(h1c, "GET", "/status/404", "b", "", 404)

	// A request is counted once its answer is written: the client may
	// read the last one before its loop has counted it.
	var m map[string]float64
	eventually(t, 5*time.Second, "all 9 requests to be counted", func() bool {
		m = scrape(t, admin)
		n := 0.0
		for k, v := range m {
			if strings.HasPrefix(k, "sluice_listener_requests_total{") {
				n += v
			}
		}
		return n >= 9
	})
	a, b := ba.URL(), bb.URL()
	for _, w := range []struct {
		series string
		want   float64
	}{
		{`sluice_requests_total{backend="` + a + `",code="200",listener="public",pool="a"}`, 5},
		{`sluice_requests_total{backend="` + b + `",code="503",listener="public",pool="b"}`, 2},
		{`sluice_requests_total{backend="` + b + `",code="200",listener="public",pool="b"}`, 1},
		{`sluice_requests_total{backend="` + b + `",code="404",listener="public",pool="b"}`, 1},
		{`sluice_listener_requests_total{code_class="2xx",listener="public",protocol="HTTP/1.1"}`, 4},
		{`sluice_listener_requests_total{code_class="4xx",listener="public",protocol="HTTP/1.1"}`, 1},
		{`sluice_listener_requests_total{code_class="2xx",listener="public",protocol="HTTP/2.0"}`, 2},
		{`sluice_listener_requests_total{code_class="5xx",listener="public",protocol="HTTP/2.0"}`, 2},
		{`sluice_listener_request_duration_seconds_count{code_class="2xx",listener="public"}`, 6},
		{`sluice_listener_request_duration_seconds_count{code_class="4xx",listener="public"}`, 1},
		{`sluice_listener_request_duration_seconds_count{code_class="5xx",listener="public"}`, 2},
		{`sluice_listener_request_duration_seconds_count{code_class="1xx",listener="public"}`, 0},
		{`sluice_request_duration_seconds_count{backend="` + a + `",pool="a"}`, 5},
		{`sluice_request_duration_seconds_count{backend="` + b + `",pool="b"}`, 4},
		{`sluice_backend_bytes_in_total{backend="` + a + `",pool="a"}`, 800},
		{`sluice_backend_bytes_in_total{backend="` + b + `",pool="b"}`, 0},
		{`sluice_backend_bytes_out_total{backend="` + a + `",pool="a"}`, float64(outA)},
		{`sluice_retries_total{pool="a"}`, 0},
		{`sluice_retry_budget_exhausted_total{pool="a"}`, 0},
		{`sluice_pool_queue_wait_seconds_count{pool="a"}`, 0},
		{`sluice_pool_queued_requests{pool="a"}`, 0},
		{`sluice_backend_up{backend="` + a + `",pool="a"}`, 1},
		{`sluice_backend_in_flight{backend="` + a + `",pool="a"}`, 0},
		{`sluice_config_last_reload_successful`, 1},
		{`sluice_config_reloads_total{result="success"}`, 0},
		{`sluice_access_log_dropped_total`, 0},
		{`sluice_trace_spans_total{result="exported"}`, 0},
	} {
		got, ok := m[w.series]
		if !ok {
			t.Errorf("/metrics has no series %s", w.series)
		} else if got != w.want {
			t.Errorf("%s = %v, want %v", w.series, got, w.want)
		}
	}
	// Every metric the contract names that this traffic produces.
	names := map[string]bool{}
	for series := range m {
		names[regexp.MustCompile(`^[a-z_]+`).FindString(series)] = true
	}
	for _, n := range []string{"sluice_requests_total", "sluice_request_duration_seconds_bucket",
		"sluice_backend_up", "sluice_backend_in_flight", "sluice_retries_total", "sluice_health_checks_total",
		"sluice_connections_active", "sluice_config_reloads_total", "sluice_config_last_reload_successful",
		"sluice_backend_ejections_total", "sluice_build_info"} {
		if !names[n] {
			t.Errorf("/metrics has no %s", n)
		}
	}
}

// TestAccessLogFields checks, for both formats, that a line carries the
// backend, the tries, the upstream connect and header times, the bytes
// both ways and the protocol.
func TestAccessLogFields(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"json", "combined"} {
		t.Run(format, func(t *testing.T) {
			ba, bb := startBackend(t, "a"), startBackend(t, "b")
			p, _, addr, _ := runConfig(t, observeYAML(ba, bb, format))
			req, _ := http.NewRequest("POST", "http://"+addr+"/echo?x=1", strings.NewReader(strings.Repeat("z", 123)))
			req.Header.Set("X-Pool", "a")
			req.Header.Set("User-Agent", "observe-test")
			r := do(t, newClient(t), req)
			if r.Status != 200 {
				t.Fatalf("status %d", r.Status)
			}
			r2 := get(t, h2cClient(t), "http://"+addr+"/bytes/77")
			p.stop(syscall.SIGTERM)
			lines := strings.Split(strings.TrimSpace(p.Stdout.String()), "\n")
			if len(lines) != 2 {
				t.Fatalf("access log has %d lines, want 2:\n%s", len(lines), p.Stdout)
			}
			if format == "json" {
				var e map[string]any
				if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
					t.Fatalf("line %q: %v", lines[0], err)
				}
				for k, v := range map[string]any{"pool": "a", "backend": ba.URL(), "tries": 1.0, "bytes_in": 123.0,
					"bytes": float64(len(r.Body)), "status": 200.0, "proto": "HTTP/1.1", "method": "POST",
					"path": "/echo", "query": "x=1", "user_agent": "observe-test"} {
					if e[k] != v {
						t.Errorf("%s = %v, want %v", k, e[k], v)
					}
				}
				for _, k := range []string{"upstream_connect_ms", "upstream_header_ms"} {
					if f, ok := e[k].(float64); !ok || f < 0 {
						t.Errorf("%s = %v, want a duration in ms", k, e[k])
					}
				}
				if _, ok := e["trace_id"]; ok {
					t.Errorf("trace_id with tracing off: %s", lines[0])
				}
				var e2 map[string]any
				json.Unmarshal([]byte(lines[1]), &e2)
				if e2["proto"] != "HTTP/2.0" || e2["bytes"] != float64(len(r2.Body)) || e2["pool"] != "b" {
					t.Errorf("HTTP/2 line: proto %v bytes %v pool %v, want HTTP/2.0, %d, b", e2["proto"], e2["bytes"], e2["pool"], len(r2.Body))
				}
				return
			}
			re := regexp.MustCompile(`^127\.0\.0\.1 - - \[[^\]]+\] "POST /echo\?x=1 HTTP/1\.1" 200 (\d+) "-" "observe-test" \S+ [0-9.]+` +
				` pool="a" backend="` + regexp.QuoteMeta(ba.URL()) + `" tries=1 connect=[0-9.]+ header=[0-9.]+ bytes_in=123 tls=- trace_id=-$`)
			m := re.FindStringSubmatch(lines[0])
			if m == nil {
				t.Fatalf("combined line %q does not match %v", lines[0], re)
			}
			if m[1] != strconv.Itoa(len(r.Body)) {
				t.Errorf("combined bytes %s, want %d", m[1], len(r.Body))
			}
			if !strings.Contains(lines[1], `"GET /bytes/77 HTTP/2.0" 200 77 `) {
				t.Errorf("HTTP/2 combined line %q lacks the request line and size", lines[1])
			}
		})
	}
}
