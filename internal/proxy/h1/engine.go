package h1

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// Engine is sluice's own HTTP/1.1 server and client codec, the default for
// HTTP/1.x listeners; `engine: std` selects the net/http codec instead.
// Both run the same core (proxy.Forward) and the same routing, affinity, header
// and accounting code; the engine differs beneath: it parses requests with
// edge.ParseRequestHead straight from its read buffer, passes header fields
// through as raw bytes (parsing only those the proxy needs), keeps its
// upstream connections without helper goroutines (Conns), splices large
// bodies in the kernel, and in the steady state allocates nothing per
// request. One goroutine serves each client connection while it is busy,
// as in net/http; one idle for parkAfter parks (park_linux.go): its
// goroutine leaves and it holds no buffer and no timer until its next
// request arrives.
//
// Why by hand: no maintained Go library offers a strict RFC 9112 proxy
// codec: fasthttp is a server/client pair with its own lenient parser and
// header model, and net/http's allocations and per-connection goroutines
// are what this engine exists to avoid.
type Engine struct {
	o   EngineOptions
	lim edge.Limits

	mu       sync.Mutex // guards conns, ln, closed and drained
	conns    map[*h1conn]struct{}
	ln       net.Listener
	closed   bool          // Close was called: what Accept returns is closed
	drained  chan struct{} // closed when shutting and the last connection left
	shutting atomic.Bool
	// accepting is closed when Serve's accept loop has returned: every
	// connection it accepted is in conns by then.
	accepting chan struct{}
	wg        sync.WaitGroup // the connections' goroutines
	// ctx is every connection's; Close cancels it, so that requests waiting
	// for a slot or a dial give up.
	ctx    context.Context
	cancel context.CancelFunc

	pkMu      sync.Mutex // guards pk and pkStopped
	pk        *parker    // holds idle connections (park_linux.go); nil until one parks
	pkStopped bool
}

// EngineOptions configure an Engine for one listener generation.
type EngineOptions struct {
	// View holds the listener's current request-path view.
	View    *atomic.Pointer[proxy.Listener]
	IDs     *proxy.RequestIDs
	Logger  *slog.Logger
	Tunnels *proxy.Tunnels
	// Timeouts and Limits are the listener's; they are fixed for a
	// generation (a reload that changes them starts a new one).
	Timeouts config.ListenerTimeouts
	Limits   config.Limits
	// ConnState is told +1 when a connection opens and -1 when it closes.
	ConnState func(delta int64)
	// H2C, when set, takes connections that switch to HTTP/2 with
	// "Upgrade: h2c" (a listener with h2c); nil: the upgrade is ignored.
	H2C H2CUpgrade
	// Loops, when set, serve the listener's plain connections on event
	// loops (engine: loop, loop_linux.go); nil: a goroutine per connection
	// while it is busy.
	Loops *Loops
}

// NewEngine returns an engine; Serve runs it.
func NewEngine(o EngineOptions) *Engine {
	if o.ConnState == nil {
		o.ConnState = func(int64) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{o: o, conns: map[*h1conn]struct{}{}, drained: make(chan struct{}), accepting: make(chan struct{}),
		ctx: ctx, cancel: cancel,
		lim: edge.Limits{MaxURIBytes: o.Limits.MaxURIBytes, MaxHeaderBytes: o.Limits.MaxHeaderBytes,
			MaxHeaders: o.Limits.MaxHeaders}}
}

// Serve accepts connections on ln until Shutdown or Close; it then waits
// for the goroutines of its connections and returns http.ErrServerClosed,
// like http.Server.
func (e *Engine) Serve(ln net.Listener) error {
	e.mu.Lock()
	e.ln = ln
	e.mu.Unlock()
	defer e.stopParker() // last: no connection is left to park
	defer e.wg.Wait()
	defer close(e.accepting) // before the wait: Shutdown waits for it first
	if e.shutting.Load() {
		ln.Close()
		return http.ErrServerClosed
	}
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if e.shutting.Load() || errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			// Out of file descriptors and the like: wait and go on, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newH1Conn(e, nc)
		var lc *lconn // the connection on a loop; nil: on a goroutine
		if e.o.Loops != nil {
			lc = e.o.Loops.take(c)
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			if lc != nil {
				lc.discard()
			}
			nc.Close()
			continue
		}
		// Also when Shutdown has begun: the connection was accepted before
		// the listener closed, its client is about to send a request, and
		// Shutdown gives it freshGrace to do so.
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		e.o.ConnState(1)
		// e.wg counts the connection until it closes (serve's end), also
		// while it is parked without a goroutine or served on a loop.
		if lc != nil {
			lc.enter()
			continue
		}
		go c.serve()
	}
}

func (e *Engine) forget(c *h1conn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.drainedLocked()
	e.mu.Unlock()
	e.o.ConnState(-1)
}

// drainedLocked closes drained once shutdown began and no connection is
// left.
func (e *Engine) drainedLocked() {
	if e.shutting.Load() && len(e.conns) == 0 {
		select {
		case <-e.drained:
		default:
			close(e.drained)
		}
	}
}

// Shutdown stops accepting, closes idle connections, lets connections with
// a request in flight finish it (they close after it, and one that turns
// idle meanwhile closes itself) and returns once all are closed, or ctx's
// error when it ends first.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.shutting.Store(true)
	e.mu.Lock()
	serving := e.ln != nil
	if serving {
		e.ln.Close()
	}
	e.mu.Unlock()
	if serving {
		// What the accept loop took before the listener closed is served.
		select {
		case <-e.accepting:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.mu.Lock()
	for c := range e.conns {
		c.closeIfIdle(false)
	}
	e.drainedLocked()
	e.mu.Unlock()
	// A connection accepted just before shutdown began has not sent its
	// first request yet, but its client is about to: it gets freshGrace to
	// do so (and is closed after that request), as net/http gives new
	// connections, so that no request is lost to the hand-over.
	grace := time.NewTimer(freshGrace)
	defer grace.Stop()
	for {
		select {
		case <-e.drained:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-grace.C:
			e.mu.Lock()
			for c := range e.conns {
				c.closeIfIdle(true)
			}
			e.mu.Unlock()
		}
	}
}

// freshGrace is how long Shutdown leaves a connection that has not sent a
// request yet (net/http waits 5 s for StateNew connections).
const freshGrace = 5 * time.Second

// Close closes the listener and every connection at once, the backend
// connections that requests in flight use included, so that Serve's wait
// for the connections' goroutines ends.
func (e *Engine) Close() error {
	e.shutting.Store(true)
	e.cancel()
	e.mu.Lock()
	e.closed = true
	if e.ln != nil {
		e.ln.Close()
	}
	for c := range e.conns {
		if lc := c.lc.Load(); lc != nil {
			lc.post(lc.abort)
			continue
		}
		c.closeNow()
		if u := c.up.Load(); u != nil {
			u.nc.Close()
		}
	}
	e.mu.Unlock()
	return nil
}
