package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// countingBackend is an httptest backend that counts the connections it
// accepts and the requests it serves, and answers like /echo (method, path
// and headers as JSON).
type countingBackend struct {
	URL      string
	Accepted atomic.Int64
	Requests atomic.Int64

	mu    sync.Mutex // guards paths
	paths []string
}

// Paths returns the paths of every request served, in order.
func (cb *countingBackend) Paths() []string {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return slices.Clone(cb.paths)
}

func startCountingBackend(t *testing.T) *countingBackend {
	t.Helper()
	cb := &countingBackend{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cb.Requests.Add(1)
		cb.mu.Lock()
		cb.paths = append(cb.paths, r.URL.Path)
		cb.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", "counting")
		json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.Path, "headers": r.Header})
	}))
	srv.Listener = countingListener{srv.Listener, &cb.Accepted}
	srv.Start()
	t.Cleanup(srv.Close)
	cb.URL = srv.URL
	return cb
}

// hostileCase is one of the core's hostile HTTP/1.1 requests: its bytes,
// the listener they go to ("public", or "small" with max_body_bytes 1024)
// and the status they must get, with nothing reaching a backend.
type hostileCase struct {
	name, listener, raw string
	want                int
}

// hostileCases are the core's hostile requests, run in the clear and
// again over TLS (TestTLSHostileRequestsAreRefusedBeforeAnyBackend);
// scheme is the one of the absolute form that names another authority.
func hostileCases(scheme string) []hostileCase {
	return []hostileCase{
		{"Content-Length and Transfer-Encoding", "public",
			"POST /echo HTTP/1.1\r\nHost: good.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding and Content-Length", "public",
			"POST /echo HTTP/1.1\r\nHost: good.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"malformed chunk size", "public",
			"POST /echo HTTP/1.1\r\nHost: good.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
		{"absolute form with another authority", "public",
			"GET " + scheme + "://evil.example/ HTTP/1.1\r\nHost: good.example\r\n\r\n", 400},
		{"CONNECT", "public", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405},
		{"TRACE", "public", "TRACE / HTTP/1.1\r\nHost: good.example\r\n\r\n", 405},
		{"HTTP/2 preface on HTTP/1", "public", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400},
		{"9000-byte URI", "public",
			"GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\nHost: good.example\r\n\r\n", 414},
		{"101 header fields", "public", "GET / HTTP/1.1\r\n" + manyHeaders(101) + "\r\n", 431},
		{"70 KiB header", "public",
			"GET / HTTP/1.1\r\nHost: good.example\r\nX-Big: " + strings.Repeat("b", 70<<10) + "\r\n\r\n", 431},
		{"obs-fold", "public", "GET / HTTP/1.1\r\nHost: good.example\r\nX-Folded: a\r\n b\r\n\r\n", 400},
		{"body over max_body_bytes", "small",
			"POST /echo HTTP/1.1\r\nHost: good.example\r\nContent-Length: 2048\r\n\r\n" + strings.Repeat("x", 2048), 413},
	}
}

// manyHeaders is n header fields: Host, then X-H-1 … X-H-(n-1).
func manyHeaders(n int) string {
	var b strings.Builder
	b.WriteString("Host: good.example\r\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "X-H-%d: %d\r\n", i, i)
	}
	return b.String()
}

func TestHostileRequestsAreRefusedBeforeAnyBackend(t *testing.T) {
	cb := startCountingBackend(t)
	cfg := oneListener(poolAt("web", cb.URL))
	cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "small", Address: "127.0.0.1:0", Pool: "web",
		Limits: config.Limits{MaxBodyBytes: 1024}})
	s := startSluice(t, cfg)

	for _, tc := range hostileCases("http") {
		t.Run(tc.name, func(t *testing.T) {
			reqs, conns := cb.Requests.Load(), cb.Accepted.Load()
			r := rawExchange(t, s.Addr(tc.listener), tc.raw)
			if r.Status != tc.want {
				t.Errorf("status line %q, want %d; body %.200q", r.StatusLine, tc.want, r.Body)
			}
			if !r.Closed {
				t.Errorf("after %q the connection stayed open, want it closed", r.StatusLine)
			}
			if len(r.Body) > 200 || strings.Contains(r.Body, "127.0.0.1") {
				t.Errorf("body %.300q: want a short text with no internals", r.Body)
			}
			if n, c := cb.Requests.Load()-reqs, cb.Accepted.Load()-conns; n != 0 || c != 0 {
				t.Errorf("the backend was contacted: %d requests on %d new connections, want none", n, c)
			}
		})
	}
	// Late arrivals (a request cut short mid-body) would show here.
	if n, c := cb.Requests.Load(), cb.Accepted.Load(); n != 0 || c != 0 {
		t.Errorf("after every refused request, the backend had %d requests on %d connections, want none", n, c)
	}

	// Controls: what is near the limits, or only stripped, does reach the
	// backend.
	t.Run("100 header fields pass", func(t *testing.T) {
		before := cb.Requests.Load()
		// Host, 98 X-H-n and Connection: 100 fields.
		r := rawExchange(t, s.Addr("public"), "GET /echo HTTP/1.1\r\n"+manyHeaders(99)+"Connection: close\r\n\r\n")
		if r.Status != 200 {
			t.Fatalf("status line %q, want 200; body %q", r.StatusLine, r.Body)
		}
		if got := cb.Requests.Load() - before; got != 1 {
			t.Fatalf("backend served %d requests, want 1", got)
		}
	})
	t.Run("h2c upgrade is stripped, not refused", func(t *testing.T) {
		before := cb.Requests.Load()
		r := rawConversation(t, s.Addr("public"), "GET /echo HTTP/1.1\r\nHost: good.example\r\n"+
			"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 1, 0)[0]
		if r.Status != 200 {
			t.Fatalf("status line %q, want 200; body %q", r.StatusLine, r.Body)
		}
		if got := cb.Requests.Load() - before; got != 1 {
			t.Fatalf("backend served %d requests, want 1", got)
		}
		e := parseEcho(t, r.Body)
		for _, name := range []string{"Upgrade", "Http2-Settings", "Connection"} {
			if v := e.Headers.Values(name); len(v) > 0 {
				t.Errorf("backend saw %s: %q, want it stripped", name, v)
			}
		}
	})
}

func TestPipelinedRequestsAroundARefusal(t *testing.T) {
	const (
		valid    = "GET /echo HTTP/1.1\r\nHost: good.example\r\n\r\n"
		smuggled = "GET /smuggled HTTP/1.1\r\nHost: good.example\r\n\r\n"
	)
	for _, tc := range []struct {
		name      string
		raw       string
		want      []int    // statuses of the responses, in order
		wantPaths []string // what the backend saw
	}{
		{"a request smuggled behind Content-Length and Transfer-Encoding",
			valid + "POST /echo HTTP/1.1\r\nHost: good.example\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			[]int{200, 400}, []string{"/echo"}},
		{"a request smuggled behind a bad chunk size",
			valid + "POST /echo HTTP/1.1\r\nHost: good.example\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n" + smuggled,
			[]int{200, 400}, []string{"/echo"}},
		{"requests after a refused one", "TRACE / HTTP/1.1\r\nHost: good.example\r\n\r\n" + valid + smuggled,
			[]int{405}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := startCountingBackend(t)
			s := startSluice(t, oneListener(poolAt("web", cb.URL)))
			rs := rawConversation(t, s.Addr("public"), tc.raw, len(tc.want), 3*time.Second)
			for i, r := range rs {
				if r.Status != tc.want[i] {
					t.Errorf("response %d: %q, want %d; body %.200q", i+1, r.StatusLine, tc.want[i], r.Body)
				}
			}
			if !rs[len(rs)-1].Closed {
				t.Errorf("the connection stayed open after the refusal, want it closed")
			}
			if got := cb.Paths(); !slices.Equal(got, tc.wantPaths) {
				t.Errorf("backend saw paths %q, want %q", got, tc.wantPaths)
			}
		})
	}
}
