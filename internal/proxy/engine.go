package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/edge"
)

// Engine is sluice's own HTTP/1.1 server and client codec, the default for
// HTTP/1.x listeners; `engine: std` selects the net/http codec instead.
// Both run the same core (Forward) and the same routing, affinity, header
// and accounting code; the engine differs beneath: it parses requests with
// edge.ParseRequestHead straight from its read buffer, passes header fields
// through as raw bytes (parsing only those the proxy needs), keeps its
// upstream connections without helper goroutines (Conns), splices large
// bodies in the kernel, and in the steady state allocates nothing per
// request. One goroutine serves each client connection, as in net/http.
//
// Why by hand: no maintained Go library offers a strict RFC 9112 proxy
// codec: fasthttp is a server/client pair with its own lenient parser and
// header model, and net/http's allocations and per-connection goroutines
// are what this engine exists to avoid.
type Engine struct {
	o   EngineOptions
	lim edge.Limits

	mu       sync.Mutex
	conns    map[*h1conn]struct{}
	ln       net.Listener
	shutting atomic.Bool
	done     chan struct{} // closed by Close: connections stop waiting
	once     sync.Once
}

// EngineOptions configure an Engine for one listener generation.
type EngineOptions struct {
	// View holds the listener's current request-path view.
	View    *atomic.Pointer[Listener]
	IDs     *RequestIDs
	Access  *accesslog.Logger // nil: no access log
	Logger  *slog.Logger
	Tunnels *Tunnels
	// Timeouts and Limits are the listener's; they are fixed for a
	// generation (a reload that changes them starts a new one).
	Timeouts config.ListenerTimeouts
	Limits   config.Limits
	// ConnState is told +1 when a connection opens and -1 when it closes.
	ConnState func(delta int64)
}

// NewEngine returns an engine; Serve runs it.
func NewEngine(o EngineOptions) *Engine {
	if o.ConnState == nil {
		o.ConnState = func(int64) {}
	}
	return &Engine{o: o, conns: map[*h1conn]struct{}{}, done: make(chan struct{}),
		lim: edge.Limits{MaxURIBytes: o.Limits.MaxURIBytes, MaxHeaderBytes: o.Limits.MaxHeaderBytes,
			MaxHeaders: o.Limits.MaxHeaders}}
}

// Serve accepts connections on ln until Shutdown or Close; it then returns
// http.ErrServerClosed, like http.Server.
func (e *Engine) Serve(ln net.Listener) error {
	e.mu.Lock()
	e.ln = ln
	e.mu.Unlock()
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
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newH1Conn(e, nc)
		e.mu.Lock()
		if e.shutting.Load() {
			e.mu.Unlock()
			nc.Close()
			continue
		}
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		e.o.ConnState(1)
		go c.serve()
	}
}

func (e *Engine) forget(c *h1conn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	e.o.ConnState(-1)
}

// Shutdown stops accepting, closes idle connections, lets connections with
// a request in flight finish it (they close after it) and returns once all
// are closed, or ctx's error when it ends first.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.shutting.Store(true)
	e.mu.Lock()
	if e.ln != nil {
		e.ln.Close()
	}
	e.mu.Unlock()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		e.mu.Lock()
		for c := range e.conns {
			c.closeIfIdle()
		}
		n := len(e.conns)
		e.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes the listener and every connection at once.
func (e *Engine) Close() error {
	e.shutting.Store(true)
	e.once.Do(func() { close(e.done) })
	e.mu.Lock()
	if e.ln != nil {
		e.ln.Close()
	}
	for c := range e.conns {
		c.nc.Close()
	}
	e.mu.Unlock()
	return nil
}

// Buffers shared by all connections. A connection holds a read buffer only
// while a request is on its way, so idle keep-alive connections cost little
// memory; bigger buffers are taken when a head or a body needs them.
var (
	readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	bodyBufs = sync.Pool{New: func() any { b := make([]byte, replayMax); return &b }}
	copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

const readBufSize = 4 << 10
