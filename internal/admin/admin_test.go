package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/state"
)

// firstReady is the simplest policy: the first ready backend.
type firstReady struct{}

func (firstReady) Build(s pool.Set) pool.Picker { return firstPicker(s.Ready) }

type firstPicker []*pool.Backend

func (f firstPicker) Pick(*pool.PickInfo) *pool.Backend {
	if len(f) == 0 {
		return nil
	}
	return f[0]
}

// fakeRuntime is a Runtime over real pools that records every mutation.
type fakeRuntime struct {
	pools     []*pool.Pool
	ready     bool
	reloadErr error
	// persistErr is returned by SetBackendWeight after applying (tests of
	// the 500).
	persistErr error

	state state.Report // protected by mu

	mu    sync.Mutex
	calls []string // protected by mu
}

func newBackend(t *testing.T, address string, weight int) *pool.Backend {
	t.Helper()
	u, err := url.Parse(address)
	if err != nil {
		t.Fatal(err)
	}
	return pool.NewBackend(address, u, weight)
}

// newFake returns pools web (8081 weight 1, 8082 weight 3) and api (9001).
func newFake(t *testing.T) *fakeRuntime {
	return &fakeRuntime{
		ready: true,
		pools: []*pool.Pool{
			pool.New("web", firstReady{}, []*pool.Backend{
				newBackend(t, "http://127.0.0.1:8081", 1),
				newBackend(t, "http://127.0.0.1:8082", 3),
			}),
			pool.New("api", firstReady{}, []*pool.Backend{newBackend(t, "http://[::1]:9001", 1)}),
		},
	}
}

func (f *fakeRuntime) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeRuntime) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeRuntime) Pools() []*pool.Pool { return f.pools }
func (f *fakeRuntime) Ready() bool         { return f.ready }
func (f *fakeRuntime) ConfigJSON() []byte {
	return []byte(`{"listeners": [{"name": "public", "address": ":8080"}], "admin": {"token_file": "/etc/sluice/token"}}` + "\n")
}

func (f *fakeRuntime) Reload() error {
	f.record("reload")
	return f.reloadErr
}

func (f *fakeRuntime) find(name string) (*pool.Pool, error) {
	for _, p := range f.pools {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("pool %q: %w", name, ErrNotFound)
}

func (f *fakeRuntime) AddBackend(poolName, address string, weight int) error {
	f.record("add %s %s %d", poolName, address, weight)
	p, err := f.find(poolName)
	if err != nil {
		return err
	}
	u, err := url.Parse(address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("backend address %q: want http://host:port or https://host:port", address)
	}
	if weight < 1 {
		return fmt.Errorf("weight %d out of range: use 1 to 1000", weight)
	}
	if !p.Add(pool.NewBackend(address, u, weight)) {
		return fmt.Errorf("backend %q already in pool %q: %w", address, poolName, ErrConflict)
	}
	return nil
}

func (f *fakeRuntime) backend(poolName, address string) (*pool.Pool, *pool.Backend, error) {
	p, err := f.find(poolName)
	if err != nil {
		return nil, nil, err
	}
	if b := p.Find(address); b != nil {
		return p, b, nil
	}
	return nil, nil, fmt.Errorf("backend %q in pool %q: %w", address, poolName, ErrNotFound)
}

func (f *fakeRuntime) RemoveBackend(poolName, address string) error {
	f.record("remove %s %s", poolName, address)
	p, b, err := f.backend(poolName, address)
	if err != nil {
		return err
	}
	p.SetAdmin(b, pool.Draining)
	p.Remove(b) // nothing is in flight in these tests
	return nil
}

func (f *fakeRuntime) SetBackendState(poolName, address string, st pool.Admin) error {
	f.record("state %s %s %s", poolName, address, st)
	p, b, err := f.backend(poolName, address)
	if err != nil {
		return err
	}
	p.SetAdmin(b, st)
	return nil
}

func (f *fakeRuntime) SetBackendWeight(poolName, address string, weight int) error {
	f.record("weight %s %s %d", poolName, address, weight)
	p, b, err := f.backend(poolName, address)
	if err != nil {
		return err
	}
	if weight < 1 || weight > 1000 {
		return fmt.Errorf("weight %d out of range: use 1 to 1000", weight)
	}
	p.SetWeight(b, weight)
	return f.persistErr
}

func (f *fakeRuntime) State() state.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

var _ Runtime = (*fakeRuntime)(nil)

// listHint ends the message of a 404 for a pool or backend.
const listHint = ": GET /api/v1/pools lists the pools and their backends"

// addExample is what a 400 of POST .../backends says to send.
const addExample = `{"address": "http://HOST:PORT", "weight": 1}`

// start serves New(rt, o) on loopback. o.Address defaults to the bound
// address.
func start(t *testing.T, rt Runtime, o Options) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	if o.Address == "" {
		o.Address = srv.Listener.Addr().String()
	}
	srv.Config.Handler = New(rt, o)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func port(srv *httptest.Server) string {
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return p
}

type response struct {
	code   int
	header http.Header
	body   string
}

// call sends one request; hdr may set "Host" as well as ordinary headers.
func call(t *testing.T, srv *httptest.Server, method, path, body string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, string(b)}
}

func decode(t *testing.T, r response) any {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json (body %q)", ct, r.body)
	}
	var v any
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return v
}

// backendJSON is a backend's expected JSON with zero counters.
func backendJSON(address string, weight int, state string) map[string]any {
	return map[string]any{
		"address": address, "weight": float64(weight), "state": state,
		"source": "config", "override": false, "reason": "", "since": nil,
		"in_flight": 0.0, "requests": 0.0, "failures": 0.0, "responses_5xx": 0.0, "latency_ms": 0.0,
		"checks_passed": 0.0, "checks_failed": 0.0, "ejections": 0.0,
	}
}

func TestProbesAndMetrics(t *testing.T) {
	rt := newFake(t)
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "sluice_up 1\n") })
	srv := start(t, rt, Options{Metrics: metrics})
	noMetrics := start(t, rt, Options{})

	tests := []struct {
		name     string
		srv      *httptest.Server
		ready    bool
		path     string
		wantCode int
		wantBody string
	}{
		{"healthz", srv, true, "/healthz", 200, "ok"},
		{"healthz while not ready", srv, false, "/healthz", 200, "ok"},
		{"readyz", srv, true, "/readyz", 200, "ready"},
		{"readyz not ready", srv, false, "/readyz", 503, "not ready"},
		{"metrics", srv, true, "/metrics", 200, "sluice_up 1\n"},
		{"no metrics handler", noMetrics, true, "/metrics", 404, "404 page not found\n"},
		{"unknown page", srv, true, "/nope", 404, "404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt.ready = tt.ready
			got := call(t, tt.srv, "GET", tt.path, "", nil)
			if got.code != tt.wantCode || got.body != tt.wantBody {
				t.Errorf("GET %s = %d %q, want %d %q", tt.path, got.code, got.body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestListPools(t *testing.T) {
	rt := newFake(t)
	web := rt.pools[0]
	b := web.Backends()[0]
	b.Stats.Requests.Add(10)
	b.Stats.Failures.Add(2)
	b.Stats.Observe(0, 502, time.Millisecond) // answers counted by status
	b.Stats.Observe(1, 503, time.Millisecond)
	b.Stats.ChecksPassed.Add(5)
	b.Stats.ChecksFailed.Add(1)
	b.Stats.Ejections.Add(1)
	b.InFlight.Add(3)
	b.Stats.ObserveLatency(25 * time.Millisecond) // the first sample is the average
	web.SetAdmin(web.Backends()[1], pool.Disabled)
	web.Retries.Add(4)
	web.NoBackend.Requests.Add(7)
	srv := start(t, rt, Options{Version: "1.2.3"})

	got := call(t, srv, "GET", "/api/v1/pools", "", nil)
	if got.code != 200 {
		t.Fatalf("GET /api/v1/pools = %d %s, want 200", got.code, got.body)
	}
	webJSON := map[string]any{
		"name": "web", "ready": 1.0, "retries": 4.0, "no_backend": 7.0,
		"backends": []any{
			map[string]any{
				"address": "http://127.0.0.1:8081", "weight": 1.0, "state": "healthy",
				"source": "config", "override": false, "reason": "", "since": nil,
				"in_flight": 3.0, "requests": 12.0, "failures": 2.0, "responses_5xx": 2.0, "latency_ms": 25.0,
				"checks_passed": 5.0, "checks_failed": 1.0, "ejections": 1.0,
			},
			backendJSON("http://127.0.0.1:8082", 3, "disabled"),
		},
	}
	apiJSON := map[string]any{
		"name": "api", "ready": 1.0, "retries": 0.0, "no_backend": 0.0,
		"backends": []any{backendJSON("http://[::1]:9001", 1, "healthy")},
	}
	want := map[string]any{"version": "1.2.3", "pools": []any{webJSON, apiJSON}}
	if diff := cmp.Diff(want, decode(t, got)); diff != "" {
		t.Errorf("GET /api/v1/pools (-want +got):\n%s", diff)
	}

	one := call(t, srv, "GET", "/api/v1/pools/api", "", nil)
	if diff := cmp.Diff(any(apiJSON), decode(t, one)); one.code != 200 || diff != "" {
		t.Errorf("GET /api/v1/pools/api = %d (-want +got):\n%s", one.code, diff)
	}
}

func TestReadEndpoints(t *testing.T) {
	srv := start(t, newFake(t), Options{})
	tests := []struct {
		name     string
		path     string
		wantCode int
		want     any
	}{
		{"unknown pool", "/api/v1/pools/nope", 404, map[string]any{"error": `pool "nope": not found` + listHint}},
		{"one backend", "/api/v1/pools/web/backends/" + url.PathEscape("http://127.0.0.1:8082"), 200,
			backendJSON("http://127.0.0.1:8082", 3, "healthy")},
		{"unknown backend", "/api/v1/pools/web/backends/http:%2F%2Fnope:1", 404,
			map[string]any{"error": `backend "http://nope:1" in pool "web": not found` + listHint}},
		{"unknown endpoint", "/api/v1/nope", 404, map[string]any{"error": "no such endpoint /api/v1/nope: the API is under /api/v1/ (pools, pools/{pool}, pools/{pool}/backends/{address}, reload, config, events, state, stats)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := call(t, srv, "GET", tt.path, "", nil)
			if diff := cmp.Diff(tt.want, decode(t, got)); got.code != tt.wantCode || diff != "" {
				t.Errorf("GET %s = %d, want %d; body (-want +got):\n%s", tt.path, got.code, tt.wantCode, diff)
			}
		})
	}
}

func TestAddBackend(t *testing.T) {
	tests := []struct {
		name     string
		pool     string
		body     string
		wantCode int
		want     any
		wantCall string // "" = the runtime is not called
	}{
		{"with weight", "web", `{"address": "http://127.0.0.1:8084", "weight": 2}`, 201,
			backendJSON("http://127.0.0.1:8084", 2, "healthy"), "add web http://127.0.0.1:8084 2"},
		{"weight defaults to 1", "web", `{"address": "http://127.0.0.1:8084"}`, 201,
			backendJSON("http://127.0.0.1:8084", 1, "healthy"), "add web http://127.0.0.1:8084 1"},
		{"already there", "web", `{"address": "http://127.0.0.1:8081"}`, 409,
			map[string]any{"error": `backend "http://127.0.0.1:8081" already in pool "web": conflict`}, "add web http://127.0.0.1:8081 1"},
		{"unknown pool", "nope", `{"address": "http://127.0.0.1:8084"}`, 404,
			map[string]any{"error": `pool "nope": not found` + listHint}, "add nope http://127.0.0.1:8084 1"},
		{"bad address", "web", `{"address": "ftp://x"}`, 400,
			map[string]any{"error": `backend address "ftp://x": want http://host:port or https://host:port`}, "add web ftp://x 1"},
		{"bad weight", "web", `{"address": "http://127.0.0.1:8084", "weight": -1}`, 400,
			map[string]any{"error": "weight -1 out of range: use 1 to 1000"}, "add web http://127.0.0.1:8084 -1"},
		{"no address", "web", `{"weight": 2}`, 400, map[string]any{"error": `"address" is required: send ` + addExample}, ""},
		{"unknown field", "web", `{"address": "http://127.0.0.1:8084", "wieght": 2}`, 400,
			map[string]any{"error": `invalid JSON body: json: unknown field "wieght"; send ` + addExample}, ""},
		{"not JSON", "web", `address=x`, 400,
			map[string]any{"error": "invalid JSON body: invalid character 'a' looking for beginning of value; send " + addExample}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFake(t)
			srv := start(t, rt, Options{})
			got := call(t, srv, "POST", "/api/v1/pools/"+tt.pool+"/backends", tt.body, nil)
			if diff := cmp.Diff(tt.want, decode(t, got)); got.code != tt.wantCode || diff != "" {
				t.Errorf("POST = %d, want %d; body (-want +got):\n%s", got.code, tt.wantCode, diff)
			}
			var wantCalls []string
			if tt.wantCall != "" {
				wantCalls = []string{tt.wantCall}
			}
			if diff := cmp.Diff(wantCalls, rt.Calls()); diff != "" {
				t.Errorf("runtime calls (-want +got):\n%s", diff)
			}
			if got.code == 201 {
				wantLoc := "/api/v1/pools/web/backends/" + url.PathEscape("http://127.0.0.1:8084")
				if loc := got.header.Get("Location"); loc != wantLoc {
					t.Errorf("Location = %q, want %q", loc, wantLoc)
				}
				if rt.pools[0].Find("http://127.0.0.1:8084") == nil {
					t.Errorf("backend not in pool after 201")
				}
			}
		})
	}
}

// The address is one path segment; ServeMux matches wildcards on the escaped
// path and PathValue unescapes them, so %2F (or %2f, or everything escaped as
// encodeURIComponent does) arrives as "/".
var escapings = []struct{ name, segment string }{
	{"url.PathEscape", url.PathEscape("http://127.0.0.1:8081")},
	{"lower-case %2f", "http:%2f%2f127.0.0.1:8081"},
	{"encodeURIComponent", "http%3A%2F%2F127.0.0.1%3A8081"},
}

func TestRemoveBackend(t *testing.T) {
	for _, e := range escapings {
		t.Run(e.name, func(t *testing.T) {
			rt := newFake(t)
			srv := start(t, rt, Options{})
			got := call(t, srv, "DELETE", "/api/v1/pools/web/backends/"+e.segment, "", nil)
			want := backendJSON("http://127.0.0.1:8081", 1, "draining")
			if diff := cmp.Diff(any(want), decode(t, got)); got.code != 202 || diff != "" {
				t.Errorf("DELETE = %d, want 202; body (-want +got):\n%s", got.code, diff)
			}
			if diff := cmp.Diff([]string{"remove web http://127.0.0.1:8081"}, rt.Calls()); diff != "" {
				t.Errorf("runtime calls (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("unknown backend", func(t *testing.T) {
		srv := start(t, newFake(t), Options{})
		got := call(t, srv, "DELETE", "/api/v1/pools/web/backends/http:%2F%2F127.0.0.1:9999", "", nil)
		if got.code != 404 {
			t.Errorf("DELETE unknown = %d %s, want 404", got.code, got.body)
		}
	})
	t.Run("unescaped slashes do not reach the runtime", func(t *testing.T) {
		rt := newFake(t)
		srv := start(t, rt, Options{})
		got := call(t, srv, "DELETE", "/api/v1/pools/web/backends/http://127.0.0.1:8081", "", nil)
		if got.code < 300 {
			t.Errorf("DELETE with raw slashes = %d %s, want a redirect or an error", got.code, got.body)
		}
		if calls := rt.Calls(); len(calls) != 0 {
			t.Errorf("runtime calls = %q, want none", calls)
		}
	})
}

func TestSetState(t *testing.T) {
	type step struct {
		path      string
		wantCode  int
		wantState string // for 200
		wantError string // for errors
	}
	const b = "/api/v1/pools/web/backends/"
	for _, e := range escapings {
		t.Run(e.name, func(t *testing.T) {
			rt := newFake(t)
			srv := start(t, rt, Options{})
			steps := []step{
				{b + e.segment + "/drain", 200, "draining", ""},
				{b + e.segment + "/disable", 200, "disabled", ""},
				{b + e.segment + "/enable", 200, "healthy", ""},
				{b + e.segment + "/reboot", 404, "", `unknown action "reboot": use drain, enable, disable or weight`},
				{b + "http:%2F%2Fnope:1/drain", 404, "", `backend "http://nope:1" in pool "web": not found` + listHint},
				{"/api/v1/pools/nope/backends/" + e.segment + "/drain", 404, "", `pool "nope": not found` + listHint},
			}
			for _, s := range steps {
				got := call(t, srv, "POST", s.path, "", nil)
				var want any = map[string]any{"error": s.wantError}
				if s.wantCode == 200 {
					bj := backendJSON("http://127.0.0.1:8081", 1, s.wantState)
					bj["scope"] = "local"
					want = bj
				}
				if diff := cmp.Diff(want, decode(t, got)); got.code != s.wantCode || diff != "" {
					t.Errorf("POST %s = %d, want %d; body (-want +got):\n%s", s.path, got.code, s.wantCode, diff)
				}
			}
			wantCalls := []string{
				"state web http://127.0.0.1:8081 draining",
				"state web http://127.0.0.1:8081 disabled",
				"state web http://127.0.0.1:8081 enabled",
				"state web http://nope:1 draining",
				"state nope http://127.0.0.1:8081 draining",
			}
			if diff := cmp.Diff(wantCalls, rt.Calls()); diff != "" {
				t.Errorf("runtime calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReload(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode int
		want     any
	}{
		{"ok", nil, 200, map[string]any{"status": "reloaded"}},
		{"refused", errors.New("sluice.yaml:3:5: unknown key \"ballance\"\nsluice.yaml:9:7: pool \"x\" not defined"), 400,
			map[string]any{"error": "reload refused, the previous config keeps serving: " +
				"sluice.yaml:3:5: unknown key \"ballance\"\nsluice.yaml:9:7: pool \"x\" not defined; fix the file and reload again"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFake(t)
			rt.reloadErr = tt.err
			srv := start(t, rt, Options{})
			got := call(t, srv, "POST", "/api/v1/reload", "", nil)
			if diff := cmp.Diff(tt.want, decode(t, got)); got.code != tt.wantCode || diff != "" {
				t.Errorf("POST /api/v1/reload = %d, want %d; body (-want +got):\n%s", got.code, tt.wantCode, diff)
			}
		})
	}
}

// GET /api/v1/config answers the runtime's config JSON as it is; other
// methods get 405 with Allow.
func TestConfig(t *testing.T) {
	rt := newFake(t)
	srv := start(t, rt, Options{})
	got := call(t, srv, "GET", "/api/v1/config", "", nil)
	if got.code != 200 || got.body != string(rt.ConfigJSON()) || got.header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /api/v1/config = %d %q (%s), want 200 with the runtime's JSON", got.code, got.body, got.header.Get("Content-Type"))
	}
	for _, method := range []string{"POST", "PUT", "DELETE"} {
		got := call(t, srv, method, "/api/v1/config", "", nil)
		if got.code != 405 || got.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /api/v1/config = %d with Allow %q, want 405 with Allow \"GET, HEAD\"", method, got.code, got.header.Get("Allow"))
		}
	}
}

// GET never changes anything: GET and HEAD on every path, mutating ones
// included, leave the runtime untouched; a mutating path answers 405.
func TestGetNeverMutates(t *testing.T) {
	rt := newFake(t)
	srv := start(t, rt, Options{})
	a := url.PathEscape("http://127.0.0.1:8081")
	tests := []struct {
		path      string
		wantCode  int
		wantAllow string
	}{
		{"/api/v1/pools", 200, ""},
		{"/api/v1/pools/web", 200, ""},
		{"/api/v1/pools/web/backends", 405, "POST"},
		{"/api/v1/pools/web/backends/" + a, 200, ""},
		{"/api/v1/pools/web/backends/" + a + "/drain", 405, "POST"},
		{"/api/v1/pools/web/backends/" + a + "/disable", 405, "POST"},
		{"/api/v1/pools/web/backends/" + a + "/weight", 405, "POST"},
		{"/api/v1/reload", 405, "POST"},
		{"/api/v1/state", 200, ""},
	}
	for _, method := range []string{"GET", "HEAD"} {
		for _, tt := range tests {
			got := call(t, srv, method, tt.path, "", nil)
			if got.code != tt.wantCode || got.header.Get("Allow") != tt.wantAllow {
				t.Errorf("%s %s = %d Allow %q, want %d Allow %q", method, tt.path, got.code, got.header.Get("Allow"), tt.wantCode, tt.wantAllow)
			}
			if tt.wantCode == 405 && method == "GET" {
				want := map[string]any{"error": "method GET not allowed on " + tt.path + ": use POST"}
				if diff := cmp.Diff(any(want), decode(t, got)); diff != "" {
					t.Errorf("GET %s body (-want +got):\n%s", tt.path, diff)
				}
			}
		}
	}
	if calls := rt.Calls(); len(calls) != 0 {
		t.Errorf("runtime calls after GETs = %q, want none", calls)
	}
	if st := rt.pools[0].Backends()[0].State(); st != "healthy" {
		t.Errorf("state after GETs = %q, want healthy", st)
	}
	// The other direction: DELETE on the pool list is not an endpoint.
	got := call(t, srv, "DELETE", "/api/v1/pools", "", nil)
	if got.code != 405 || got.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("DELETE /api/v1/pools = %d Allow %q, want 405 Allow %q", got.code, got.header.Get("Allow"), "GET, HEAD")
	}
}

func TestDashboard(t *testing.T) {
	srv := start(t, newFake(t), Options{})
	got := call(t, srv, "GET", "/", "", nil)
	if got.code != 200 {
		t.Fatalf("GET / = %d, want 200", got.code)
	}
	for k, want := range map[string]string{
		"Content-Type":    "text/html; charset=utf-8",
		"X-Frame-Options": "DENY",
		"Cache-Control":   "no-store",
	} {
		if v := got.header.Get(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	// The CSP names the page's own inline script and style by hash.
	csp := got.header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		_, rest, _ := strings.Cut(got.body, "<"+tag+">")
		inline, _, _ := strings.Cut(rest, "</"+tag+">")
		sum := sha256.Sum256([]byte(inline))
		want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	// Self-contained: nothing external, and no data baked in.
	for _, bad := range []string{"src=", "href=\"http", "@import", "url(", "127.0.0.1"} {
		if strings.Contains(got.body, bad) {
			t.Errorf("dashboard contains %q", bad)
		}
	}
	// One light page: it loads at once on a phone and has no build step.
	if n := len(got.body); n >= 64<<10 {
		t.Errorf("dashboard has %d bytes, want < 64 KiB", n)
	}
}

func TestHostCheck(t *testing.T) {
	srv := start(t, newFake(t), Options{})
	p := port(srv)
	tests := []struct {
		name     string
		method   string
		path     string
		host     string
		wantCode int
	}{
		{"bound address", "POST", "/api/v1/reload", "127.0.0.1:" + p, 200},
		{"localhost equivalent", "POST", "/api/v1/reload", "localhost:" + p, 200},
		{"localhost upper case, trailing dot", "POST", "/api/v1/reload", "LOCALHOST.:" + p, 200},
		{"::1 equivalent", "POST", "/api/v1/reload", "[::1]:" + p, 200},
		{"other loopback IP", "POST", "/api/v1/reload", "127.0.0.2:" + p, 200},
		{"rebinding name", "POST", "/api/v1/reload", "evil.example:" + p, 403},
		{"name of a loopback address", "POST", "/api/v1/reload", "localhost.evil.example:" + p, 403},
		{"other port", "POST", "/api/v1/reload", "127.0.0.1:1", 403},
		{"no port", "POST", "/api/v1/reload", "127.0.0.1", 403},
		{"DELETE", "DELETE", "/api/v1/pools/web/backends/x", "evil.example:" + p, 403},
		{"PUT", "PUT", "/api/v1/reload", "evil.example:" + p, 403},
		{"rebinding read of the API", "GET", "/api/v1/pools", "evil.example:" + p, 403},
		{"rebinding read of the dashboard", "GET", "/", "evil.example:" + p, 403},
		{"read by loopback name", "GET", "/api/v1/pools", "localhost:" + p, 200},
		{"healthz from anywhere", "GET", "/healthz", "evil.example:" + p, 200},
		{"readyz from anywhere", "GET", "/readyz", "10.1.2.3", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := call(t, srv, tt.method, tt.path, "", map[string]string{"Host": tt.host})
			if got.code != tt.wantCode {
				t.Errorf("%s %s Host %q = %d %s, want %d", tt.method, tt.path, tt.host, got.code, got.body, tt.wantCode)
			}
		})
	}
}

func TestHostRule(t *testing.T) {
	tests := []struct {
		address string
		token   bool
		host    string
		tls     bool
		want    bool
	}{
		{"127.0.0.1:9090", false, "127.0.0.1:9090", false, true},
		{"127.0.0.1:9090", false, "[::ffff:127.0.0.1]:9090", false, true},
		{"127.0.0.1:9090", false, "localhost:9091", false, false},
		{"localhost:9090", false, "127.0.0.1:9090", false, true},
		{"[::1]:9090", false, "localhost:9090", false, true},
		{"[::1]:9090", false, "evil.example:9090", false, false},
		{"127.0.0.1:0", false, "127.0.0.1:43210", false, true}, // bound port unknown
		{"127.0.0.1:0", false, "evil.example:43210", false, false},
		{"127.0.0.1:80", false, "127.0.0.1", false, true},
		{"127.0.0.1:443", false, "127.0.0.1", true, true},
		{"127.0.0.1:80", false, "127.0.0.1", true, false},
		{":9090", true, "lb1.example:9090", false, true},
		{":9090", true, "lb1.example:9091", false, false},
		{"0.0.0.0:9090", true, "10.0.0.5:9090", false, true},
		{"[::]:9090", true, "[2001:db8::1]:9090", false, true},
		{":9090", false, "10.0.0.5:9090", false, true},
		{":9090", false, "localhost:9090", false, true},
		{":9090", false, "evil.example:9090", false, false}, // no token: names could be rebound
		{"10.0.0.5:9090", true, "10.0.0.5:9090", false, true},
		{"10.0.0.5:9090", true, "10.0.0.6:9090", false, false},
		{"10.0.0.5:9090", true, "lb1.example:9090", false, false},
		{"10.0.0.5:9090", true, "127.0.0.1:9090", false, false},
		{"admin.example:9090", true, "Admin.Example.:9090", false, true},
		{"admin.example:9090", true, "other.example:9090", false, false},
		{"127.0.0.1:9090", false, "", false, false},
		{"127.0.0.1:9090", false, "::1:9090", false, false},
	}
	for _, tt := range tests {
		got := newHostRule(tt.address, tt.token).allows(tt.host, tt.tls)
		if got != tt.want {
			t.Errorf("admin %q (token %v): Host %q (tls %v) allowed = %v, want %v", tt.address, tt.token, tt.host, tt.tls, got, tt.want)
		}
	}
}

func TestOrigin(t *testing.T) {
	srv := start(t, newFake(t), Options{})
	tests := []struct {
		name     string
		hdr      map[string]string
		wantCode int
	}{
		{"no Origin (curl)", nil, 200},
		{"same origin", map[string]string{"Origin": srv.URL}, 200},
		{"same origin, Sec-Fetch-Site", map[string]string{"Origin": srv.URL, "Sec-Fetch-Site": "same-origin"}, 200},
		{"cross-site", map[string]string{"Origin": "http://evil.example"}, 403},
		{"other port on the same host", map[string]string{"Origin": "http://127.0.0.1:1"}, 403},
		{"opaque origin", map[string]string{"Origin": "null"}, 403},
		{"Sec-Fetch-Site cross-site", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"Sec-Fetch-Site same-site", map[string]string{"Origin": srv.URL, "Sec-Fetch-Site": "same-site"}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := call(t, srv, "POST", "/api/v1/reload", "", tt.hdr)
			if got.code != tt.wantCode {
				t.Errorf("POST with %v = %d %s, want %d", tt.hdr, got.code, got.body, tt.wantCode)
			}
		})
	}
}

func TestToken(t *testing.T) {
	const token = "s3cret"
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "sluice_up 1\n") })
	rt := newFake(t)
	loopback := start(t, rt, Options{Token: token + "\n", Metrics: metrics, Stats: &fakeStats{fakeRuntime: rt}})
	// A non-loopback admin address; requests carry its Host.
	remote := start(t, newFake(t), Options{Address: "10.0.0.5:9090", Token: token, Metrics: metrics})
	const remoteHost = "10.0.0.5:9090"

	tests := []struct {
		name     string
		srv      *httptest.Server
		method   string
		path     string
		auth     string
		host     string
		wantCode int
	}{
		{"api without token", loopback, "GET", "/api/v1/pools", "", "", 401},
		{"api with wrong token", loopback, "GET", "/api/v1/pools", "Bearer nope", "", 401},
		{"api with token prefix", loopback, "GET", "/api/v1/pools", "Bearer s3cre", "", 401},
		{"api with basic auth", loopback, "GET", "/api/v1/pools", "Basic czNjcmV0", "", 401},
		{"api with token", loopback, "GET", "/api/v1/pools", "Bearer s3cret", "", 200},
		{"scheme is case-insensitive", loopback, "GET", "/api/v1/pools", "bearer s3cret", "", 200},
		{"config without token", loopback, "GET", "/api/v1/config", "", "", 401},
		{"config with token", loopback, "GET", "/api/v1/config", "Bearer s3cret", "", 200},
		{"mutation without token", loopback, "POST", "/api/v1/reload", "", "", 401},
		{"state without token", loopback, "GET", "/api/v1/state", "", "", 401},
		{"state with token", loopback, "GET", "/api/v1/state", "Bearer s3cret", "", 200},
		{"stats without token", loopback, "GET", "/api/v1/stats", "", "", 401},
		{"stats with token", loopback, "GET", "/api/v1/stats", "Bearer s3cret", "", 200},
		{"weight without token", loopback, "POST", "/api/v1/pools/web/backends/http%3A%2F%2F127.0.0.1%3A8081/weight", "", "", 401},
		{"weight with token, foreign Host", loopback, "POST", "/api/v1/pools/web/backends/http%3A%2F%2F127.0.0.1%3A8081/weight", "Bearer s3cret", "evil.example", 403},
		{"mutation with token", loopback, "POST", "/api/v1/reload", "Bearer s3cret", "", 200},
		{"mutation with token, foreign Host", loopback, "POST", "/api/v1/reload", "Bearer s3cret", "evil.example", 403},
		{"loopback: metrics open", loopback, "GET", "/metrics", "", "", 200},
		{"loopback: dashboard open", loopback, "GET", "/", "", "", 200},
		{"loopback: other paths need it", loopback, "GET", "/nope", "", "", 401},

		{"remote: metrics without token", remote, "GET", "/metrics", "", remoteHost, 401},
		{"remote: metrics with token", remote, "GET", "/metrics", "Bearer s3cret", remoteHost, 200},
		{"remote: dashboard without token", remote, "GET", "/", "", remoteHost, 401},
		{"remote: dashboard with token", remote, "GET", "/", "Bearer s3cret", remoteHost, 200},
		{"remote: api without token", remote, "GET", "/api/v1/pools", "", remoteHost, 401},
		{"remote: healthz without token", remote, "GET", "/healthz", "", remoteHost, 200},
		{"remote: readyz without token", remote, "GET", "/readyz", "", remoteHost, 200},
		{"remote: authenticated read by name", remote, "GET", "/metrics", "Bearer s3cret", "lb1.example:9090", 200},
		{"remote: mutation by name", remote, "POST", "/api/v1/reload", "Bearer s3cret", "lb1.example:9090", 403},
		{"remote: mutation", remote, "POST", "/api/v1/reload", "Bearer s3cret", remoteHost, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			if tt.host != "" {
				hdr["Host"] = tt.host
			}
			got := call(t, tt.srv, tt.method, tt.path, "", hdr)
			if got.code != tt.wantCode {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, got.code, got.body, tt.wantCode)
			}
			if got.code != 401 {
				return
			}
			if v := got.header.Get("WWW-Authenticate"); !strings.HasPrefix(v, "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want Bearer", v)
			}
			switch {
			case tt.path == "/":
				// The token form: the page, which holds no data.
				if !bytes.Equal([]byte(got.body), dashboardHTML) {
					t.Errorf("401 body of / is not the dashboard page")
				}
			case strings.HasPrefix(tt.path, "/api/"):
				want := map[string]any{"error": `missing or invalid bearer token: send "Authorization: Bearer TOKEN" with the token in admin.token_file`}
				if diff := cmp.Diff(any(want), decode(t, got)); diff != "" {
					t.Errorf("401 body (-want +got):\n%s", diff)
				}
			}
		})
	}
}
