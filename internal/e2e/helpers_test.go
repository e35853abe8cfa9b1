// Package e2e holds sluice's end-to-end tests: real backends, a real
// server (in-process, or the built binary run as a process) and real clients
// speaking HTTP over 127.0.0.1. Every network operation has a deadline and
// every wait is a bounded poll, so a broken build fails instead of hanging.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/backend"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/server"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// testEngine is the engine every listener of the suite runs on: the
// default ("" leaves each config as it is: loop on plain HTTP/1.1
// listeners, h1 on the others) or, with SLUICE_E2E_ENGINE=std, h1 or loop
// (make test runs the suite once more with std and with h1), that engine.
// Every engine must pass every test; loop does not read the PROXY
// protocol, so listeners with proxy_protocol keep the default (loopable).
var testEngine = os.Getenv("SLUICE_E2E_ENGINE")

// withEngine sets testEngine on the HTTP listeners of cfg that name none.
func withEngine(cfg *config.Config) {
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		if l.Engine == "" && l.Protocol != "tcp" && (testEngine != "loop" || !l.ProxyProtocol) {
			l.Engine = testEngine
		}
	}
}

// loopable reports whether the YAML of one listener (its address line to
// the next listener) leaves it to engine: loop.
func loopable(listener string) bool {
	return !strings.Contains(listener, "proxy_protocol: true") && !strings.Contains(listener, "protocol: tcp")
}

// listenerAddr matches the address line of a listener in the suite's YAML.
var listenerAddr = regexp.MustCompile(`(?m)^(\s+)address: "127\.0\.0\.1:0"\n`)

// withEngineYAML sets testEngine on the listeners of a YAML config written
// by the suite (their address is "127.0.0.1:0" on a line of its own).
func withEngineYAML(yaml string) string {
	if testEngine == "" {
		return yaml
	}
	i := strings.Index(yaml, "\npools:")
	if i < 0 {
		return yaml
	}
	head := yaml[:i]
	var b strings.Builder
	last := 0
	ms := listenerAddr.FindAllStringSubmatchIndex(head, -1)
	for k, m := range ms {
		end := len(head)
		if k+1 < len(ms) {
			end = ms[k+1][0]
		}
		if n := strings.Index(head[m[1]:end], "\n  - "); n >= 0 {
			end = m[1] + n
		}
		b.WriteString(head[last:m[1]])
		// Listener items start before their address line too: look back to
		// the item's dash.
		start := strings.LastIndex(head[:m[0]], "\n  - ")
		if start < 0 {
			start = 0
		}
		if testEngine != "loop" || loopable(head[start:end]) {
			b.WriteString(head[m[2]:m[3]] + "engine: " + testEngine + "\n")
		}
		last = m[1]
	}
	b.WriteString(head[last:])
	return b.String() + yaml[i:]
}

// binary is the sluice binary TestMain builds for the process-style tests;
// buildErr says why there is none.
var (
	binary   string
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binary, buildErr = buildBinary(dir)
	code := m.Run()
	if code == 0 {
		if leaks := waitNoLeaks(10 * time.Second); leaks != "" {
			fmt.Fprintf(os.Stderr, "e2e: goroutines left behind after every test ended:\n%s\n", leaks)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinary builds ./cmd/sluice of this module into dir.
func buildBinary(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	bin := filepath.Join(dir, "sluice")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sluice")
	cmd.Dir = filepath.Dir(gomod)
	// As make build ships it: static, without cgo.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sluice: %w\n%s", err, out)
	}
	return bin, nil
}

// waitNoLeaks waits until no goroutine but the benign ones of the runtime
// and the testing package is left, and returns the stacks of those that are.
func waitNoLeaks(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		leaks := leakedGoroutines()
		if len(leaks) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaks, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	benign := []string{
		"testing.(*M).", "testing.tRunner", "os/signal.signal_recv",
		"runtime.ensureSigM", "e2e.waitNoLeaks", "e2e.leakedGoroutines", "testing.runFuzzing",
		"created by os/signal.Notify",
	}
	var leaks []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		if slices.ContainsFunc(benign, func(s string) bool { return strings.Contains(g, s) }) {
			continue
		}
		leaks = append(leaks, g)
	}
	return leaks
}

// needProgram returns the path of the program name, or skips (locally) or
// fails (under CI=true, where .ci/run installs it) when it is not on PATH;
// install says how to get it.
func needProgram(t testing.TB, name, install string) string {
	t.Helper()
	return testenv.Program(t, name, install)
}

// eventually polls cond every 20ms until it is true, and fails the test
// when it is still false after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer collects a log, printed when the test fails.
type logBuffer = testenv.Buffer

// testLogger returns a logger into a buffer that is printed (as name) when
// t fails. The dump is registered first, so it runs after every later
// cleanup, when nothing writes to the buffer any more.
func testLogger(t testing.TB, name string) *slog.Logger {
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	accepted *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// demoBackend is one demo backend (internal/backend) that a test can kill
// and start again on the same port.
type demoBackend struct {
	t      testing.TB
	Name   string
	Addr   string // host:port, fixed for the backend's life
	logger *slog.Logger

	mu     sync.Mutex // guards cancel and done
	cancel context.CancelFunc
	done   chan struct{}
}

// startBackend starts a demo backend named name on a fresh 127.0.0.1 port;
// it is stopped when the test ends.
func startBackend(t testing.TB, name string) *demoBackend {
	t.Helper()
	logger := testLogger(t, "backend "+name)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for backend %s: %v", name, err)
	}
	b := &demoBackend{t: t, Name: name, Addr: ln.Addr().String(), logger: logger}
	b.serve(ln)
	t.Cleanup(b.Stop)
	return b
}

// startBackends starts one demo backend per name.
func startBackends(t testing.TB, names ...string) []*demoBackend {
	t.Helper()
	bs := make([]*demoBackend, len(names))
	for i, n := range names {
		bs[i] = startBackend(t, n)
	}
	return bs
}

// URL is the backend's address as a pool lists it.
func (b *demoBackend) URL() string { return "http://" + b.Addr }

func (b *demoBackend) serve(ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.mu.Lock()
	b.cancel, b.done = cancel, done
	b.mu.Unlock()
	srv := backend.New(b.Name, b.logger)
	go func() {
		defer close(done)
		defer ln.Close()
		srv.Serve(ctx, ln)
	}()
}

// Stop kills the backend: it stops accepting and its connections close. It
// returns once Serve has returned (bounded).
func (b *demoBackend) Stop() {
	b.mu.Lock()
	cancel, done := b.cancel, b.done
	b.cancel, b.done = nil, nil
	b.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		b.t.Errorf("backend %s: Serve did not return within 15s of its context being cancelled", b.Name)
	}
}

// Restart starts a stopped backend again on the same port.
func (b *demoBackend) Restart() {
	b.t.Helper()
	var ln net.Listener
	var err error
	for range 100 { // the port may linger for a moment
		if ln, err = net.Listen("tcp", b.Addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("restart backend %s on %s: %v", b.Name, b.Addr, err)
	}
	b.serve(ln)
}

// sluice is a sluice server running in the test process.
type sluice struct {
	t      testing.TB
	srv    *server.Server
	stop   func()
	access *logBuffer // the access log
}

// Stop cancels Run and waits (bounded) until it has returned; the test's
// cleanup calls it too.
func (s *sluice) Stop() { s.stop() }

// poolOf returns a round robin pool named name over backends.
func poolOf(name string, backends ...*demoBackend) config.Pool {
	p := config.Pool{Name: name, Balance: "round_robin"}
	for _, b := range backends {
		p.Backends = append(p.Backends, config.Backend{Address: b.URL()})
	}
	return p
}

// checked returns a health check on /health every interval that needs one
// pass to rise. A backend that does not answer is out at its first check
// (the first decides at once), and one that stops answering at the first
// request it refuses (passive mark-down, until a check passes). A backend
// that answers is never taken out by checks that a loaded machine (the race
// detector, parallel tests) answered late: falling takes a minute of failed
// checks in a row, longer than any test here runs.
func checked(interval time.Duration) *config.HealthCheck {
	return &config.HealthCheck{Path: "/health", Interval: interval, Timeout: interval,
		HealthyThreshold: 1, UnhealthyThreshold: int(time.Minute/interval) + 1}
}

// oneListener returns a config with one listener "public" on 127.0.0.1:0
// whose default pool is the first of pools.
func oneListener(pools ...config.Pool) *config.Config {
	return &config.Config{
		Listeners:       []config.Listener{{Name: "public", Address: "127.0.0.1:0", Pool: pools[0].Name}},
		Pools:           pools,
		Admin:           config.Admin{Address: "127.0.0.1:0"},
		ShutdownTimeout: 5 * time.Second,
	}
}

// startSluice applies defaults to cfg, validates it, and runs a server
// until the test ends.
func startSluice(t testing.TB, cfg *config.Config) *sluice {
	t.Helper()
	logger := testLogger(t, "sluice")
	access := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- sluice access log ---\n%s", access.String())
		}
	})
	withEngine(cfg)
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config.Validate: %v", err)
	}
	srv, err := server.New(cfg, server.Options{Logger: logger, Stdout: access})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return within 20s of its context being cancelled")
		}
	})
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for !srv.Ready() {
		select {
		case err := <-errc:
			errc <- err // for the cleanup
			t.Fatalf("Run returned before the server was ready: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready within 10s")
		}
	}
	return &sluice{t: t, srv: srv, stop: stop, access: access}
}

// Addr is the bound address of a listener.
func (s *sluice) Addr(listener string) string {
	s.t.Helper()
	a := s.srv.Addr(listener)
	if a == nil {
		s.t.Fatalf("no listener %q", listener)
	}
	return a.String()
}

// URL is "http://ADDR" of a listener.
func (s *sluice) URL(listener string) string { return "http://" + s.Addr(listener) }

// newClient returns an HTTP client with its own connection pool, closed
// when the test ends, and a 10s bound on every request.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// reply is a response read in full.
type reply struct {
	Status  int
	Header  http.Header
	Trailer http.Header
	Body    string
}

// get sends a GET and reads the whole response; transport errors fail the
// test.
func get(t testing.TB, c *http.Client, url string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, c, req)
}

func do(t testing.TB, c *http.Client, req *http.Request) reply {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Trailer: resp.Trailer, Body: string(body)}
}

// tryGet is get without failing the test (for polls).
func tryGet(c *http.Client, url string) (reply, error) {
	resp, err := c.Get(url)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Trailer: resp.Trailer, Body: string(body)}, err
}

// waitBackends polls url until every backend in names has answered 200.
func waitBackends(t testing.TB, c *http.Client, url string, names ...string) {
	t.Helper()
	seen := map[string]bool{}
	eventually(t, 10*time.Second, fmt.Sprintf("backends %q all answer through %s", names, url), func() bool {
		r, err := tryGet(c, url)
		if err == nil && r.Status == 200 {
			seen[r.Header.Get("X-Backend")] = true
		}
		for _, n := range names {
			if !seen[n] {
				return false
			}
		}
		return true
	})
}

// echo is what the demo backend's /echo reports.
type echo struct {
	Method    string
	Path      string
	BodyBytes int64
	Headers   http.Header
	Raw       map[string]any
}

// parseEcho decodes an /echo body. Header values may come as a string or a
// list of strings.
func parseEcho(t testing.TB, body string) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal([]byte(body), &e.Raw); err != nil {
		t.Fatalf("decoding /echo reply: %v\nbody: %q", err, body)
	}
	e.Method, _ = e.Raw["method"].(string)
	e.Path, _ = e.Raw["path"].(string)
	if n, ok := e.Raw["body_bytes"].(float64); ok {
		e.BodyBytes = int64(n)
	}
	e.Headers = http.Header{}
	hs, _ := e.Raw["headers"].(map[string]any)
	for k, v := range hs {
		switch v := v.(type) {
		case string:
			e.Headers.Add(k, v)
		case []any:
			for _, s := range v {
				if s, ok := s.(string); ok {
					e.Headers.Add(k, s)
				}
			}
		}
	}
	return e
}

// rawResult is a response read off a raw connection.
type rawResult struct {
	StatusLine string // e.g. "HTTP/1.1 400 Bad Request"
	Status     int
	Header     http.Header
	Body       string
	// Closed: the server closed the connection after the response (set on
	// the last response of a conversation only).
	Closed bool
}

// rawExchange writes raw to a new connection to addr, reads one response
// and then whether the server closes the connection (within 3s); more bytes
// after the response fail the test.
func rawExchange(t testing.TB, addr, raw string) rawResult {
	t.Helper()
	return rawConversation(t, addr, raw, 1, 3*time.Second)[0]
}

// rawConversation writes raw (which may hold pipelined requests) to a new
// connection to addr and reads n responses, then, unless closeWait is 0,
// whether the server closes the connection within closeWait; more bytes
// after them fail the test.
func rawConversation(t testing.TB, addr, raw string, n int, closeWait time.Duration) []rawResult {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return converse(t, c, raw, n, closeWait)
}

// converse is rawConversation on a connection already open (plain or
// TLS); it closes c.
func converse(t testing.TB, c net.Conn, raw string, n int, closeWait time.Duration) []rawResult {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write request: %v", err)
	}
	method := http.MethodGet
	if strings.HasPrefix(raw, "HEAD ") {
		method = http.MethodHead
	}
	br := bufio.NewReader(c)
	results := make([]rawResult, n)
	for i := range results {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("reading response %d of %d: %v", i+1, n, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		line := resp.Proto + " " + resp.Status
		if err != nil {
			t.Fatalf("reading the body after %q: %v", line, err)
		}
		results[i] = rawResult{StatusLine: line, Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
	}
	if closeWait == 0 {
		return results
	}
	// Whatever comes next must be the end of the connection.
	last := &results[n-1]
	c.SetReadDeadline(time.Now().Add(closeWait))
	m, err := br.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case m > 0:
		t.Errorf("after %q the server sent more bytes", last.StatusLine)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		last.Closed = true
	case errors.As(err, &ne) && ne.Timeout():
		last.Closed = false
	case err != nil: // a reset is a close too
		last.Closed = true
	}
	return results
}
