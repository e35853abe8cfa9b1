package h1

import (
	"errors"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// TestLoopClientGoneFreesItsPlace: on a loop, a client that goes away
// while its request waits in the pool's queue leaves the queue, and one
// that goes away while its request waits for the backend's answer gives
// the backend's slot back at once (the backend connection is closed): the
// goroutine engine notices either only when it writes the answer.
func TestLoopClientGoneFreesItsPlace(t *testing.T) {
	arrived := make(chan struct{}, 4)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
		io.WriteString(w, "ok "+r.URL.Path)
	})
	s := defaultSetup()
	s.OnLoops = true
	s.PerBackend, s.MaxQueue, s.QueueTimeout = 1, 10, 5*time.Second
	env := startEngine(t, s, srv.URL)
	lim := &env.pool.Limit
	b := env.backend[0]

	reset := func(c *testClient) {
		tcpOf(c.nc).SetLinger(0) // a reset: the client is gone both ways
		c.nc.Close()
	}
	a := dialClient(t, env.addr)
	a.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, arrived, "the slow request to reach the backend")
	waiting := dialClient(t, env.addr)
	waiting.write("GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, "the second request to queue", func() bool { return lim.Queued() == 1 })
	reset(waiting)
	waitFor(t, "the queue to empty once its client went", func() bool { return lim.Queued() == 0 })
	if got := b.InFlight.Load(); got != 1 {
		t.Fatalf("%d requests in flight on the backend, want 1 (the slow one)", got)
	}
	reset(a)
	waitFor(t, "the slot to come back once the slow request's client went", func() bool { return b.InFlight.Load() == 0 })

	c := dialClient(t, env.addr)
	if resp, body := c.get("/after"); resp.StatusCode != 200 || string(body) != "ok /after" {
		t.Fatalf("a request after both left: %d %q, want 200 \"ok /after\"", resp.StatusCode, body)
	}
}

// An idle connection on a loop holds no request state and no buffer: it
// takes them for a request it forwards and gives them back at the
// request's end, to its loop's spares, which it reuses for the next.
func TestLoopIdleHoldsNoRequest(t *testing.T) {
	_, _, lc := idleOnLoop(t, 3)
	type seen struct{ held, spare, bufs, exchs int }
	got := make(chan seen, 1)
	lc.w.ev.Post(func() {
		c := lc.c
		held := 0
		if lc.r != nil || c.bp != nil || c.ob != nil || c.exch != nil {
			held = 1
		}
		got <- seen{held, lc.w.reqs.Len(), lc.w.spares.bufs.Len(), lc.w.spares.exchs.Len()}
	})
	if s := recv(t, got, "the loop's answer"); s != (seen{0, 1, 2, 1}) {
		t.Fatalf("after three requests on an idle connection: it holds %d of its request state or buffers, its loop keeps %d spare request states, %d read buffers and %d exchanges; want 0, 1, 2 and 1", s.held, s.spare, s.bufs, s.exchs)
	}
}

// idleOnLoop starts an engine on loops before a backend that answers
// "ok", makes n requests on one client connection and returns the
// engine, the client and the connection's loop state, now idle.
func idleOnLoop(t *testing.T, n int) (*engineEnv, *testClient, *lconn) {
	t.Helper()
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s := defaultSetup()
	s.OnLoops = true
	env := startEngine(t, s, srv.URL)
	c := dialClient(t, env.addr)
	for range n {
		if resp, _ := c.get("/"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	lc := onLoop(env)
	if lc == nil {
		t.Fatal("the connection is not on a loop")
	}
	return env, c, lc
}

// onLoop returns the loop state of the engine's one client connection
// (nil: it is not on a loop).
func onLoop(env *engineEnv) *lconn {
	env.engine.mu.Lock()
	defer env.engine.mu.Unlock()
	var lc *lconn
	for hc := range env.engine.conns {
		lc = hc.lc.Load()
	}
	return lc
}

// TestLoopStrayBytesInTheRequestsWakeUp: a backend's stray response that
// reaches its idle connection in the same wake-up as the next request for
// it (harvested together, the request's event first, so the idle
// connection's own event has not closed it yet) keeps that request off
// the connection: the check before the write (lup.silent) sees the bytes,
// and the request goes on a new connection, so the client gets its own
// answer and not the stray one. Without the check it gets the stray one.
func TestLoopStrayBytesInTheRequestsWakeUp(t *testing.T) {
	rb := newRawBackend(t, eachRequest(func(r *http.Request, _ []byte) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	}))
	s := defaultSetup()
	s.OnLoops = true
	env := startEngine(t, s, rb.URL)
	c := dialClient(t, env.addr)
	if resp, body := c.get("/"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	if n := env.idleUpstream(env.backend[0]); n != 1 {
		t.Fatalf("%d idle backend connections after the first request, want 1", n)
	}
	// Hold every loop while the request and the stray bytes arrive, in
	// that order.
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // a failure below must not leave the loops held
	held := make(chan struct{}, len(env.loops.ws))
	for _, w := range env.loops.ws {
		if !w.ev.Post(func() { held <- struct{}{}; <-release }) {
			t.Fatal("Post refused")
		}
	}
	for range env.loops.ws {
		recv(t, held, "a loop to be held")
	}
	c.write("GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(20 * time.Millisecond)
	rb.mu.Lock()
	for bc := range rb.open {
		io.WriteString(bc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
	}
	rb.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	free()
	resp, body := c.read("GET")
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("the second request got %d %q, want its own 200 \"ok\"", resp.StatusCode, body)
	}
	if n := rb.conns.Load(); n != 2 {
		t.Fatalf("the backend saw %d connections, want 2 (the stray one is not reused)", n)
	}
}

// TestLoopClosedConnectionIsCollected: once a connection on a loop is
// closed, nothing of the loop keeps its state (its timer stays in the
// wheel's slot until the slot comes round, up to 5.12 s, but it is the
// loop's, not the connection's), so the garbage collector takes it at
// once: at a high rate of connections or HTTP/2 streams, five seconds of
// them would be tens of megabytes.
func TestLoopClosedConnectionIsCollected(t *testing.T) {
	env, c, lc := idleOnLoop(t, 1)
	armed := make(chan bool, 1)
	lc.w.ev.Post(func() { armed <- lc.timer != nil && lc.timer.When() != 0 })
	if !recv(t, armed, "the loop's answer") {
		t.Fatal("the idle connection has no timer armed (its idle timeout)")
	}
	wp := weak.Make(lc)
	lc = nil
	c.nc.Close()
	waitFor(t, "the engine to forget the closed connection", func() bool { return onLoop(env) == nil })
	// Well before the slot of any deadline the connection had: its
	// connect timeout (3 s in these tests) is the earliest.
	deadline := time.Now().Add(time.Second)
	for wp.Value() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection's state is still reachable 1 s after its close")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLoopCloseBeforeAdopt: Engine.Close between Serve's count of a new
// connection and its hand-over to the loop posts the abort first. The
// abort closes the connection and counts it out; the adoption after it
// must do nothing (it used to close the descriptor number again and count
// the connection out a second time, which left the engine's wait hung).
func TestLoopCloseBeforeAdopt(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	s := defaultSetup()
	s.OnLoops = true
	env := startEngine(t, s, srv.URL)
	e := env.engine
	client, nc := testenv.TCPPair(t)
	// What Serve does with an accepted connection, with Close's post in
	// between.
	c := newH1Conn(e, nc)
	lc := e.o.Loops.take(c)
	if lc == nil {
		t.Fatal("the connection was not taken for a loop")
	}
	e.mu.Lock()
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	lc.post(lc.abort)
	lc.enter()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	recv(t, done, "the engine's count of connections to reach zero")
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the client read %d bytes, %v; want its connection closed", n, err)
	}
}
