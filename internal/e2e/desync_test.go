package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests of this file prove that a response reaches only the client that
// asked for it, whatever a backend writes: an unsolicited response on an
// idle keep-alive connection, bytes after the end of a response body, a
// request smuggled in a body the backend ignores (CL.0), and ambiguous
// framing or status lines, which sluice normalises or refuses (502).
//
// The backends are scripted: a listener of the test reads each request with
// http.ReadRequest and writes exact bytes. Every real answer names the path
// it answers ("for /r3"), so a client can tell its answer from any other.
// When a delay is part of the scenario, the backend signals once it has
// written its stray bytes and the test waits a fixed margin (desyncMargin)
// after the signal before the next request: nothing depends on a duration
// being met.

// desyncMargin is how long the test waits after the backend has written
// its stray bytes before it sends the next request, so that they have
// surely reached sluice.
const desyncMargin = 50 * time.Millisecond

// desyncStray is a complete response that no request asked for.
const desyncStray = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nSTRAY"

// answerFor is the body of the real answer to path: "for PATH", padded with
// 'x' to size bytes when size is larger.
func answerFor(path string, size int) string {
	b := "for " + path
	if size > len(b) {
		b += "\n" + strings.Repeat("x", size-len(b)-1)
	}
	return b
}

// responseFor is the complete response to path with a Content-Length body
// of answerFor(path, size).
func responseFor(path string, size int) string {
	body := answerFor(path, size)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// scriptBackend is a scripted HTTP/1.1 backend on 127.0.0.1. Each accepted
// connection reads requests in order with http.ReadRequest and calls the
// script for each, on the connection's goroutine; the script writes the
// answer (and whatever else it likes) and reads the request's body or not.
type scriptBackend struct {
	t      *testing.T
	ln     net.Listener
	URL    string
	script func(bc *scriptConn, req *http.Request)
	wg     sync.WaitGroup

	mu    sync.Mutex // guards conns
	conns []*scriptConn
}

// scriptConn is one connection to a scriptBackend.
type scriptConn struct {
	index int // 0 for the first connection accepted
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	// ended is closed when the connection's read loop has ended: sluice
	// closed the connection (or sent something that is not a request).
	ended chan struct{}

	mu    sync.Mutex // guards paths
	paths []string
}

// Paths returns the paths of the requests read on the connection, in order.
func (bc *scriptConn) Paths() []string {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return slices.Clone(bc.paths)
}

// write writes s to the connection at once (after whatever is buffered).
// An error is not the test's failure: sluice may have closed the
// connection.
func (bc *scriptConn) write(s string) {
	bc.bw.WriteString(s)
	bc.flush()
}

// buffer adds s to what the next flush writes.
func (bc *scriptConn) buffer(s string) { bc.bw.WriteString(s) }

func (bc *scriptConn) flush() {
	bc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	bc.bw.Flush()
}

// discardBody reads the request's body to its end, as a correct backend
// does.
func discardBody(req *http.Request) {
	io.Copy(io.Discard, io.LimitReader(req.Body, 16<<20))
}

// startScriptBackend starts a scripted backend; it is stopped (listener and
// every connection closed, every goroutine ended) when the test ends.
func startScriptBackend(t *testing.T, script func(bc *scriptConn, req *http.Request)) *scriptBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sb := &scriptBackend{t: t, ln: ln, URL: "http://" + ln.Addr().String(), script: script}
	sb.wg.Add(1)
	go sb.accept()
	t.Cleanup(sb.stop)
	return sb
}

func (sb *scriptBackend) accept() {
	defer sb.wg.Done()
	for {
		c, err := sb.ln.Accept()
		if err != nil {
			return
		}
		sb.mu.Lock()
		bc := &scriptConn{index: len(sb.conns), c: c, br: bufio.NewReader(c),
			bw: bufio.NewWriterSize(c, 64<<10), ended: make(chan struct{})}
		sb.conns = append(sb.conns, bc)
		sb.wg.Add(1)
		sb.mu.Unlock()
		go sb.serve(bc)
	}
}

func (sb *scriptBackend) serve(bc *scriptConn) {
	defer sb.wg.Done()
	defer close(bc.ended)
	defer bc.c.Close()
	for {
		// A connection idle for a minute is a broken test; the deadline
		// bounds it.
		bc.c.SetReadDeadline(time.Now().Add(time.Minute))
		req, err := http.ReadRequest(bc.br)
		if err != nil {
			return
		}
		bc.mu.Lock()
		bc.paths = append(bc.paths, req.URL.Path)
		bc.mu.Unlock()
		sb.script(bc, req)
	}
}

func (sb *scriptBackend) stop() {
	sb.ln.Close()
	sb.mu.Lock()
	for _, bc := range sb.conns {
		bc.c.Close()
	}
	sb.mu.Unlock()
	done := make(chan struct{})
	go func() {
		sb.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		sb.t.Errorf("scripted backend: connections still served 15s after it was stopped")
	}
}

// Conns returns the connections accepted so far, in order.
func (sb *scriptBackend) Conns() []*scriptConn {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return slices.Clone(sb.conns)
}

// layout describes every connection and the paths it carried, for failure
// messages.
func (sb *scriptBackend) layout() string {
	var b strings.Builder
	for _, bc := range sb.Conns() {
		fmt.Fprintf(&b, "\n  connection %d: %q", bc.index, bc.Paths())
	}
	return b.String()
}

// waitSignal waits (bounded) for the backend's signal that it has written
// what, then the margin that lets those bytes reach sluice.
func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("the backend did not write %s within 10s", what)
	}
	time.Sleep(desyncMargin)
}

// freshClient returns a client that opens a new connection for every
// request: each request is a different client to sluice.
func freshClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, DisableCompression: true, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// expectOwnAnswer sends GET path and fails the test unless the answer is
// 200 with exactly answerFor(path, size).
func expectOwnAnswer(t *testing.T, c *http.Client, base, path string, size int) {
	t.Helper()
	resp, err := c.Get(base + path)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Errorf("GET %s: reading the body: %v (got %d bytes: %.60q)", path, err, len(body), body)
		return
	}
	if want := answerFor(path, size); resp.StatusCode != 200 || string(body) != want {
		t.Errorf("GET %s: got %d with a %d-byte body %.60q; want 200 with its own answer %.60q (%d bytes)",
			path, resp.StatusCode, len(body), body, want, len(want))
	}
}

// expectDiscarded fails the test unless the backend connection bc carried
// no request after its last expected one (want) and sluice closes it
// (bounded wait).
func expectDiscarded(t *testing.T, sb *scriptBackend, bc *scriptConn, want []string, why string) {
	t.Helper()
	if got := bc.Paths(); !slices.Equal(got, want) {
		t.Errorf("backend connection %d carried %q, want only %q: sluice reused it after %s%s",
			bc.index, got, want, why, sb.layout())
		return
	}
	select {
	case <-bc.ended:
	case <-time.After(5 * time.Second):
		t.Errorf("backend connection %d is still open 5s after %s and later requests, want it closed%s",
			bc.index, why, sb.layout())
	}
}

// TestDesyncUnsolicitedResponseOnIdleConnection: a backend writes a second,
// complete response 100 ms after its real answer, on the now idle
// keep-alive connection. No later client may receive it (or any answer
// meant for another), and sluice must close that connection rather than
// send another request on it.
func TestDesyncUnsolicitedResponseOnIdleConnection(t *testing.T) {
	strayWritten := make(chan struct{}, 1)
	var first atomic.Bool
	sb := startScriptBackend(t, func(bc *scriptConn, req *http.Request) {
		discardBody(req)
		bc.write(responseFor(req.URL.Path, 0))
		if req.URL.Path == "/r1" && first.CompareAndSwap(false, true) {
			time.Sleep(100 * time.Millisecond)
			bc.write(desyncStray)
			strayWritten <- struct{}{}
		}
	})
	s := startSluice(t, oneListener(poolAt("web", sb.URL)))
	base := s.URL("public")
	c := freshClient(t)

	expectOwnAnswer(t, c, base, "/r1", 0)
	waitSignal(t, strayWritten, "the unsolicited response")
	for i := 2; i <= 7; i++ {
		expectOwnAnswer(t, c, base, fmt.Sprintf("/r%d", i), 0)
	}
	conns := sb.Conns()
	if len(conns) == 0 {
		t.Fatal("the backend accepted no connection")
	}
	if len(conns) < 2 {
		t.Errorf("the backend accepted %d connection(s), want a new one after the unsolicited response%s",
			len(conns), sb.layout())
	}
	expectDiscarded(t, sb, conns[0], []string{"/r1"}, "an unsolicited response")
}

// TestDesyncBytesAfterResponseBody: a backend writes bytes after the end of
// a Content-Length body, either a complete response or garbage, in the same
// write or a few milliseconds later, after a small, a 32 KiB or a 1 MiB
// body. The response is complete and reaches its client; the extra bytes
// reach no one, and the connection is not used again.
func TestDesyncBytesAfterResponseBody(t *testing.T) {
	extras := []struct {
		name  string
		bytes string
	}{
		{"response", desyncStray},
		{"garbage", "garbage, not HTTP\r\n\r\nSTRAY"},
	}
	sizes := []struct {
		name string
		n    int
	}{
		{"10B", 10},
		{"32KiB", 32 << 10},
		{"1MiB", 1 << 20},
	}
	delays := []struct {
		name string
		d    time.Duration
	}{
		{"same write", 0},
		{"5ms later", 5 * time.Millisecond},
	}
	for _, sz := range sizes {
		for _, ex := range extras {
			for _, dl := range delays {
				t.Run(sz.name+" body, "+ex.name+" "+dl.name, func(t *testing.T) {
					testBytesAfterBody(t, sz.n, ex.bytes, dl.d, false)
				})
			}
		}
	}
	// The same from HTTP/2 clients (h2c), whose requests reach HTTP/1.1
	// backends through the engine's connections with engine h1 (h1.Streams)
	// and through http.Transport with engine std.
	for _, sz := range []int{10, 1 << 20} {
		for _, dl := range delays {
			t.Run(fmt.Sprintf("HTTP/2 client, %d-byte body, response %s", sz, dl.name), func(t *testing.T) {
				testBytesAfterBody(t, sz, desyncStray, dl.d, true)
			})
		}
	}
}

func testBytesAfterBody(t *testing.T, size int, extra string, delay time.Duration, h2 bool) {
	extraWritten := make(chan struct{}, 1)
	var first atomic.Bool
	sb := startScriptBackend(t, func(bc *scriptConn, req *http.Request) {
		discardBody(req)
		if req.URL.Path != "/r1" || !first.CompareAndSwap(false, true) {
			bc.write(responseFor(req.URL.Path, 0))
			return
		}
		bc.buffer(responseFor(req.URL.Path, size))
		if delay > 0 {
			bc.flush()
			time.Sleep(delay)
		}
		bc.write(extra)
		extraWritten <- struct{}{}
	})
	cfg := oneListener(poolAt("web", sb.URL))
	c := freshClient(t)
	if h2 {
		cfg.Listeners[0].H2C = true
		c = h2cClient(t)
	}
	s := startSluice(t, cfg)
	base := s.URL("public")

	expectOwnAnswer(t, c, base, "/r1", size)
	waitSignal(t, extraWritten, "the bytes after the body")
	for i := 2; i <= 5; i++ {
		expectOwnAnswer(t, c, base, fmt.Sprintf("/r%d", i), 0)
	}
	conns := sb.Conns()
	if len(conns) == 0 {
		t.Fatal("the backend accepted no connection")
	}
	if len(conns) < 2 {
		t.Errorf("the backend accepted %d connection(s), want a new one after the bytes after the body%s",
			len(conns), sb.layout())
	}
	expectDiscarded(t, sb, conns[0], []string{"/r1"}, "bytes after the end of a response body")
}

// desyncSmuggled is the body of the attacker's POST: a whole request, which
// a backend that ignores the body reads as the next one.
const desyncSmuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// TestDesyncCL0SmuggledRequest: a backend ignores the body of POST /cl0
// and reads it as the next request (the CL.0 pattern), so it writes the
// answer to /smuggled after the answer to /cl0. The attacker gets the answer
// to /cl0, and then every client, the attacker included, gets the answer to
// its own request: never the smuggled one's, never another client's.
func TestDesyncCL0SmuggledRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		// pipelined: when the smuggled request is already buffered, the
		// backend writes its answer to /cl0 together with the answer to
		// /smuggled, in one write; else each answer is written at once.
		pipelined bool
		// delay: the answer to /smuggled leaves this long after the
		// answer to /cl0 (sluice has taken the connection back by then).
		delay time.Duration
	}{
		{"each answer written at once", false, 0},
		{"answers written together", true, 0},
		{"smuggled answer 5ms later", false, 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			smuggledAnswered := make(chan struct{}, 8)
			sb := startScriptBackend(t, func(bc *scriptConn, req *http.Request) {
				if req.URL.Path != "/cl0" {
					discardBody(req)
				}
				if req.URL.Path == "/smuggled" && tc.delay > 0 {
					time.Sleep(tc.delay)
				}
				bc.buffer(responseFor(req.URL.Path, 0))
				// The answer to /cl0 waits for the next one when the body
				// (the smuggled request) has arrived already; sluice sends
				// that body whole, so the wait is bounded.
				if !tc.pipelined || req.URL.Path != "/cl0" || bc.br.Buffered() == 0 {
					bc.flush()
				}
				if req.URL.Path == "/smuggled" {
					select { // never blocks the connection, even on a retry
					case smuggledAnswered <- struct{}{}:
					default:
					}
				}
			})
			s := startSluice(t, oneListener(poolAt("web", sb.URL)))
			base := s.URL("public")
			attacker := newClient(t) // keep-alive: its follow-ups reuse its connection
			victims := freshClient(t)

			for round := 1; round <= 3; round++ {
				req, err := http.NewRequest(http.MethodPost, base+"/cl0", strings.NewReader(desyncSmuggled))
				if err != nil {
					t.Fatal(err)
				}
				r := do(t, attacker, req)
				if want := answerFor("/cl0", 0); r.Status != 200 || r.Body != want {
					t.Errorf("round %d: POST /cl0 got %d %q, want 200 %q", round, r.Status, r.Body, want)
				}
				waitSignal(t, smuggledAnswered, "its answer to /smuggled")
				for i := 1; i <= 3; i++ {
					expectOwnAnswer(t, victims, base, fmt.Sprintf("/v%d-%d", round, i), 0)
				}
				expectOwnAnswer(t, attacker, base, fmt.Sprintf("/a%d", round), 0)
			}
			// No connection carried a request after the smuggled one: its
			// answer was beyond what sluice asked for.
			for _, bc := range sb.Conns() {
				paths := bc.Paths()
				if i := slices.Index(paths, "/smuggled"); i >= 0 && i < len(paths)-1 {
					t.Errorf("backend connection %d carried %q after /smuggled, want it discarded%s",
						bc.index, paths[i+1:], sb.layout())
				}
			}
		})
	}
}

// rawAnswer is a response as the client received it, byte for byte.
type rawAnswer struct {
	n          int // bytes received in all
	statusLine string
	status     int
	fields     []string // the field lines of the head, as sent
	body       string
}

// fetchRaw sends a request for path with "Connection: close" on a new
// connection and reads everything until sluice closes it.
func fetchRaw(t *testing.T, addr, path string) (rawAnswer, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: desync.test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	all, err := io.ReadAll(io.LimitReader(c, 1<<20))
	a := rawAnswer{n: len(all)}
	if err != nil {
		return a, fmt.Errorf("reading until sluice closes the connection: %v (after %d bytes: %.200q)", err, len(all), all)
	}
	head, body, ok := bytes.Cut(all, []byte("\r\n\r\n"))
	if !ok {
		return a, fmt.Errorf("no complete response head in the %d bytes received: %.200q", len(all), all)
	}
	lines := strings.Split(string(head), "\r\n")
	a.statusLine, a.fields, a.body = lines[0], lines[1:], string(body)
	parts := strings.SplitN(a.statusLine, " ", 3)
	if len(parts) < 2 || !strings.HasPrefix(parts[0], "HTTP/1.") {
		return a, fmt.Errorf("malformed status line %q", a.statusLine)
	}
	if a.status, err = strconv.Atoi(parts[1]); err != nil {
		return a, fmt.Errorf("malformed status line %q", a.statusLine)
	}
	return a, nil
}

// fieldValues returns the values of the head's fields named name.
func (a rawAnswer) fieldValues(name string) []string {
	var vs []string
	for _, f := range a.fields {
		k, v, ok := strings.Cut(f, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			vs = append(vs, strings.TrimSpace(v))
		}
	}
	return vs
}

// badBackend answers path bad with the raw response bad, and every other
// path with its own answer.
func badBackend(t *testing.T, path, bad string) *scriptBackend {
	return startScriptBackend(t, func(bc *scriptConn, req *http.Request) {
		discardBody(req)
		if req.URL.Path == path {
			bc.write(bad)
			return
		}
		bc.write(responseFor(req.URL.Path, 0))
	})
}

// TestDesyncNormalisesDuplicateContentLength: a response with two identical
// Content-Length fields reaches the client with exactly one, and its body.
func TestDesyncNormalisesDuplicateContentLength(t *testing.T) {
	sb := badBackend(t, "/dup", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
	s := startSluice(t, oneListener(poolAt("web", sb.URL)))
	a, err := fetchRaw(t, s.Addr("public"), "/dup")
	if err != nil {
		t.Fatalf("GET /dup: %v", err)
	}
	if a.status != 200 {
		t.Errorf("GET /dup: %q, want 200", a.statusLine)
	}
	if cl := a.fieldValues("Content-Length"); !slices.Equal(cl, []string{"5"}) {
		t.Errorf("GET /dup: Content-Length fields %q, want exactly one, \"5\"; head fields %q", cl, a.fields)
	}
	if te := a.fieldValues("Transfer-Encoding"); len(te) > 0 {
		t.Errorf("GET /dup: Transfer-Encoding %q beside Content-Length", te)
	}
	if a.body != "hello" {
		t.Errorf("GET /dup: body %q, want %q", a.body, "hello")
	}
	expectOwnAnswer(t, freshClient(t), s.URL("public"), "/after", 0)
}

// TestDesyncRefusesConflictingContentLength: a response with two different
// Content-Length values has no trustworthy framing: the client gets 502,
// and the connection is not used again.
func TestDesyncRefusesConflictingContentLength(t *testing.T) {
	sb := badBackend(t, "/conflict", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
	s := startSluice(t, oneListener(poolAt("web", sb.URL)))
	a, err := fetchRaw(t, s.Addr("public"), "/conflict")
	if err != nil {
		t.Fatalf("GET /conflict: %v", err)
	}
	if a.status != 502 {
		t.Errorf("GET /conflict: %q with fields %q and body %.100q, want 502", a.statusLine, a.fields, a.body)
	}
	c := freshClient(t)
	for i := 1; i <= 3; i++ {
		expectOwnAnswer(t, c, s.URL("public"), fmt.Sprintf("/after%d", i), 0)
	}
	for _, bc := range sb.Conns() {
		paths := bc.Paths()
		if i := slices.Index(paths, "/conflict"); i >= 0 && i < len(paths)-1 {
			t.Errorf("backend connection %d carried %q after the conflicting Content-Length, want it discarded%s",
				bc.index, paths[i+1:], sb.layout())
		}
	}
}

// TestDesyncRefusesStatusOutsideRange: a status code of three digits
// outside 100–599 is a 502 for the client, on both engines, and later
// clients get their own answers.
func TestDesyncRefusesStatusOutsideRange(t *testing.T) {
	for _, code := range []string{"099", "000", "600", "999"} {
		t.Run(code, func(t *testing.T) {
			sb := badBackend(t, "/bad", "HTTP/1.1 "+code+" Odd\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
			s := startSluice(t, oneListener(poolAt("web", sb.URL)))
			a, err := fetchRaw(t, s.Addr("public"), "/bad")
			switch {
			case err != nil:
				t.Errorf("GET /bad (backend status %s): %v; want a 502", code, err)
			case a.status != 502:
				t.Errorf("GET /bad (backend status %s): %q with fields %q and body %.100q, want 502",
					code, a.statusLine, a.fields, a.body)
			}
			c := freshClient(t)
			for i := 1; i <= 2; i++ {
				expectOwnAnswer(t, c, s.URL("public"), fmt.Sprintf("/after%d", i), 0)
			}
		})
	}
}
