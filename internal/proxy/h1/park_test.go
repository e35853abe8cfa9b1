//go:build linux

package h1

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// parked returns the number of connections the engine's parker holds.
func (e *Engine) parked() int {
	e.pkMu.Lock()
	p := e.pk
	e.pkMu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.fds)
}

// open reports the number of client connections the engine has.
func (e *Engine) open() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}

func okBackend(t *testing.T) string {
	be, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	return be.URL
}

func getOK(t *testing.T, c *testClient) {
	t.Helper()
	resp, body := c.get("/")
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET /: %d %q, want 200 ok", resp.StatusCode, body)
	}
}

// TestParkedConnectionServesItsNextRequest: a keep-alive connection idle
// for longer than parkAfter is held by the parker without a goroutine, and
// its next request is served as before; so is a fresh connection's first.
func TestParkedConnectionServesItsNextRequest(t *testing.T) {
	skipOnLoops(t, "parking is the goroutine engine's (on a loop an idle connection has no goroutine to park)")
	skipOverTLS(t, "the goroutine engine parks plain connections only")
	env := startEngine(t, defaultSetup(), okBackend(t))
	c := dialClient(t, env.addr)
	getOK(t, c)
	waitFor(t, "the idle connection to park", func() bool { return env.engine.parked() == 1 })
	for range 3 {
		getOK(t, c)
		waitFor(t, "the connection to park again", func() bool { return env.engine.parked() == 1 })
	}
	fresh := dialClient(t, env.addr)
	waitFor(t, "the fresh connection to park", func() bool { return env.engine.parked() == 2 })
	getOK(t, fresh)
	// Pipelined requests arriving at a parked connection: all answered.
	waitFor(t, "both to park", func() bool { return env.engine.parked() == 2 })
	c.write("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	for range 2 {
		if resp, body := c.read("GET"); resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("pipelined: %d %q", resp.StatusCode, body)
		}
	}
	// The cleanup's Close finds parked connections: Serve must return.
	waitFor(t, "both to park", func() bool { return env.engine.parked() == 2 })
}

// TestParkedConnectionTimesOut: the idle timeout and, before the first
// request, read_header close a parked connection (without an answer: no
// byte of a request came), and the engine forgets it.
func TestParkedConnectionTimesOut(t *testing.T) {
	skipOnLoops(t, "parking is the goroutine engine's (on a loop an idle connection has no goroutine to park)")
	skipOverTLS(t, "the goroutine engine parks plain connections only")
	s := defaultSetup()
	s.Listener.Idle = 300 * time.Millisecond
	s.Listener.ReadHeader = 400 * time.Millisecond
	env := startEngine(t, s, okBackend(t))
	c := dialClient(t, env.addr)
	getOK(t, c)
	fresh := dialClient(t, env.addr)
	waitFor(t, "both connections to park", func() bool { return env.engine.parked() == 2 })
	c.expectEOF()
	fresh.expectEOF()
	waitFor(t, "the engine to forget them", func() bool { return env.engine.open() == 0 && env.engine.parked() == 0 })
}

// TestShutdownClosesParkedConnections: Shutdown closes a parked idle
// connection at once, and serves a fresh parked connection that sends its
// first request during the grace.
func TestShutdownClosesParkedConnections(t *testing.T) {
	skipOnLoops(t, "parking is the goroutine engine's (on a loop an idle connection has no goroutine to park)")
	skipOverTLS(t, "the goroutine engine parks plain connections only")
	env := startEngine(t, defaultSetup(), okBackend(t))
	c := dialClient(t, env.addr)
	getOK(t, c)
	fresh := dialClient(t, env.addr)
	waitFor(t, "both connections to park", func() bool { return env.engine.parked() == 2 })
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- env.engine.Shutdown(ctx)
	}()
	c.expectEOF()
	resp, body := fresh.get("/")
	if resp.StatusCode != 200 || string(body) != "ok" || !resp.Close {
		t.Fatalf("first request of a fresh connection during Shutdown: %d %q close=%v, want 200 ok, closing", resp.StatusCode, body, resp.Close)
	}
	if err := recv(t, shut, "Shutdown to return"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := env.engine.parked(); n != 0 {
		t.Fatalf("%d connections still parked after Shutdown", n)
	}
}

// TestParkWaitAfterFirstAndLaterResponses: after its first response a
// connection waits parkSoon in its goroutine before it parks, after a
// later one parkAfter (read while parked: the parker's lock orders it
// with the goroutine that parked it).
func TestParkWaitAfterFirstAndLaterResponses(t *testing.T) {
	skipOnLoops(t, "parking is the goroutine engine's (on a loop an idle connection has no goroutine to park)")
	skipOverTLS(t, "the goroutine engine parks plain connections only")
	env := startEngine(t, defaultSetup(), okBackend(t))
	wait := func() time.Duration {
		p := env.engine.parkerOf()
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.fds) != 1 {
			t.Fatalf("%d parked connections, want 1", len(p.fds))
		}
		for _, c := range p.fds {
			return c.parkWait()
		}
		return 0
	}
	c := dialClient(t, env.addr)
	getOK(t, c)
	waitFor(t, "the connection to park", func() bool { return env.engine.parked() == 1 })
	if got := wait(); got != parkSoon {
		t.Errorf("after the first response: waits %v, want parkSoon (%v)", got, parkSoon)
	}
	for range 2 {
		getOK(t, c)
		waitFor(t, "the connection to park again", func() bool { return env.engine.parked() == 1 })
		if got := wait(); got != parkAfter {
			t.Errorf("after a later response: waits %v, want parkAfter (%v)", got, parkAfter)
		}
	}
}
