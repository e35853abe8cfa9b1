package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sluice-lb/sluice/internal/backend"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

func startBackend(t *testing.T, ctx context.Context) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := backend.New("", nil)
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { <-done })
	return "http://" + ln.Addr().String()
}

func writeConfig(t *testing.T, path string, backends []string, extraRoute string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n%s", extraRoute)
	// The backends are up: no check may fail because a loaded machine (the
	// race detector, parallel packages) answered late. A backend's first
	// check decides at once, so a short timeout would take it out.
	b.WriteString("pools:\n  - name: web\n    health_check: {path: /health, interval: 10s, timeout: 10s}\n    backends:\n")
	for _, a := range backends {
		fmt.Fprintf(&b, "      - {address: %q}\n", a)
	}
	b.WriteString("admin: {address: \"127.0.0.1:0\"}\naccess_log: {format: off}\nshutdown_timeout: 2s\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run starts a server for cfg and stops it (and checks Run's result) when
// the test ends. The context ends when the server is told to stop.
func run(t *testing.T, cfg *config.Config) (*Server, context.Context) {
	t.Helper()
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "ready", srv.Ready)
	return srv, ctx
}

// runFile is run for a config file.
func runFile(t *testing.T, path string) (*Server, context.Context) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return run(t, cfg)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloadCarriesStateAndLeaksNothing(t *testing.T) {
	baseline := runtime.NumGoroutine()
	bctx, bcancel := context.WithCancel(context.Background())
	a, b, c := startBackend(t, bctx), startBackend(t, bctx), startBackend(t, bctx)
	t.Cleanup(bcancel)

	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeConfig(t, path, []string{a, b}, "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	eventually(t, "ready", srv.Ready)
	addr := srv.Addr("public").String()

	get := func() int {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 4 {
		if got := get(); got != 200 {
			t.Fatalf("status = %d, want 200", got)
		}
	}
	oldPool := srv.Pools()[0]
	oldA := oldPool.Find(a)
	before := oldA.Stats.Requests.Load()
	if err := srv.SetBackendState("web", a, pool.Draining); err != nil {
		t.Fatal(err)
	}

	// Reload adding c: a keeps its identity, its counters and its drain.
	writeConfig(t, path, []string{a, b, c}, "")
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	p := srv.Pools()[0]
	if got := p.Find(a); got != oldA {
		t.Errorf("backend %s is a new object after reload, want the same one", a)
	}
	if got := p.Find(a).Stats.Requests.Load(); got != before {
		t.Errorf("requests of %s after reload = %d, want %d", a, got, before)
	}
	if got := p.Find(a).State(); got != "draining" {
		t.Errorf("state of %s after reload = %q, want draining", a, got)
	}
	if p.Find(c) == nil {
		t.Fatalf("backend %s missing after reload", c)
	}
	if p.Shared != oldPool.Shared {
		t.Errorf("pool counters were not carried over the reload")
	}
	eventually(t, "the new backend takes traffic", func() bool {
		get()
		return p.Find(c).Stats.Requests.Load() > 0
	})

	// A broken file keeps the running config.
	os.WriteFile(path, []byte("listeners: [\n"), 0o644)
	if err := srv.Reload(); err == nil {
		t.Fatalf("Reload of a broken file succeeded, want an error")
	}
	if ok, failed, last := srv.Reloads(); ok != 1 || failed != 1 || last {
		t.Errorf("reloads = ok %d failed %d last %v, want 1, 1, false", ok, failed, last)
	}
	if got := get(); got != 200 {
		t.Errorf("after a failed reload: status = %d, want 200", got)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	bcancel()
	http.DefaultClient.CloseIdleConnections()
	eventually(t, fmt.Sprintf("goroutines back to baseline %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline+2
	})
}

func TestStartupFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "public", Address: busy.Addr().String(), Pool: "web"}},
		Pools:     []config.Pool{{Name: "web", Backends: []config.Backend{{Address: "http://127.0.0.1:1"}}}},
		Admin:     config.Admin{Address: "127.0.0.1:0"},
		AccessLog: config.AccessLog{Format: "off"},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "port in use") {
		t.Fatalf("Run on a busy port = %v, want an error that says the port is in use", err)
	}
}

func TestWatchReloadsOnChange(t *testing.T) {
	bctx, bcancel := context.WithCancel(context.Background())
	a, b := startBackend(t, bctx), startBackend(t, bctx)
	t.Cleanup(bcancel) // runs before the backends' cleanups wait for them
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeConfig(t, path, []string{a}, "")
	srv, ctx := runFile(t, path)
	go srv.Watch(ctx, 50*time.Millisecond)

	writeConfig(t, path, []string{a, b}, "")
	eventually(t, "the watched file's new backend appears", func() bool {
		return srv.Pools()[0].Find(b) != nil
	})
	os.WriteFile(path, []byte("pools: {\n"), 0o644)
	eventually(t, "a broken file counts as a failed reload", func() bool {
		_, failed, last := srv.Reloads()
		return failed == 1 && !last
	})
	if srv.Pools()[0].Find(b) == nil {
		t.Errorf("a broken file changed the running config")
	}
}

func TestMaxConnections(t *testing.T) {
	bctx, bcancel := context.WithCancel(context.Background())
	a := startBackend(t, bctx)
	t.Cleanup(bcancel)
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "public", Address: "127.0.0.1:0", Pool: "web",
			Limits: config.Limits{MaxConnections: 1}}},
		Pools:     []config.Pool{{Name: "web", Backends: []config.Backend{{Address: a}}}},
		Admin:     config.Admin{Address: "127.0.0.1:0"},
		AccessLog: config.AccessLog{Format: "off"},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, _ := run(t, cfg)
	addr := srv.Addr("public").String()

	request := func(c net.Conn) string {
		c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 12)
		n, _ := io.ReadFull(c, buf)
		return string(buf[:n])
	}
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if got := request(first); got != "HTTP/1.1 200" {
		t.Fatalf("first connection: %q, want HTTP/1.1 200", got)
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if got := request(second); got != "" {
		t.Fatalf("second connection answered %q while the first is open, want no answer (max_connections 1)", got)
	}
	first.Close()
	second.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 12)
	if n, _ := io.ReadFull(second, buf); string(buf[:n]) != "HTTP/1.1 200" {
		t.Fatalf("second connection after the first closed: %q, want HTTP/1.1 200", buf[:n])
	}
}

func TestReloadRetiresTunnelsOfRemovedBackends(t *testing.T) {
	bctx, bcancel := context.WithCancel(context.Background())
	a, b := startBackend(t, bctx), startBackend(t, bctx)
	t.Cleanup(bcancel)
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeConfig(t, path, []string{a, b}, "")
	srv, _ := runFile(t, path)
	url := "ws://" + srv.Addr("public").String() + "/ws"

	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	conns := map[string]*websocket.Conn{}
	for range 2 {
		c, resp, err := websocket.Dial(dctx, url, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.CloseNow()
		conns["http://"+resp.Header.Get("X-Backend")] = c
	}
	if conns[a] == nil || conns[b] == nil {
		t.Fatalf("WebSockets went to %v, want one each to %s and %s", conns, a, b)
	}
	writeConfig(t, path, []string{b}, "")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	// The socket on the removed backend gets a close frame after the grace.
	_, _, err := conns[a].Read(dctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Fatalf("socket on the removed backend: read error %v (close status %d), want going away", err, got)
	}
	// The one on the kept backend still echoes.
	if err := conns[b].Write(dctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatalf("write on the kept socket: %v", err)
	}
	if _, msg, err := conns[b].Read(dctx); err != nil || string(msg) != "still here" {
		t.Fatalf("echo on the kept socket = %q, %v; want \"still here\"", msg, err)
	}
}

// heldBackend answers GET /health with 200, and /hold once release is
// called, after sending its path to arrived; anything else gets 404.
func heldBackend(t *testing.T) (url string, arrived <-chan string, release func()) {
	t.Helper()
	got, rel := make(chan string, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			io.WriteString(w, "ok")
		case "/hold":
			got <- r.URL.Path
			select {
			case <-rel:
				io.WriteString(w, "released")
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got, sync.OnceFunc(func() { close(rel) })
}

// TestReloadAppliesListenerLimits: changing a listener's limits on the same
// address starts a new server generation on the same socket, and a request
// in flight on the old generation completes.
func TestReloadAppliesListenerLimits(t *testing.T) {
	a, arrived, release := heldBackend(t)
	defer release() // before the server's shutdown waits for the request
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeConfig(t, path, []string{a}, "")
	srv, _ := runFile(t, path)
	addr := srv.Addr("public").String()

	long := "/" + strings.Repeat("x", 500)
	status := func(c net.Conn, path string) string {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err.Error()
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Status
	}
	old, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := status(old, long); !strings.HasPrefix(got, "404") {
		t.Fatalf("before the reload: %q, want 404 from the backend", got)
	}

	// A request in flight on the old generation across the reload: the
	// backend holds it until the reload is over.
	inflight := make(chan string, 1)
	go func() { inflight <- status(old, "/hold") }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatalf("the request to /hold did not reach the backend within 10s")
	}
	raw, _ := os.ReadFile(path)
	cfg := strings.Replace(string(raw), "    pool: web\n", "    pool: web\n    limits: {max_uri_bytes: 100}\n", 1)
	// The old generation drains within shutdown_timeout: long enough that
	// a loaded machine cannot make it cut the held request.
	cfg = strings.Replace(cfg, "shutdown_timeout: 2s", "shutdown_timeout: 30s", 1)
	os.WriteFile(path, []byte(cfg), 0o644)
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	fresh, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if got := status(fresh, long); !strings.HasPrefix(got, "414") {
		t.Errorf("new connection after the reload: %q, want 414", got)
	}
	release()
	if got := <-inflight; !strings.HasPrefix(got, "200") {
		t.Errorf("request in flight across the reload: %q, want 200", got)
	}
}

// event_loops sets how many loops serve engine: loop listeners. It is read
// when the loops are made, with the first such listener (at start or at a
// reload that succeeds); a reload that changes it afterwards keeps the
// loops running.
func TestEventLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("server: engine: loop needs Linux")
	}
	a := startBackend(t, t.Context())
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	start := func() (*Server, func(loops int, engine, extra string)) {
		path := filepath.Join(t.TempDir(), "sluice.yaml")
		writeConfig(t, path, []string{a}, "")
		raw, _ := os.ReadFile(path)
		write := func(loops int, engine, extra string) {
			cfg := strings.Replace(string(raw), "    pool: web\n", "    pool: web\n    engine: "+engine+"\n"+extra, 1)
			os.WriteFile(path, []byte(cfg+fmt.Sprintf("event_loops: %d\n", loops)), 0o644)
		}
		write(2, "h1", "")
		srv, _ := runFile(t, path)
		return srv, write
	}
	get := func(srv *Server) {
		t.Helper()
		resp, err := http.Get("http://" + srv.Addr("public").String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	loops := func(srv *Server) int {
		srv.loopsMu.Lock()
		defer srv.loopsMu.Unlock()
		if srv.loops == nil {
			return 0
		}
		return srv.loops.Len()
	}

	// The first loop listener comes with a reload that sets event_loops.
	srv, write := start()
	write(3, "loop", "")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	get(srv)
	if n := loops(srv); n != 3 {
		t.Fatalf("%d loops after a reload to event_loops: 3 made them, want 3", n)
	}
	write(1, "loop", "")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	get(srv)
	if n := loops(srv); n != 3 {
		t.Fatalf("%d loops after a reload to event_loops: 1 with loops running, want the 3 running", n)
	}

	// A reload that fails sets nothing: the next one makes the loops with
	// the value that was kept.
	srv, write = start()
	write(64, "loop", "  - name: busy\n    address: \""+taken.Addr().String()+"\"\n    pool: web\n")
	if err := srv.Reload(); err == nil {
		t.Fatal("a reload with a listener on a taken address succeeded")
	}
	write(2, "loop", "")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	get(srv)
	if n := loops(srv); n != 2 {
		t.Fatalf("%d loops after a failed reload to event_loops: 64 and a good one to 2, want 2", n)
	}
}
