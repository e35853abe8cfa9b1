package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/health"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxy/nethttp"
	"github.com/sluice-lb/sluice/internal/route"
)

// These tests run the HTTP/1.1 engine (NewEngine + Serve) on a loopback
// listener in front of real backends on 127.0.0.1: httptest servers, or raw
// TCP listeners scripted byte by byte. Clients are raw TCP connections, so
// that the tests see exactly the bytes the engine writes. Every connection
// has a deadline; every loop is bounded.

// ioDeadline is the deadline set on every test connection: 10 s from now,
// or just before the test's own deadline when it is sooner.
func ioDeadline(tb testing.TB) time.Time {
	d := time.Now().Add(10 * time.Second)
	if t, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if td, ok := t.Deadline(); ok && td.Add(-2*time.Second).Before(d) {
			d = td.Add(-2 * time.Second)
		}
	}
	return d
}

// engineSetup is the configuration of one engine under test: the defaults
// of internal/config unless a test changes them.
type engineSetup struct {
	Pool     config.PoolTimeouts
	Retries  config.Retries
	Limits   config.Limits
	Listener config.ListenerTimeouts
	Trusted  []netip.Prefix
	WithStd  bool // also serve the same view with the net/http codec
	// UpstreamTLS is the client config for https:// backends (nil: Go's).
	UpstreamTLS *tls.Config
	// Wrap, when set, wraps the engine's listener.
	Wrap func(net.Listener) net.Listener
	// Tracer, when set, traces every request (see proxy.Listener.Tracer).
	Tracer trace.Tracer
	// OnLoops serves the engine's connections on event loops, whatever
	// loopEngine says.
	OnLoops bool
	// PerBackend, MaxQueue and QueueTimeout set the pool's queue
	// (pool.Limit; 0: no cap).
	PerBackend   int64
	MaxQueue     int
	QueueTimeout time.Duration
	// Listen is the engine's listening address ("": 127.0.0.1:0).
	Listen string
	// Access is the access log (nil: off).
	Access *accesslog.Logger
	// TLS terminates TLS on the listener, whatever overTLS says.
	TLS bool
}

// loopEngine runs these tests with the engine's connections served on
// event loops (engine: loop): SLUICE_H1_ENGINE=loop, as make test does in
// a second pass.
var loopEngine = os.Getenv("SLUICE_H1_ENGINE") == "loop"

// overTLS runs these tests over TLS: the engine's listener terminates TLS
// as a TLS listener's front does (the handshake on a goroutine, over
// LoopTLS, so that a loop can take the connection), and every client
// connection is TLS: SLUICE_H1_TLS=1, as make test does in a third pass
// (with SLUICE_H1_ENGINE=loop).
var overTLS = os.Getenv("SLUICE_H1_TLS") == "1"

// skipOverTLS skips a test that needs the client's raw TCP socket (a
// reset, a half-close, a byte count on the wire) when overTLS is set.
func skipOverTLS(t *testing.T, why string) {
	t.Helper()
	if overTLS {
		t.Skip("SLUICE_H1_TLS: " + why)
	}
}

// skipOnLoops skips a test of the goroutine engine's own mechanics when
// the engine runs on loops (loopEngine), saying why.
func skipOnLoops(t *testing.T, why string) {
	t.Helper()
	if loopEngine {
		t.Skip("engine: loop: " + why)
	}
}

func defaultSetup() engineSetup {
	return engineSetup{
		Pool: config.PoolTimeouts{Connect: 3 * time.Second, ResponseHeader: 30 * time.Second, Idle: 90 * time.Second},
		Retries: config.Retries{NumRetries: 2, BudgetPercent: 20, BackoffBase: 25 * time.Millisecond,
			BackoffMax: 250 * time.Millisecond, OnConnectFailure: true, OnReset: true},
		Limits:   config.Limits{MaxHeaderBytes: 65536, MaxHeaders: 100, MaxURIBytes: 8192},
		Listener: config.ListenerTimeouts{ReadHeader: 10 * time.Second, Idle: 120 * time.Second},
	}
}

// engineEnv is an engine serving one listener with one pool.
type engineEnv struct {
	addr    string // the engine's listener
	stdURL  string // the net/http codec's, with WithStd
	engine  *Engine
	target  *proxy.Target
	pool    *pool.Pool
	backend []*pool.Backend
	served  chan error // Serve's result (put back by a test that takes it)
	loops   *Loops     // the engine's loops (loopEngine); nil: none
}

func startEngine(tb testing.TB, s engineSetup, backends ...string) *engineEnv {
	tb.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var bs []*pool.Backend
	for _, a := range backends {
		u, err := url.Parse(a)
		if err != nil {
			tb.Fatal(err)
		}
		bs = append(bs, pool.NewBackend(a, u, 1))
	}
	p := pool.New("web", balance.RoundRobin{}, bs)
	p.Budget.SetPercent(100)
	p.Limit.PerBackend, p.Limit.MaxQueue, p.Limit.Timeout = s.PerBackend, s.MaxQueue, s.QueueTimeout
	up := proxy.NewUpstream(s.Pool, s.UpstreamTLS)
	tg := &proxy.Target{Pool: p, Health: health.New(p, nil, logger, health.Options{}), Retries: s.Retries,
		Timeouts: s.Pool, Upstream: up, RetryAfter: "1"}
	view := &atomic.Pointer[proxy.Listener]{}
	view.Store(&proxy.Listener{Name: "test", Routes: route.Compile(nil, "web", func(string) int { return 0 }),
		Targets: []*proxy.Target{tg}, NoPool: &pool.Stats{}, Limits: s.Limits, Trusted: s.Trusted,
		Stats: &proxy.ListenerStats{}, Tracer: s.Tracer, Access: s.Access, TLS: overTLS || s.TLS})
	ids := proxy.NewRequestIDs()
	tunnels := &proxy.Tunnels{}
	var loops *Loops
	stopLoops := func() {}
	if loopEngine || s.OnLoops {
		var err error
		if loops, err = NewLoops(2, logger); err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- loops.Run(ctx) }()
		stopLoops = func() {
			cancel()
			if err := recv(tb, done, "the loops to stop"); err != nil {
				tb.Errorf("Loops.Run = %v", err)
			}
			loops.Close()
		}
	}
	e := NewEngine(EngineOptions{View: view, IDs: ids, Logger: logger, Tunnels: tunnels,
		Timeouts: s.Listener, Limits: s.Limits, Loops: loops})
	listen := s.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	env := &engineEnv{addr: ln.Addr().String(), engine: e, target: tg, pool: p, backend: bs, served: served, loops: loops}
	if s.Wrap != nil {
		ln = s.Wrap(ln)
	}
	if overTLS || s.TLS {
		ln = newTLSListener(tb, ln)
	}
	go func() { served <- e.Serve(ln) }()
	if s.WithStd {
		std := httptest.NewServer(nethttp.NewHandler(view, ids, logger, tunnels))
		tb.Cleanup(std.Close)
		env.stdURL = std.URL
	}
	tb.Cleanup(func() {
		e.Close()
		if err := recv(tb, served, "Serve to return"); err != http.ErrServerClosed {
			tb.Errorf("Serve = %v, want http.ErrServerClosed", err)
		}
		stopLoops()
		up.Close()
		tunnels.CloseAll(time.Second)
	})
	return env
}

// idleUpstream returns the number of idle engine connections to b.
func (env *engineEnv) idleUpstream(b *pool.Backend) int {
	h := connsOf(env.target.Upstream).host(b)
	h.mu.Lock()
	n := len(h.idle)
	h.mu.Unlock()
	if env.loops != nil {
		n += env.loops.idle(b)
	}
	return n
}

// waitIdleClosed waits until the engine holds b's connection, which b
// has just closed, as idle: the goroutine engine finds that out only by
// its peek before the next use, which the test is about. A loop closes
// such a connection at once, at its event, and has nothing to wait for.
func (env *engineEnv) waitIdleClosed(tb testing.TB, b *pool.Backend) {
	tb.Helper()
	if env.loops == nil {
		waitFor(tb, "the upstream connection back in the idle pool", func() bool { return env.idleUpstream(b) == 1 })
	}
}

// waitFor polls cond until it holds (a precondition, not an assertion),
// for at most 5 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv receives from ch, failing the test after 5 s.
func recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// rawBackend is a TCP listener whose connections a test scripts.
type rawBackend struct {
	URL   string
	conns atomic.Int32 // connections accepted
	ln    net.Listener
	mu    sync.Mutex
	open  map[net.Conn]struct{}
	shut  bool
	wg    sync.WaitGroup
}

// newRawBackend serves each connection with serve, then closes it.
func newRawBackend(tb testing.TB, serve func(c net.Conn, br *bufio.Reader)) *rawBackend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	rb := &rawBackend{URL: "http://" + ln.Addr().String(), ln: ln, open: map[net.Conn]struct{}{}}
	rb.wg.Add(1)
	go func() {
		defer rb.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rb.conns.Add(1)
			rb.mu.Lock()
			if rb.shut {
				rb.mu.Unlock()
				c.Close()
				return
			}
			rb.open[c] = struct{}{}
			rb.wg.Add(1)
			rb.mu.Unlock()
			go func() {
				defer rb.wg.Done()
				defer func() {
					rb.mu.Lock()
					delete(rb.open, c)
					rb.mu.Unlock()
					c.Close()
				}()
				if _, ok := tb.(*testing.B); !ok {
					c.SetDeadline(ioDeadline(tb))
				}
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	tb.Cleanup(func() {
		rb.mu.Lock()
		rb.shut = true
		ln.Close()
		for c := range rb.open {
			c.Close()
		}
		rb.mu.Unlock()
		rb.wg.Wait()
	})
	return rb
}

// eachRequest serves requests in a loop: respond returns the raw bytes of
// the answer, and whether to close the connection after it.
func eachRequest(respond func(r *http.Request, body []byte) (string, bool)) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			out, closeAfter := respond(r, body)
			if _, err := io.WriteString(c, out); err != nil || closeAfter {
				return
			}
		}
	}
}

// countingServer is an httptest server that counts the connections it
// accepted.
func countingServer(tb testing.TB, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	tb.Cleanup(srv.Close)
	return srv, &n
}

// testClient is a raw client connection to the engine.
type testClient struct {
	tb testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialClient(tb testing.TB, addr string) *testClient {
	tb.Helper()
	return dialClientTLS(tb, addr, overTLS)
}

// dialClientTLS is dialClient over TLS or not, as tls says.
func dialClientTLS(tb testing.TB, addr string, tls bool) *testClient {
	tb.Helper()
	nc := dialEngine(tb, addr, tls)
	nc.SetDeadline(ioDeadline(tb))
	tb.Cleanup(func() { nc.Close() })
	return &testClient{tb: tb, nc: nc, br: bufio.NewReader(nc)}
}

func (c *testClient) write(s string) {
	c.tb.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.tb.Fatalf("write to the engine: %v", err)
	}
}

// read reads one response to a request with method, and its whole body.
func (c *testClient) read(method string) (*http.Response, []byte) {
	c.tb.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.tb.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.tb.Fatalf("read response body: %v", err)
	}
	return resp, body
}

// get sends a GET for path and reads the answer.
func (c *testClient) get(path string) (*http.Response, []byte) {
	c.tb.Helper()
	c.write("GET " + path + " HTTP/1.1\r\nHost: test.example\r\n\r\n")
	return c.read("GET")
}

// rawHead reads one head, up to its empty line, as it came.
func (c *testClient) rawHead() string {
	c.tb.Helper()
	var sb strings.Builder
	for range 1000 {
		l, err := c.br.ReadString('\n')
		sb.WriteString(l)
		if err != nil {
			c.tb.Fatalf("read head: %v (so far %q)", err, sb.String())
		}
		if l == "\r\n" || l == "\n" {
			return sb.String()
		}
	}
	c.tb.Fatalf("head of more than 1000 lines: %q", sb.String())
	return ""
}

// expectEOF checks that the engine closes the connection with nothing more
// to read.
func (c *testClient) expectEOF() {
	c.tb.Helper()
	b, err := c.br.ReadByte()
	if err == nil {
		rest, _ := c.br.Peek(c.br.Buffered())
		c.tb.Fatalf("read %q after the response, want EOF", append([]byte{b}, rest...))
	}
	if err != io.EOF && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.tb.Fatalf("read after the response: %v, want EOF", err)
	}
}

// parseHead parses a raw response head (its body is not read).
func parseHead(tb testing.TB, raw, method string) *http.Response {
	tb.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), &http.Request{Method: method})
	if err != nil {
		tb.Fatalf("parse head %q: %v", raw, err)
	}
	return resp
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// chunkedBody encodes body in chunks of varying sizes, with an extension on
// the first chunk and the given trailer section ("" for none).
func chunkedBody(body []byte, trailer string) string {
	sizes := []int{1, 7, 100, 4096, 65536, 3, 10000}
	var sb strings.Builder
	for i, k := 0, 0; i < len(body); k++ {
		n := min(sizes[k%len(sizes)], len(body)-i)
		sb.WriteString(strconv.FormatInt(int64(n), 16))
		if k == 0 {
			sb.WriteString(";ext=1")
		}
		sb.WriteString("\r\n")
		sb.Write(body[i : i+n])
		sb.WriteString("\r\n")
		i += n
	}
	sb.WriteString("0\r\n")
	sb.WriteString(trailer)
	sb.WriteString("\r\n")
	return sb.String()
}

func TestEngineKeepAliveReusesUpstream(t *testing.T) {
	srv, accepted := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "path="+r.URL.Path)
	})
	env := startEngine(t, defaultSetup(), srv.URL)
	const n = 20
	seen := map[string]bool{}
	for round := range 2 { // two client connections, one after the other
		// The engine returns the upstream connection to its pool after the
		// last byte of the answer went to the client, so a client that asks
		// again at once on another connection may race it (and get a new
		// upstream connection); on one client connection it cannot.
		waitFor(t, "the upstream connection back in the idle pool", func() bool {
			return round == 0 || env.idleUpstream(env.backend[0]) == 1
		})
		c := dialClient(t, env.addr)
		for i := range n {
			resp, body := c.get(fmt.Sprintf("/r%d", i))
			if resp.StatusCode != 200 || string(body) != fmt.Sprintf("path=/r%d", i) {
				t.Fatalf("round %d request %d: %d %q", round, i, resp.StatusCode, body)
			}
			if resp.Close {
				t.Fatalf("round %d request %d: the engine closed a keep-alive connection", round, i)
			}
			id := resp.Header.Get("X-Request-Id")
			if id == "" || seen[id] {
				t.Fatalf("request %d: X-Request-Id %q missing or repeated", i, id)
			}
			seen[id] = true
		}
		c.nc.Close()
	}
	if got := accepted.Load(); got != 1 && !(loopEngine && got == 2) {
		// On loops, the two client connections may be on two loops,
		// each with connections of its own.
		t.Errorf("the backend accepted %d connections for %d sequential requests, want 1", got, 2*n)
	}
}

func TestEnginePipelined(t *testing.T) {
	srv, accepted := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s [%s]", r.Method, r.URL.Path, body)
	})
	env := startEngine(t, defaultSetup(), srv.URL)
	c := dialClient(t, env.addr)
	reqs := "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n" +
		"HEAD /5 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /6 HTTP/1.1\r\nHost: a\r\n\r\n"
	c.write(reqs) // one write
	want := []struct{ method, body string }{
		{"GET", "GET /1 []"}, {"POST", "POST /2 [hello]"}, {"GET", "GET /3 []"},
		{"POST", "POST /4 [abcde]"}, {"HEAD", ""}, {"GET", "GET /6 []"},
	}
	for i, w := range want {
		resp, body := c.read(w.method)
		if resp.StatusCode != 200 || string(body) != w.body {
			t.Fatalf("response %d: %d %q, want 200 %q", i+1, resp.StatusCode, body, w.body)
		}
	}
	if got := accepted.Load(); got != 1 && !(loopEngine && got == 2) {
		// On a loop, the connection is handed to a goroutine at the
		// first request with a body, and that one has connections of
		// its own.
		t.Errorf("backend connections = %d, want 1", got)
	}
}

// TestEngineNoBodyResponses: answers to HEAD, 204 and 304 carry no body
// whatever their Content-Length says; the engine must neither wait for one
// nor send one, and both connections stay usable.
func TestEngineNoBodyResponses(t *testing.T) {
	rb := newRawBackend(t, eachRequest(func(r *http.Request, _ []byte) (string, bool) {
		switch {
		case r.URL.Path == "/204":
			return "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", false
		case r.URL.Path == "/304":
			return "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 1234\r\n\r\n", false
		case r.Method == "HEAD":
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n", false
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", false
	}))
	env := startEngine(t, defaultSetup(), rb.URL)
	c := dialClient(t, env.addr)
	for _, tt := range []struct {
		method, path string
		status       int
		cl           string // the Content-Length the client must see ("" : not checked)
	}{
		{"HEAD", "/", 200, "1000"},
		{"GET", "/204", 204, ""},
		{"GET", "/304", 304, "1234"},
		{"HEAD", "/304", 304, "1234"},
	} {
		c.write(tt.method + " " + tt.path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		head := c.rawHead()
		resp := parseHead(t, head, tt.method)
		if resp.StatusCode != tt.status {
			t.Fatalf("%s %s: status %d, want %d (head %q)", tt.method, tt.path, resp.StatusCode, tt.status, head)
		}
		if got := resp.Header.Get("Content-Length"); tt.cl != "" && got != tt.cl {
			t.Errorf("%s %s: Content-Length %q, want %q passed on", tt.method, tt.path, got, tt.cl)
		}
		if te := resp.Header.Get("Transfer-Encoding"); te != "" || resp.Close {
			t.Errorf("%s %s: Transfer-Encoding %q, close %v; want neither", tt.method, tt.path, te, resp.Close)
		}
		// No body bytes may follow: the next answer starts right here.
		r2, body := c.get("/next")
		if r2.StatusCode != 200 || string(body) != "next" {
			t.Fatalf("after %s %s: next response %d %q", tt.method, tt.path, r2.StatusCode, body)
		}
	}
	if got := rb.conns.Load(); got != 1 {
		t.Errorf("backend connections = %d, want 1 (no-body answers keep the connection)", got)
	}
}

func TestEngineChunkedResponse(t *testing.T) {
	data := randomBytes(70000, 1)
	var raw strings.Builder // the chunked body as the backend sends it
	raw.WriteString("5\r\nhello\r\n")
	raw.WriteString("6;name=\"v\"\r\n world\r\n")
	fmt.Fprintf(&raw, "%x\r\n%s\r\n", len(data), data)
	raw.WriteString("1\r\n!\r\n")
	raw.WriteString("0\r\nX-Checksum: abc123\r\nX-Other: 1\r\n\r\n")
	wire := raw.String()
	decoded := "hello world" + string(data) + "!"
	rb := newRawBackend(t, eachRequest(func(r *http.Request, _ []byte) (string, bool) {
		if r.URL.Path == "/next" {
			return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", false
		}
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Checksum, X-Other\r\nTransfer-Encoding: chunked\r\n\r\n" + wire, false
	}))
	env := startEngine(t, defaultSetup(), rb.URL)

	t.Run("HTTP/1.1 client gets it intact", func(t *testing.T) {
		c := dialClient(t, env.addr)
		for i := range 2 {
			c.write("GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
			head := c.rawHead()
			resp := parseHead(t, head, "GET")
			if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" ||
				resp.ContentLength != -1 || resp.Close {
				t.Fatalf("head: %d TE %v CL %d close %v, want 200 chunked keep-alive", resp.StatusCode,
					resp.TransferEncoding, resp.ContentLength, resp.Close)
			}
			if !strings.Contains(head, "\r\nTrailer: X-Checksum, X-Other\r\n") {
				t.Errorf("head %q: want the Trailer field passed on", head)
			}
			got := make([]byte, len(wire))
			if _, err := io.ReadFull(c.br, got); err != nil {
				t.Fatalf("read body: %v", err)
			}
			if string(got) != wire {
				t.Fatalf("round %d: chunked body differs from the backend's (%d bytes)", i, len(wire))
			}
			r2, body := c.get("/next")
			if r2.StatusCode != 200 || string(body) != "next" {
				t.Fatalf("next: %d %q", r2.StatusCode, body)
			}
		}
		if got := rb.conns.Load(); got != 1 {
			t.Errorf("backend connections = %d, want 1 (a chunked answer keeps the connection)", got)
		}
	})

	t.Run("HTTP/1.0 client gets it de-chunked", func(t *testing.T) {
		for _, extra := range []string{"", "Connection: keep-alive\r\n"} {
			c := dialClient(t, env.addr)
			c.write("GET / HTTP/1.0\r\nHost: a\r\n" + extra + "\r\n")
			head := c.rawHead()
			resp := parseHead(t, head, "GET")
			if resp.StatusCode != 200 || resp.Header.Get("Transfer-Encoding") != "" || len(resp.TransferEncoding) != 0 {
				t.Fatalf("head %q: want 200 without Transfer-Encoding", head)
			}
			if strings.Contains(head, "\r\nTrailer:") || resp.Header.Get("Content-Length") != "" {
				t.Errorf("head %q: want no Trailer and no Content-Length", head)
			}
			if !strings.Contains(head, "\r\nConnection: close\r\n") {
				t.Errorf("head %q: want Connection: close", head)
			}
			body, err := io.ReadAll(c.br) // until the engine closes
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if string(body) != decoded {
				t.Fatalf("de-chunked body: %d bytes, want %d (equal: %v)", len(body), len(decoded), string(body) == decoded)
			}
		}
	})
}

// TestEngineUntilCloseResponse: a response without a length ends when the
// backend closes; an HTTP/1.1 client gets it chunked and keeps its
// connection, an HTTP/1.0 one gets it raw until the close.
func TestEngineUntilCloseResponse(t *testing.T) {
	data := randomBytes(100000, 2)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if r.URL.Path == "/next" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
			http.ReadRequest(br) // until the engine closes or reuses it
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
		for i := 0; i < len(data); i += 7000 {
			if _, err := c.Write(data[i:min(i+7000, len(data))]); err != nil {
				return
			}
		}
		// Return: the connection closes, which ends the body.
	})
	env := startEngine(t, defaultSetup(), rb.URL)

	t.Run("HTTP/1.1 chunked", func(t *testing.T) {
		c := dialClient(t, env.addr)
		c.write("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("status %d TE %v, want 200 chunked", resp.StatusCode, resp.TransferEncoding)
		}
		if resp.Close {
			t.Errorf("the client connection is closed, want it kept (the body is framed)")
		}
		if !bytes.Equal(body, data) {
			t.Fatalf("body: %d bytes, want the backend's %d", len(body), len(data))
		}
		r2, b2 := c.get("/next")
		if r2.StatusCode != 200 || string(b2) != "next" {
			t.Fatalf("next: %d %q", r2.StatusCode, b2)
		}
	})
	t.Run("HTTP/1.0 raw", func(t *testing.T) {
		c := dialClient(t, env.addr)
		c.write("GET / HTTP/1.0\r\nHost: a\r\n\r\n")
		head := c.rawHead()
		resp := parseHead(t, head, "GET")
		if resp.StatusCode != 200 || resp.Header.Get("Transfer-Encoding") != "" || !resp.Close {
			t.Fatalf("head %q: want 200, no Transfer-Encoding, Connection: close", head)
		}
		body, err := io.ReadAll(c.br)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, data) {
			t.Fatalf("body: %d bytes, want the backend's %d", len(body), len(data))
		}
	})
}

// TestEngineLargeResponse: a 1 MiB fixed-length body (spliced) arrives
// byte-exact, twice on one connection, over one backend connection.
func TestEngineLargeResponse(t *testing.T) {
	data := randomBytes(1<<20, 3)
	srv, accepted := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	})
	env := startEngine(t, defaultSetup(), srv.URL)
	c := dialClient(t, env.addr)
	for i := range 3 {
		resp, body := c.get("/big")
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
			t.Fatalf("round %d: %d, Content-Length %d", i, resp.StatusCode, resp.ContentLength)
		}
		if !bytes.Equal(body, data) {
			t.Fatalf("round %d: body of %d bytes differs from the backend's", i, len(body))
		}
	}
	if got := accepted.Load(); got != 1 {
		t.Errorf("backend connections = %d, want 1", got)
	}
}

// bodyEcho answers with what it received: length, SHA-256, transfer
// coding, Content-Length and the X-Checksum trailer.
func bodyEcho(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	fmt.Fprintf(w, "%d %x te=%s cl=%d trailer=%s", n, h.Sum(nil), strings.Join(r.TransferEncoding, ","),
		r.ContentLength, r.Trailer.Get("X-Checksum"))
}

func TestEngineRequestBodies(t *testing.T) {
	srv, _ := countingServer(t, bodyEcho)
	env := startEngine(t, defaultSetup(), srv.URL)
	small := []byte("hello, backend")
	big := randomBytes(1<<20, 4)
	for _, tt := range []struct {
		name    string
		body    []byte
		chunked bool
	}{
		{"small Content-Length", small, false},
		{"1 MiB Content-Length", big, false},
		{"small chunked", small, true},
		{"1 MiB chunked", big, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialClient(t, env.addr)
			for round := range 2 {
				var req string
				want := fmt.Sprintf("%d %x ", len(tt.body), sha256.Sum256(tt.body))
				if tt.chunked {
					req = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
						chunkedBody(tt.body, "X-Checksum: sum\r\n")
					want += "te=chunked cl=-1 trailer=sum"
				} else {
					req = fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(tt.body), tt.body)
					want += fmt.Sprintf("te= cl=%d trailer=", len(tt.body))
				}
				// The client writes while the engine streams: the write
				// goes on in its own goroutine.
				werr := make(chan error, 1)
				go func() {
					_, err := io.WriteString(c.nc, req)
					werr <- err
				}()
				resp, body := c.read("POST")
				if err := recv(t, werr, "the client's write"); err != nil {
					t.Fatalf("round %d: write: %v", round, err)
				}
				if resp.StatusCode != 200 || string(body) != want {
					t.Fatalf("round %d: %d %q\nwant 200 %q", round, resp.StatusCode, body, want)
				}
				if resp.Close {
					// Allowed after a streamed body (the backend may answer
					// before the engine learnt that the body ended), but
					// then the connection must end.
					t.Logf("round %d: the engine closed the client connection after the body", round)
					c.expectEOF()
					c = dialClient(t, env.addr)
					continue
				}
				r2, b2 := c.get("/after")
				if r2.StatusCode != 200 || !strings.HasPrefix(string(b2), "0 ") {
					t.Fatalf("round %d: GET after the body: %d %q", round, r2.StatusCode, b2)
				}
			}
		})
	}
}

func TestEngineExpectContinue(t *testing.T) {
	srv, _ := countingServer(t, bodyEcho)
	env := startEngine(t, defaultSetup(), srv.URL)
	for _, size := range []int{11, 1 << 20} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			body := randomBytes(size, uint64(size))
			c := dialClient(t, env.addr)
			c.nc.SetDeadline(time.Now().Add(5 * time.Second))
			c.write(fmt.Sprintf("PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", size))
			head := c.rawHead()
			if head != "HTTP/1.1 100 Continue\r\n\r\n" {
				t.Fatalf("first answer %q, want a bare 100 Continue", head)
			}
			werr := make(chan error, 1)
			go func() {
				_, err := c.nc.Write(body)
				werr <- err
			}()
			resp, got := c.read("PUT")
			if err := recv(t, werr, "the client's write"); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%d %x te= cl=%d trailer=", size, sha256.Sum256(body), size)
			if resp.StatusCode != 200 || string(got) != want {
				t.Fatalf("final answer %d %q, want 200 %q (a second 100 must not reach the client)", resp.StatusCode, got, want)
			}
		})
	}
}

// TestEngineStaleUpstreamRetry: the backend closes an idle keep-alive
// connection between two requests; the next GET must still succeed on a
// new connection, without counting as a retry (num_retries is 0).
func TestEngineStaleUpstreamRetry(t *testing.T) {
	for _, tt := range []struct {
		name string
	}{
		{"closed while idle: found by the peek before use"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			closed := make(chan struct{}, 10)
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
				defer func() { c.Close(); closed <- struct{}{} }() // closed first: the signal means the FIN is out
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				// Then close, as a backend's idle timeout does, without
				// having said Connection: close.
			})
			s := defaultSetup()
			s.Retries.NumRetries = 0
			env := startEngine(t, s, rb.URL)
			b := env.backend[0]
			c := dialClient(t, env.addr)
			for i := range 3 {
				resp, body := c.get("/")
				if resp.StatusCode != 200 || string(body) != "ok" {
					t.Fatalf("request %d: %d %q, want 200 ok", i, resp.StatusCode, body)
				}
				recv(t, closed, "the backend to close") // the backend closed the connection
				env.waitIdleClosed(t, b)
			}
			if got := rb.conns.Load(); got != 3 {
				t.Errorf("backend connections = %d, want 3", got)
			}
			if got := b.Stats.Failures.Load(); got != 0 {
				t.Errorf("backend failures = %d, want 0: a stale idle connection is not the backend's failure", got)
			}
		})
	}
}

// TestEngineStaleUpstreamPOST: a backend closed an idle keep-alive
// connection (without Connection: close) and a POST comes next. The POST
// cannot be retried (not idempotent), so it must not be sent on the dead
// connection: the net/http codec, whose Transport notices the close at
// once, delivers it; the engine must too.
func TestEngineStaleUpstreamPOST(t *testing.T) {
	closed := make(chan struct{}, 10)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		defer func() { c.Close(); closed <- struct{}{} }() // closed first: the signal means the FIN is out
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(r.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(2+len(body))+"\r\n\r\nok"+string(body))
	})
	s := defaultSetup()
	s.WithStd = true
	env := startEngine(t, s, rb.URL)
	b := env.backend[0]
	for k, addr := range []string{strings.TrimPrefix(env.stdURL, "http://"), env.addr} {
		codec := []string{"net/http codec", "engine"}[k]
		c := dialClientTLS(t, addr, overTLS && k == 1)
		if resp, body := c.get("/"); resp.StatusCode != 200 {
			t.Fatalf("%s: GET: %d %q", codec, resp.StatusCode, body)
		}
		recv(t, closed, "the backend to close")
		if k == 1 {
			env.waitIdleClosed(t, b)
		}
		c.write("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
		resp, body := c.read("POST")
		if resp.StatusCode != 200 || string(body) != "okabc" {
			if k == 0 { // the reference: its Transport may lose the race with the close
				t.Logf("%s: POST after the backend closed its idle connection: %d %q", codec, resp.StatusCode, body)
			} else {
				t.Errorf("%s: POST after the backend closed its idle connection: %d %q, want 200 \"okabc\"", codec, resp.StatusCode, body)
			}
			continue
		}
		recv(t, closed, "the backend to close")
	}
}

func TestEngineInvalidResponse502(t *testing.T) {
	for _, tt := range []struct{ name, answer string }{
		{"malformed status line", "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"},
		{"not HTTP", "garbage\r\n\r\n"},
		{"conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"},
		{"unknown Transfer-Encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
		{"space in a field name", "HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n"},
		{"closed without an answer", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, eachRequest(func(*http.Request, []byte) (string, bool) { return tt.answer, true }))
			s := defaultSetup()
			s.Retries.NumRetries = 0
			env := startEngine(t, s, rb.URL)
			c := dialClient(t, env.addr)
			for i := range 2 {
				resp, body := c.get("/")
				if resp.StatusCode != 502 {
					t.Fatalf("request %d: status %d %q, want 502", i, resp.StatusCode, body)
				}
				if resp.Header.Get("X-Request-Id") == "" {
					t.Errorf("502 without X-Request-Id")
				}
				if resp.Close {
					break
				}
			}
		})
	}
}

func TestEngineResponseHeaderTimeout504(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.Copy(io.Discard, br) // never answers; returns when the engine closes
	})
	s := defaultSetup()
	s.Pool.ResponseHeader = 200 * time.Millisecond
	s.Retries.NumRetries = 0
	env := startEngine(t, s, rb.URL)
	c := dialClient(t, env.addr)
	resp, _ := c.get("/slow")
	if resp.StatusCode != 504 {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	// The connection is still good for the next request.
	c.write("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != 504 {
		t.Fatalf("second request: status %d, want 504", resp.StatusCode)
	}
}

func TestEngineInterimResponsesDropped(t *testing.T) {
	rb := newRawBackend(t, eachRequest(func(*http.Request, []byte) (string, bool) {
		return "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 100 Continue\r\n\r\n" +
			"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal", false
	}))
	env := startEngine(t, defaultSetup(), rb.URL)
	c := dialClient(t, env.addr)
	for i := range 2 {
		c.write("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		head := c.rawHead()
		if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || strings.Contains(head, "Link:") {
			t.Fatalf("round %d: first head %q, want the 200 alone", i, head)
		}
		resp := parseHead(t, head, "GET")
		body := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(c.br, body); err != nil || string(body) != "final" {
			t.Fatalf("round %d: body %q, %v", i, body, err)
		}
	}
}

// TestEngineInterimResponseAlone: an interim response that arrives in a
// read of its own (the final one comes later) is dropped like any other,
// and the final response is delivered.
func TestEngineInterimResponseAlone(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for range 2 {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"); err != nil {
				return
			}
			// Not an assertion: the pause makes the 103 arrive alone, as it
			// does from a backend that sends it before it computes the answer.
			time.Sleep(50 * time.Millisecond)
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"); err != nil {
				return
			}
		}
	})
	env := startEngine(t, defaultSetup(), rb.URL)
	c := dialClient(t, env.addr)
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	for i := range 2 {
		resp, body := c.get("/")
		if resp.StatusCode != 200 || string(body) != "final" {
			t.Fatalf("round %d: %d %q, want 200 final", i, resp.StatusCode, body)
		}
	}
}

// TestEngineMaxBodyBytes: bodies over max_body_bytes get 413 and never
// reach the backend.
func TestEngineMaxBodyBytes(t *testing.T) {
	var reached atomic.Int32
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		bodyEcho(w, r)
	})
	s := defaultSetup()
	s.Limits.MaxBodyBytes = 1000
	env := startEngine(t, s, srv.URL)
	over := randomBytes(2000, 5)
	huge := randomBytes(200000, 6)
	for _, tt := range []struct{ name, req string }{
		{"Content-Length over the limit", fmt.Sprintf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(over), over)},
		{"chunked over the limit, whole in one read", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody(over, "")},
		{"chunked far over the limit (streamed)", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody(huge, "")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := reached.Load()
			c := dialClient(t, env.addr)
			c.nc.SetDeadline(time.Now().Add(5 * time.Second))
			go io.WriteString(c.nc, tt.req) // may fail once the engine closes
			resp, body := c.read("POST")
			if resp.StatusCode != 413 {
				t.Fatalf("status %d %q, want 413", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Errorf("413 without Connection: close")
			}
			if reached.Load() != before {
				t.Errorf("the refused body reached the backend")
			}
		})
	}
	t.Run("Content-Length at the limit passes", func(t *testing.T) {
		c := dialClient(t, env.addr)
		body := over[:1000]
		c.write(fmt.Sprintf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
		if resp, got := c.read("POST"); resp.StatusCode != 200 || !strings.HasPrefix(string(got), "1000 ") {
			t.Fatalf("%d %q, want 200", resp.StatusCode, got)
		}
	})
}

// TestEngineMaxBodyBytesCountsContent: max_body_bytes bounds the body, not
// its chunked framing, as in the net/http codec (which counts the decoded
// bytes): a chunked body of exactly max_body_bytes passes.
func TestEngineMaxBodyBytesCountsContent(t *testing.T) {
	srv, _ := countingServer(t, bodyEcho)
	s := defaultSetup()
	s.Limits.MaxBodyBytes = 1000
	env := startEngine(t, s, srv.URL)
	body := randomBytes(1000, 7)
	c := dialClient(t, env.addr)
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	c.write("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody(body, ""))
	resp, got := c.read("POST")
	if resp.StatusCode != 200 || !strings.HasPrefix(string(got), "1000 ") {
		t.Fatalf("chunked body of exactly max_body_bytes: %d %q, want 200", resp.StatusCode, got)
	}
}

// seenRequest is what a recording backend saw of one request.
type seenRequest struct {
	Method, URI, Host string
	Header            http.Header
}

func recordingServer(tb testing.TB) (*httptest.Server, chan seenRequest) {
	seen := make(chan seenRequest, 16)
	srv, _ := countingServer(tb, func(w http.ResponseWriter, r *http.Request) {
		seen <- seenRequest{r.Method, r.RequestURI, r.Host, r.Header.Clone()}
		io.WriteString(w, "ok")
	})
	return srv, seen
}

// TestEngineForwardingHeaders checks the fields backends get against the
// expectations of headers_test.go (TestRemoveHopHeaders, TestSetForwarded).
func TestEngineForwardingHeaders(t *testing.T) {
	srv, seen := recordingServer(t)
	backendHost := strings.TrimPrefix(srv.URL, "http://")
	longID := strings.Repeat("x", 201)
	for _, tt := range []struct {
		name    string
		trusted bool
		req     string
		want    http.Header // X-Request-Id "*": a generated one
		host    string
	}{
		{"untrusted peer replaces everything; hop-by-hop removed", false,
			"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n" +
				"Connection: keep-alive, X-Custom\r\nConnection: X-Forwarded-For\r\nX-Custom: 1\r\n" +
				"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic x\r\n" +
				"Te: trailers\r\nTrailer: X-T\r\n" +
				"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n" +
				"Forwarded: for=1.2.3.4\r\nX-Real-Ip: 1.2.3.4\r\nX-Request-Id: client-id-1\r\n\r\n",
			http.Header{"Accept": {"*/*"}, "Te": {"trailers"}, "X-Forwarded-For": {"127.0.0.1"},
				"X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"example.com"}, "X-Request-Id": {"client-id-1"}},
			"example.com"},
		{"trusted peer appends and keeps proto/host", true,
			"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n" +
				"X-Forwarded-Proto: https\r\nX-Forwarded-Host: orig\r\nForwarded: for=1.2.3.4\r\nX-Real-Ip: 1.2.3.4\r\n\r\n",
			http.Header{"X-Forwarded-For": {"1.2.3.4, 5.6.7.8, 127.0.0.1"}, "X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host": {"orig"}, "Forwarded": {"for=1.2.3.4"}, "X-Real-Ip": {"1.2.3.4"}, "X-Request-Id": {"*"}},
			"example.com"},
		{"trusted peer: fields named in Connection are hop-by-hop", true,
			"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: X-Forwarded-For, X-Forwarded-Proto\r\n" +
				"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: orig\r\n\r\n",
			http.Header{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"orig"},
				"X-Request-Id": {"*"}},
			"example.com"},
		{"invalid X-Request-Id replaced; Te other than trailers dropped", false,
			"GET / HTTP/1.1\r\nHost: example.com\r\nTe: gzip\r\nX-Request-Id: " + longID + "\r\n\r\n",
			http.Header{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"},
				"X-Forwarded-Host": {"example.com"}, "X-Request-Id": {"*"}},
			"example.com"},
		{"HTTP/1.0 without Host: the backend's", false,
			"GET /x HTTP/1.0\r\n\r\n",
			http.Header{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Request-Id": {"*"}},
			backendHost},
		{"absolute-form target", false,
			"GET http://example.com/abs?z=2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
			http.Header{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"},
				"X-Forwarded-Host": {"example.com"}, "X-Request-Id": {"*"}},
			"example.com"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := defaultSetup()
			if tt.trusted {
				s.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			}
			env := startEngine(t, s, srv.URL)
			c := dialClient(t, env.addr)
			c.write(tt.req)
			resp, _ := c.read("GET")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			var got seenRequest
			select {
			case got = <-seen:
			default:
				t.Fatal("the backend saw no request")
			}
			h := got.Header
			if tt.want.Get("X-Request-Id") == "*" {
				if h.Get("X-Request-Id") == "" || h.Get("X-Request-Id") == longID {
					t.Errorf("X-Request-Id = %q, want a generated one", h.Get("X-Request-Id"))
				}
				h.Set("X-Request-Id", "*")
			}
			if overTLS && tt.want.Get("X-Forwarded-Proto") == "http" {
				tt.want.Set("X-Forwarded-Proto", "https") // sluice's own, over TLS
			}
			if diff := cmp.Diff(tt.want, h); diff != "" {
				t.Errorf("backend header (-want +got):\n%s", diff)
			}
			if got.Host != tt.host {
				t.Errorf("backend Host = %q, want %q", got.Host, tt.host)
			}
			if rid := resp.Header.Get("X-Request-Id"); rid == "" || tt.want.Get("X-Request-Id") != "*" && rid != tt.want.Get("X-Request-Id") {
				t.Errorf("response X-Request-Id = %q", rid)
			}
		})
	}
}

// TestEngineHeadersMatchStd sends the same raw requests through both
// codecs and compares what the backend saw.
func TestEngineHeadersMatchStd(t *testing.T) {
	srv, seen := recordingServer(t)
	reqs := []string{
		"GET /a/./b/../c//d?x=1&y=%41 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: ua/1\r\n" +
			"Connection: keep-alive, X-Custom\r\nX-Custom: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
			"Te: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n" +
			"Forwarded: for=1.2.3.4\r\nX-Real-Ip: 1.2.3.4\r\nX-Request-Id: keep-me\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n" +
			"X-Forwarded-Proto: https\r\nX-Forwarded-Host: orig\r\nForwarded: for=1.2.3.4\r\nX-Request-Id: keep-me\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: X-Forwarded-For, X-Forwarded-Host\r\n" +
			"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: orig\r\nX-Request-Id: keep-me\r\n\r\n",
		"GET /%7Euser/x%2Fy HTTP/1.1\r\nHost: example.com:8080\r\nX-Request-Id: keep-me\r\n\r\n",
		"DELETE /item HTTP/1.1\r\nHost: example.com\r\nIdempotency-Key: k\r\nX-Request-Id: keep-me\r\n\r\n",
	}
	for _, trusted := range []bool{false, true} {
		s := defaultSetup()
		s.WithStd = true
		if trusted {
			s.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}
		env := startEngine(t, s, srv.URL)
		for i, req := range reqs {
			var got [2]seenRequest
			for k, addr := range []string{env.addr, strings.TrimPrefix(env.stdURL, "http://")} {
				c := dialClientTLS(t, addr, overTLS && k == 0)
				c.write(req)
				method := req[:strings.IndexByte(req, ' ')]
				if resp, body := c.read(method); resp.StatusCode != 200 {
					t.Fatalf("trusted=%v request %d via %s: %d %q", trusted, i, []string{"engine", "std"}[k], resp.StatusCode, body)
				}
				select {
				case got[k] = <-seen:
				default:
					t.Fatal("the backend saw no request")
				}
			}
			if diff := cmp.Diff(got[1], got[0]); diff != "" {
				t.Errorf("trusted=%v request %d: backend saw (-std +engine):\n%s", trusted, i, diff)
			}
		}
	}
}

// wsFrame builds one binary WebSocket frame; a client's is masked.
func wsFrame(payload []byte, masked bool) []byte {
	b := []byte{0x82}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	key := [4]byte{1, 2, 3, 4}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// readWSFrame reads one frame and returns its unmasked payload.
func readWSFrame(r *bufio.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 16<<20 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	var key [4]byte
	if h[1]&0x80 != 0 {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return nil, err
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, err
	}
	if h[1]&0x80 != 0 {
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return p, nil
}

func TestEngineWebSocket(t *testing.T) {
	reqSeen := make(chan http.Header, 1)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		reqSeen <- r.Header.Clone()
		// The 101 and the first server frame in one write.
		out := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" + string(wsFrame([]byte("hello"), false))
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
		for range 100 { // echo
			p, err := readWSFrame(br)
			if err != nil {
				return
			}
			if _, err := c.Write(wsFrame(p, false)); err != nil {
				return
			}
		}
	})
	env := startEngine(t, defaultSetup(), rb.URL)
	c := dialClient(t, env.addr)
	c.write("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	head := c.rawHead()
	resp := parseHead(t, head, "GET")
	if resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") ||
		resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("head %q: want 101 with Upgrade, Connection, Sec-WebSocket-Accept and X-Request-Id", head)
	}
	h := recv(t, reqSeen, "the upgrade request at the backend")
	if !strings.EqualFold(h.Get("Upgrade"), "websocket") || !strings.EqualFold(h.Get("Connection"), "upgrade") ||
		h.Get("Sec-Websocket-Key") != "dGhlIHNhbXBsZSBub25jZQ==" || h.Get("Sec-Websocket-Version") != "13" {
		t.Fatalf("the backend got %v, want the upgrade fields", h)
	}
	if p, err := readWSFrame(c.br); err != nil || string(p) != "hello" {
		t.Fatalf("first server frame: %q, %v", p, err)
	}
	for i, size := range []int{5, 300, 70000, 0} {
		msg := randomBytes(size, uint64(10+i))
		if _, err := c.nc.Write(wsFrame(msg, true)); err != nil {
			t.Fatal(err)
		}
		p, err := readWSFrame(c.br)
		if err != nil || !bytes.Equal(p, msg) {
			t.Fatalf("echo of %d bytes: got %d bytes, %v", size, len(p), err)
		}
	}
}

// TestEngineWebSocketRefused: a backend that does not switch
// answers normally, and the connection then closes (the guard's rule).
func TestEngineWebSocketRefused(t *testing.T) {
	rb := newRawBackend(t, eachRequest(func(*http.Request, []byte) (string, bool) {
		return "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", false
	}))
	env := startEngine(t, defaultSetup(), rb.URL)
	c := dialClient(t, env.addr)
	c.write("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, body := c.read("GET")
	if resp.StatusCode != 403 || string(body) != "no" || !resp.Close {
		t.Fatalf("%d %q close=%v, want 403 no with Connection: close", resp.StatusCode, body, resp.Close)
	}
	c.expectEOF()
}

// TestEngineHTTP10KeepAlive: an HTTP/1.0 client that asks for keep-alive
// gets it with a framed response, and a close otherwise.
func TestEngineHTTP10KeepAlive(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })
	env := startEngine(t, defaultSetup(), srv.URL)
	c := dialClient(t, env.addr)
	for i := range 3 {
		c.write("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
		head := c.rawHead()
		resp := parseHead(t, head, "GET")
		if resp.StatusCode != 200 || resp.ContentLength != 2 || !strings.Contains(head, "\r\nConnection: keep-alive\r\n") {
			t.Fatalf("round %d: head %q, want 200 with Content-Length and Connection: keep-alive", i, head)
		}
		body := make([]byte, 2)
		if _, err := io.ReadFull(c.br, body); err != nil || string(body) != "hi" {
			t.Fatalf("round %d: body %q, %v", i, body, err)
		}
	}
	c.write("GET / HTTP/1.0\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || string(body) != "hi" || !resp.Close {
		t.Fatalf("plain HTTP/1.0: %d %q close=%v, want 200 hi and a close", resp.StatusCode, body, resp.Close)
	}
	c.expectEOF()
}

// --- Benchmarks ---

// benchResponse is what the raw benchmark backend answers.
const benchResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"

// benchBrowserResponse is a web application's answer, with a Connection
// field as many backends send.
const benchBrowserResponse = "HTTP/1.1 200 OK\r\nDate: Tue, 24 Nov 2026 12:00:00 GMT\r\n" +
	"Content-Type: text/html; charset=utf-8\r\nContent-Length: 13\r\nCache-Control: private, max-age=0\r\n" +
	"Set-Cookie: session=4f1c2a9e8b7d6c5f; Path=/; HttpOnly; SameSite=Lax\r\nVary: Accept-Encoding\r\n" +
	"X-Frame-Options: DENY\r\nStrict-Transport-Security: max-age=31536000\r\nConnection: keep-alive\r\n" +
	"Keep-Alive: timeout=5\r\n\r\nHello, world!"

// benchBackend answers every request head it reads with response; it
// allocates nothing per request.
func benchBackend(tb testing.TB, response string) *rawBackend {
	resp := []byte(response)
	return newRawBackend(tb, func(c net.Conn, _ *bufio.Reader) {
		buf := make([]byte, 16<<10)
		const end = "\r\n\r\n"
		m := 0
		for {
			n, err := c.Read(buf)
			k := 0
			for _, ch := range buf[:n] {
				switch {
				case ch == end[m]:
					m++
				case ch == '\r':
					m = 1
				default:
					m = 0
				}
				if m == 4 {
					k++
					m = 0
				}
			}
			for ; k > 0; k-- {
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// benchClient is a keep-alive client that sends a fixed request and reads
// the response with a minimal parser, without allocating.
type benchClient struct {
	nc  net.Conn
	req []byte
	buf []byte
}

var benchCL = []byte("\r\nContent-Length: ")

func (c *benchClient) roundTrip() error {
	if _, err := c.nc.Write(c.req); err != nil {
		return err
	}
	n, total := 0, -1
	for i := 0; i < 1000; i++ {
		m, err := c.nc.Read(c.buf[n:])
		n += m
		if total < 0 {
			if h := bytes.Index(c.buf[:n], []byte("\r\n\r\n")); h >= 0 {
				i := bytes.Index(c.buf[:h], benchCL)
				if i < 0 {
					return fmt.Errorf("no Content-Length in %q", c.buf[:h])
				}
				cl := 0
				for _, d := range c.buf[i+len(benchCL) : h+2] {
					if d < '0' || d > '9' {
						break
					}
					cl = cl*10 + int(d-'0')
				}
				total = h + 4 + cl
				if !bytes.HasPrefix(c.buf, []byte("HTTP/1.1 200 ")) {
					return fmt.Errorf("response %q", c.buf[:h])
				}
			}
		}
		if total >= 0 && n >= total {
			if n > total {
				return fmt.Errorf("%d bytes past the response", n-total)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if n == len(c.buf) {
			return errors.New("response too large")
		}
	}
	return errors.New("response not complete after 1000 reads")
}

const benchRequest = "GET /api/items?id=42 HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench/1.0\r\n" +
	"Accept: */*\r\nAccept-Encoding: gzip\r\n\r\n"

// newBenchClient connects to the engine at addr (over TLS with overTLS).
func newBenchClient(tb testing.TB, addr, request string) *benchClient {
	return newBenchClientTLS(tb, addr, request, overTLS)
}

// newBenchClientTLS is newBenchClient over TLS or not, as tls says.
func newBenchClientTLS(tb testing.TB, addr, request string, tls bool) *benchClient {
	nc := dialEngine(tb, addr, tls)
	nc.SetDeadline(time.Time{})
	return &benchClient{nc: nc, buf: make([]byte, 16<<10), req: []byte(request)}
}

// BenchmarkEngineProxy is a proxied GET over loopback: a keep-alive raw
// client, the engine with the default configuration and no access log, a
// raw backend. allocs/op counts the whole process (client and backend
// allocate nothing per request), so it is the engine's.
func BenchmarkEngineProxy(b *testing.B) {
	benchProxy(b, benchRequest, benchResponse)
}

// BenchmarkEngineProxyBrowser is BenchmarkEngineProxy with a browser's
// request (benchHead) and a web application's response, both with a
// Connection field.
func BenchmarkEngineProxyBrowser(b *testing.B) {
	benchProxy(b, benchHead, benchBrowserResponse)
}

// BenchmarkStdProxy is BenchmarkEngineProxy through the net/http codec
// (engine: std), for the ratio between the two.
func BenchmarkStdProxy(b *testing.B) {
	rb := benchBackend(b, benchResponse)
	s := defaultSetup()
	s.WithStd = true
	env := startEngine(b, s, rb.URL)
	runBenchClient(b, newBenchClientTLS(b, strings.TrimPrefix(env.stdURL, "http://"), benchRequest, false))
}

func benchProxy(b *testing.B, request, response string) {
	rb := benchBackend(b, response)
	env := startEngine(b, defaultSetup(), rb.URL)
	runBenchClient(b, newBenchClient(b, env.addr, request))
}

// BenchmarkEngineProxyTLS is BenchmarkEngineProxy over TLS (1.3, X25519,
// ECDSA P-256), on the loops where they run (linux), beside the
// goroutine engine.
func BenchmarkEngineProxyTLS(b *testing.B) {
	for _, onLoops := range []bool{false, true} {
		b.Run([]string{"goroutine", "loop"}[btoi(onLoops)], func(b *testing.B) {
			rb := benchBackend(b, benchResponse)
			s := defaultSetup()
			s.TLS, s.OnLoops = true, onLoops
			env := startEngine(b, s, rb.URL)
			runBenchClient(b, newBenchClientTLS(b, env.addr, benchRequest, true))
		})
	}
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

func runBenchClient(b *testing.B, c *benchClient) {
	for range 200 { // warm up pools and buffers
		if err := c.roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineProxyParallel is BenchmarkEngineProxy with one client
// connection per goroutine.
func BenchmarkEngineProxyParallel(b *testing.B) {
	rb := benchBackend(b, benchResponse)
	env := startEngine(b, defaultSetup(), rb.URL)
	var mu sync.Mutex
	var clients []*benchClient
	for range 4 * 16 {
		c := newBenchClient(b, env.addr, benchRequest)
		if err := c.roundTrip(); err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		if len(clients) == 0 {
			mu.Unlock()
			b.Error("more goroutines than clients")
			return
		}
		c := clients[len(clients)-1]
		clients = clients[:len(clients)-1]
		mu.Unlock()
		for pb.Next() {
			if err := c.roundTrip(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// addrConn is a net.Conn that only knows its peer's address (buildOutbound
// needs nothing else).
type addrConn struct {
	net.Conn
	peer net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.peer }

// benchHead is a browser-like request head with forwarding fields and
// hop-by-hop fields to remove.
const benchHead = "GET /static/app.js?v=1714 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n" +
	"Accept: */*\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Referer: https://www.example.com/\r\n" +
	"Connection: keep-alive, X-Custom\r\n" +
	"X-Custom: 1\r\n" +
	"Keep-Alive: timeout=5\r\n" +
	"X-Forwarded-For: 1.2.3.4\r\n" +
	"Cookie: session=4f1c2a9e8b7d6c5f; theme=dark\r\n" +
	"Sec-Fetch-Dest: script\r\n" +
	"Sec-Fetch-Mode: no-cors\r\n" +
	"\r\n"

// engineConnForHead returns an engine connection whose read buffer holds
// head, parsed, and a function doing what handle does up to the outbound
// head: the field scan, the target and buildOutbound.
func engineConnForHead(tb testing.TB, head string, trusted []netip.Prefix) (*h1conn, func()) {
	view := &atomic.Pointer[proxy.Listener]{}
	view.Store(&proxy.Listener{Name: "bench", Routes: route.Compile(nil, "web", func(string) int { return 0 }),
		NoPool: &pool.Stats{}, Trusted: trusted})
	e := NewEngine(EngineOptions{View: view, IDs: proxy.NewRequestIDs(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Tunnels: &proxy.Tunnels{}})
	c := newH1Conn(e, addrConn{peer: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 40000}})
	c.acquire()
	if len(head) > len(c.buf) {
		nb := make([]byte, len(head))
		c.bp, c.buf = &nb, nb
	}
	c.r, c.w = 0, copy(c.buf, head)
	n, err := edge.ParseRequestHead(c.buf[:c.w], e.lim, &c.req.head)
	if err != nil || n != len(head) {
		tb.Fatalf("ParseRequestHead = %d, %v", n, err)
	}
	rewrite := func() {
		q := &c.req
		h := q.head
		*q = h1req{head: h, hlen: n}
		q.l = view.Load()
		hb := c.buf[:n]
		q.raw = rawFields{head: hb, first: edge.FirstField(hb, q.head.Lead)}
		c.scanFields()
		q.host = bstr(q.head.Host)
		target := q.head.Target
		escaped := target
		if i := bytes.IndexByte(target, '?'); i >= 0 {
			escaped, q.query = target[:i], bstr(target[i+1:])
		}
		q.path = route.NormalizePath(bstr(escaped))
		c.buildOutbound()
	}
	return c, rewrite
}

func TestEngineHeaderRewrite(t *testing.T) {
	c, rewrite := engineConnForHead(t, benchHead, nil)
	rewrite()
	out := string(c.out[:c.req.outHead])
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(out)))
	if err != nil {
		t.Fatalf("outbound head %q: %v", out, err)
	}
	if r.RequestURI != "/static/app.js?v=1714" || r.Host != "www.example.com" {
		t.Errorf("outbound %s %s, Host %q", r.Method, r.RequestURI, r.Host)
	}
	var names []string
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	want := []string{"Accept", "Accept-Encoding", "Accept-Language", "Cookie", "Referer", "Sec-Fetch-Dest",
		"Sec-Fetch-Mode", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("outbound fields (-want +got):\n%s", diff)
	}
	if got := r.Header.Get("X-Forwarded-For"); got != "10.1.2.3" {
		t.Errorf("X-Forwarded-For = %q, want the peer alone (untrusted)", got)
	}
	allocs := testing.AllocsPerRun(100, rewrite)
	if allocs != 0 {
		t.Errorf("allocs per header rewrite = %v, want 0", allocs)
	}
}

// BenchmarkEngineHeaderRewrite measures the request-side field work of the
// engine: the field scan and buildOutbound. The last two cases are heads
// at the default limits (100 fields, 64 KiB), with and without a
// Connection field.
func BenchmarkEngineHeaderRewrite(b *testing.B) {
	noConn := strings.Replace(strings.Replace(benchHead, "Connection: keep-alive, X-Custom\r\n", "", 1),
		"Keep-Alive: timeout=5\r\n", "", 1)
	var big strings.Builder
	big.WriteString("GET / HTTP/1.1\r\nHost: a.example\r\n")
	for i := range 98 {
		fmt.Fprintf(&big, "X-Field-%02d: %s\r\n", i, strings.Repeat("v", 640))
	}
	bigHead := big.String() + "\r\n"
	bigConn := big.String() + "Connection: keep-alive\r\n\r\n"
	for _, tt := range []struct {
		name    string
		head    string
		trusted []netip.Prefix
	}{
		{"untrusted", benchHead, nil},
		{"trusted", benchHead, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{"no Connection field", noConn, nil},
		{"100 fields 64KiB", bigHead, nil},
		{"100 fields 64KiB with Connection", bigConn, nil},
	} {
		b.Run(tt.name, func(b *testing.B) {
			_, rewrite := engineConnForHead(b, tt.head, tt.trusted)
			b.ReportAllocs()
			b.SetBytes(int64(len(tt.head)))
			for b.Loop() {
				rewrite()
			}
		})
	}
}
