package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testTimeout bounds every test; nothing here should come close.
const testTimeout = 30 * time.Second

// testBackend is a Server running on a real loopback listener.
type testBackend struct {
	*Server
	url    string // http://127.0.0.1:PORT
	client *http.Client
	stop   func() error // cancels Serve and returns what it returned
}

// startBackend runs New(name, nil).Serve on 127.0.0.1:0 until the test ends.
func startBackend(t *testing.T, name string) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(name, nil)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	tr := &http.Transport{}
	b := &testBackend{
		Server: srv,
		url:    "http://" + ln.Addr().String(),
		client: &http.Client{Transport: tr},
	}
	var result error
	stopped := false
	b.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-served:
			case <-time.After(testTimeout):
				t.Fatal("Serve did not return after its context was cancelled")
			}
		}
		return result
	}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := b.stop(); err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
	})
	return b
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// do sends a request with body (may be nil) and returns the response with
// its body read.
func (b *testBackend) do(t *testing.T, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), method, b.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, string(data)
}

func (b *testBackend) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	return b.do(t, http.MethodGet, path, nil)
}

// waitFor polls cond until it holds or the test's time runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testContext(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting until %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestEndpoints(t *testing.T) {
	b := startBackend(t, "b1")
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantBody   string // exact, unless wantPrefix
		wantPrefix bool
		wantHeader http.Header // headers that must be present, beside X-Backend
	}{
		{"root", "GET", "/", 200, "Hello from b1\n", true, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}},
		{"root any method", "POST", "/", 200, "Hello from b1\n", true, nil},
		{"health", "GET", "/health", 200, "ok", false, nil},
		{"health head", "HEAD", "/health", 200, "", false, nil},
		{"health down is POST only", "GET", "/health/down", 405, "", true, http.Header{"Allow": {"POST"}}},
		{"health up is POST only", "GET", "/health/up", 405, "", true, http.Header{"Allow": {"POST"}}},
		{"status 418", "GET", "/status/418", 418, "418 I'm a teapot\n", false, nil},
		{"status 503", "POST", "/status/503", 503, "503 Service Unavailable\n", false, nil},
		{"status 204", "GET", "/status/204", 204, "", false, nil},
		{"status 200", "GET", "/status/200", 200, "200 OK\n", false, nil},
		{"status 599", "GET", "/status/599", 599, "599 \n", false, nil},
		{"status 100", "GET", "/status/100", 400, "status code 100 out of range: want 200-599\n", false, nil},
		{"status 101", "GET", "/status/101", 400, "status code 101 out of range: want 200-599\n", false, nil},
		{"status 600", "GET", "/status/600", 400, "status code 600 out of range: want 200-599\n", false, nil},
		{"status not a number", "GET", "/status/abc", 400, "status code \"abc\" is not a number\n", false, nil},
		{"delay zero", "GET", "/delay/0", 200, "delayed 0s", false, nil},
		{"delay duration", "GET", "/delay/10ms", 200, "delayed 10ms", false, nil},
		{"delay seconds", "GET", "/delay/0.01", 200, "delayed 10ms", false, nil},
		{"delay too long", "GET", "/delay/6m", 400, "delay: \"6m\" out of range: want 0 to 5m0s\n", false, nil},
		{"delay too many seconds", "GET", "/delay/301", 400, "delay: \"301\" out of range: want 0 to 5m0s\n", false, nil},
		{"delay negative", "GET", "/delay/-1s", 400, "delay: \"-1s\" out of range: want 0 to 5m0s\n", false, nil},
		{"delay garbage", "GET", "/delay/soon", 400, "delay: \"soon\": want a Go duration (250ms, 1.5s) or seconds (2)\n", false, nil},
		{"bytes head", "HEAD", "/bytes/1000", 200, "", false, http.Header{"Content-Length": {"1000"}}},
		{"stream head", "HEAD", "/stream?interval=5m", 200, "", false, nil},
		{"bytes too many", "GET", "/bytes/1073741825", 400, "bytes: \"1073741825\": want a number of bytes from 0 to 1073741824\n", false, nil},
		{"bytes negative", "GET", "/bytes/-1", 400, "bytes: \"-1\": want a number of bytes from 0 to 1073741824\n", false, nil},
		{"stream bad n", "GET", "/stream?n=10001", 400, "stream: n=\"10001\": want a number from 0 to 10000\n", false, nil},
		{"stream bad interval", "GET", "/stream?interval=x", 400, "stream: interval: \"x\": want a Go duration (250ms, 1.5s) or seconds (2)\n", false, nil},
		{"sse zero interval", "GET", "/sse?interval=0", 400, "sse: interval must be positive\n", false, nil},
		{"ws without upgrade", "GET", "/ws", 426, "", true, nil},
		{"unknown path", "GET", "/nope", 404, "404 page not found\n", false, nil},
		{"stats is GET only", "POST", "/stats", 405, "", true, http.Header{"Allow": {"GET, HEAD"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := b.do(t, tt.method, tt.path, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status: got %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, body)
			}
			if got := resp.Header.Get("X-Backend"); got != "b1" {
				t.Errorf("X-Backend: got %q, want %q", got, "b1")
			}
			if tt.wantPrefix && !strings.HasPrefix(body, tt.wantBody) || !tt.wantPrefix && body != tt.wantBody {
				t.Errorf("body: got %q, want %q (prefix: %v)", body, tt.wantBody, tt.wantPrefix)
			}
			for k, want := range tt.wantHeader {
				if got := resp.Header.Values(k); !cmp.Equal(got, want) {
					t.Errorf("header %s: got %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestNameDefaultsToListenAddress(t *testing.T) {
	b := startBackend(t, "")
	addr := strings.TrimPrefix(b.url, "http://")
	resp, body := b.get(t, "/")
	if got := resp.Header.Get("X-Backend"); got != addr {
		t.Errorf("X-Backend: got %q, want %q", got, addr)
	}
	if want := "Hello from " + addr + "\n"; !strings.HasPrefix(body, want) {
		t.Errorf("body: got %q, want it to start with %q", body, want)
	}
	if got := b.Name(); got != addr {
		t.Errorf("Name(): got %q, want %q", got, addr)
	}
}

func TestHandlerWithoutServeNamesLocalAddress(t *testing.T) {
	ts := httptest.NewServer(New("", nil).Handler())
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("X-Backend"), ts.Listener.Addr().String(); got != want {
		t.Errorf("X-Backend: got %q, want %q", got, want)
	}
}

func TestHealthDownAndUp(t *testing.T) {
	b := startBackend(t, "b1")
	steps := []struct {
		method, path string
		wantStatus   int
		wantBody     string
	}{
		{"GET", "/health", 200, "ok"},
		{"POST", "/health/down", 200, "down"},
		{"GET", "/health", 503, "down"},
		{"POST", "/health/down", 200, "down"},
		{"GET", "/health", 503, "down"},
		{"POST", "/health/up", 200, "ok"},
		{"GET", "/health", 200, "ok"},
	}
	for i, st := range steps {
		resp, body := b.do(t, st.method, st.path, nil)
		if resp.StatusCode != st.wantStatus || body != st.wantBody {
			t.Errorf("step %d, %s %s: got %d %q, want %d %q", i, st.method, st.path, resp.StatusCode, body, st.wantStatus, st.wantBody)
		}
	}
}

func TestBytes(t *testing.T) {
	b := startBackend(t, "b1")
	for _, n := range []int{0, 1, 26, 27, 32760, 32761, 100_000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			resp, body := b.get(t, "/bytes/"+strconv.Itoa(n))
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d, want 200", resp.StatusCode)
			}
			if resp.ContentLength != int64(n) {
				t.Errorf("Content-Length: got %d, want %d", resp.ContentLength, n)
			}
			if want := alphabet(n); body != want {
				t.Errorf("body (%d bytes) differs from %d bytes of repeating a-z", len(body), n)
			}
		})
	}
}

// alphabet returns n bytes of repeating a–z.
func alphabet(n int) string {
	return strings.Repeat("abcdefghijklmnopqrstuvwxyz", n/26+1)[:n]
}

func TestHeaders(t *testing.T) {
	b := startBackend(t, "b1")
	req, _ := http.NewRequestWithContext(testContext(t), "GET", b.url+"/headers", nil)
	req.Header.Add("X-Test", "one")
	req.Header.Add("X-Test", "two")
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Host    string
		Headers http.Header
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if want := []string{"one", "two"}; !cmp.Equal(got.Headers["X-Test"], want) {
		t.Errorf("X-Test: got %q, want %q", got.Headers["X-Test"], want)
	}
	if want := strings.TrimPrefix(b.url, "http://"); got.Host != want {
		t.Errorf("host: got %q, want %q", got.Host, want)
	}
}

func TestTrailers(t *testing.T) {
	b := startBackend(t, "b1")
	resp, body := b.get(t, "/trailers")
	if !cmp.Equal(resp.TransferEncoding, []string{"chunked"}) {
		t.Errorf("Transfer-Encoding: got %q, want chunked", resp.TransferEncoding)
	}
	sum := sha256.Sum256([]byte(body))
	want := http.Header{
		"X-Trailer-One": {"1"},
		"X-Checksum":    {hex.EncodeToString(sum[:])},
	}
	if diff := cmp.Diff(want, resp.Trailer); diff != "" {
		t.Errorf("trailers (-want +got):\n%s", diff)
	}
	if body == "" {
		t.Error("body: got empty, want some text before the trailers")
	}
}

func TestStatsCountRequestsPerPath(t *testing.T) {
	b := startBackend(t, "b1")
	for range 3 {
		b.get(t, "/")
	}
	b.get(t, "/health")
	b.get(t, "/nope")
	b.get(t, "/stats") // not counted

	_, body := b.get(t, "/stats")
	var got Stats
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	want := Stats{
		Backend:  "b1",
		Requests: 5,
		Paths:    map[string]int64{"/": 3, "/health": 1, "/nope": 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /stats (-want +got):\n%s", diff)
	}

	if resp, _ := b.do(t, "POST", "/stats/reset", nil); resp.StatusCode != 200 {
		t.Errorf("POST /stats/reset: got %d, want 200", resp.StatusCode)
	}
	want = Stats{Backend: "b1", Paths: map[string]int64{}}
	if diff := cmp.Diff(want, b.Stats()); diff != "" {
		t.Errorf("Stats() after reset (-want +got):\n%s", diff)
	}
}

func TestStatsBoundPaths(t *testing.T) {
	s := New("b1", nil)
	for i := range maxPaths + 10 {
		s.stats.request("/p/" + strconv.Itoa(i))
	}
	s.stats.request("/p/0") // known paths keep counting
	got := s.Stats().Paths
	if len(got) != maxPaths+1 || got[otherPaths] != 10 || got["/p/0"] != 2 {
		t.Errorf("got %d paths, %d under %q, %d for /p/0; want %d, 10, 2",
			len(got), got[otherPaths], otherPaths, got["/p/0"], maxPaths+1)
	}
}

func TestDelayEndsWhenClientLeaves(t *testing.T) {
	b := startBackend(t, "b1")
	ctx, cancel := context.WithCancel(testContext(t))
	req, _ := http.NewRequestWithContext(ctx, "GET", b.url+"/delay/5m", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := b.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, "the delay is in flight", func() bool { return b.Stats().InFlight == 1 })
	cancel()
	if err := <-done; err == nil {
		t.Error("GET /delay/5m: got a response, want the cancelled request to fail")
	}
	waitFor(t, "the delay handler returns", func() bool { return b.Stats().InFlight == 0 })
}

func TestServeTwice(t *testing.T) {
	b := startBackend(t, "b1")
	b.get(t, "/") // the first Serve is running
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := b.Serve(testContext(t), ln); err == nil {
		t.Error("second Serve: got nil, want an error")
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	b := startBackend(t, "b1")
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: protocols}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(testContext(t), "POST", b.url+"/echo", strings.NewReader("hi"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got echoReply
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Proto != "HTTP/2.0" || got.Body != "hi" {
		t.Errorf("echo over h2c: got proto %q body %q, want %q %q", got.Proto, got.Body, "HTTP/2.0", "hi")
	}
}
