// Package backend is sluice's demo and test origin server: a small
// httpbin-like HTTP server that says who it is on every response.
//
// `sluice backend` and `sluice demo` run it, and the test suites and
// benchmarks of the whole project use it as the upstream behind the proxy.
// Every response carries the header X-Backend: NAME. The endpoints:
//
//	/                      200 text/plain "Hello from NAME\n..."
//	GET  /health           200 "ok", or 503 "down" after POST /health/down
//	POST /health/down      fail the health endpoint; POST /health/up heals it
//	/status/CODE           answer with CODE (200-599)
//	/delay/DURATION        wait (Go duration or seconds, up to 5m), then 200 "delayed DURATION"
//	/bytes/N               N bytes of a–z, repeating (up to 1 GiB), streamed
//	/echo, /echo/...       JSON: what the request looked like, body included
//	/headers               JSON: the request headers
//	/stream?n=N&interval=D N lines "chunk K", flushed one by one
//	/sse?n=N&interval=D    text/event-stream ticks
//	/ws                    WebSocket echo
//	/trailers              a chunked body followed by trailers
//	/drop                  read the body, then close the connection without answering
//	/reset                 read the body, then reset the connection (TCP RST)
//	GET  /stats            JSON counters: how often each path was reached
//	POST /stats/reset      zero the counters
//
// Anything else is a 404. The server speaks HTTP/1.1 and, for upstream
// HTTP/2 tests, HTTP/2 over cleartext with prior knowledge (h2c).
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// shutdownTimeout bounds Serve's graceful shutdown; what is still open
	// afterwards is cut.
	shutdownTimeout   = 5 * time.Second
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
)

// Server is one demo backend. Create it with New; it is safe for concurrent
// use. Its counters (see Stats) live on the Server, so two Servers in one
// process never share state.
type Server struct {
	name    atomic.Pointer[string]
	log     *slog.Logger
	handler http.Handler
	served  atomic.Bool // Serve has been called

	down atomic.Bool // GET /health answers 503

	stats counters

	// stopping is cancelled when Serve begins to shut down: SSE streams end
	// and WebSockets are closed with "going away". abort is cancelled when
	// the grace period is over: whatever is left is cut.
	stopping, abort     context.Context
	stopFunc, abortFunc context.CancelFunc
	gateMu              sync.RWMutex   // protects closed; held for reading while a handler registers in running
	closed              bool           // no new handler may start
	running             sync.WaitGroup // every handler in progress, hijacked ones included
}

// New returns a backend called name, which appears in X-Backend and in
// bodies. An empty name means the listen address: Serve fills it in from
// the listener, and until then (or when Handler is used on a server of your
// own) each response names the local address its connection arrived on. A
// nil logger discards logs. The server logs transitions only (health set
// down or up, shutdown), never a line per request.
func New(name string, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: logger}
	s.name.Store(&name)
	s.stopping, s.stopFunc = context.WithCancel(context.Background())
	s.abort, s.abortFunc = context.WithCancel(context.Background())
	s.handler = s.routes()
	return s
}

// Name returns the backend's name: the one given to New or, if that was
// empty, the listen address once Serve has started (empty before).
func (s *Server) Name() string { return *s.name.Load() }

// Handler returns the backend's HTTP handler, for use with a server of your
// own such as httptest.NewServer. Shutdown behaviour (SSE streams ending,
// WebSockets closed with "going away") comes only with Serve.
func (s *Server) Handler() http.Handler { return s.handler }

// ListenAndServe listens on the TCP address addr and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve answers requests on ln until ctx is cancelled, then shuts down
// gracefully: it stops accepting, ends SSE streams, closes WebSockets with
// status 1001 "going away", and lets other requests in flight finish for up
// to 5 seconds before cutting the connections left. It closes ln and returns
// nil after a shutdown (a forced one is logged), or the error that made the
// listener fail. Serve may be called once per Server.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.served.Swap(true) {
		return errors.New("backend: Serve called more than once")
	}
	if s.Name() == "" {
		name := ln.Addr().String()
		s.name.Store(&name)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		Protocols:         protocols,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var serveErr error
	select {
	case serveErr = <-served:
		// The listener failed: shut down what it had started, then report it.
	case <-ctx.Done():
	}

	s.log.Info("backend shutting down", "backend", s.Name())
	s.stopFunc()
	graceCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	forced := false
	if err := srv.Shutdown(graceCtx); err != nil {
		forced = true
		s.abortFunc()
		_ = srv.Close()
	}

	s.gateMu.Lock()
	s.closed = true
	s.gateMu.Unlock()
	idle := make(chan struct{})
	go func() {
		s.running.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-graceCtx.Done():
		forced = true
		s.abortFunc()
		<-idle
	}
	s.abortFunc()
	if forced {
		s.log.Warn("backend shutdown timed out; open connections were cut", "backend", s.Name(), "timeout", shutdownTimeout)
	}

	if serveErr == nil {
		serveErr = <-served
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("backend: serve %s: %w", ln.Addr(), serveErr)
}

// enter registers a handler in s.running; it reports false once Serve has
// finished waiting for handlers.
func (s *Server) enter() bool {
	s.gateMu.RLock()
	defer s.gateMu.RUnlock()
	if s.closed {
		return false
	}
	s.running.Add(1)
	return true
}

// nameFor is the name to show for r: the configured or listen-address name,
// else the local address r's connection arrived on.
func (s *Server) nameFor(r *http.Request) string {
	if name := s.Name(); name != "" {
		return name
	}
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return addr.String()
	}
	return "backend"
}

// routes builds the handler: the endpoints behind a wrapper that sets
// X-Backend, counts the request and tracks it for shutdown.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", s.handleRoot)
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("POST /health/down", s.handleHealthSet(true))
	mux.HandleFunc("POST /health/up", s.handleHealthSet(false))
	mux.HandleFunc("/status/{code}", handleStatus)
	mux.HandleFunc("/delay/{duration}", handleDelay)
	mux.HandleFunc("/bytes/{n}", handleBytes)
	mux.HandleFunc("/echo", s.handleEcho)
	mux.HandleFunc("/echo/", s.handleEcho)
	mux.HandleFunc("/headers", handleHeaders)
	mux.HandleFunc("/stream", handleStream)
	mux.HandleFunc("/sse", s.handleSSE)
	mux.HandleFunc("/ws", s.handleWebSocket)
	mux.HandleFunc("/trailers", handleTrailers)
	mux.HandleFunc("/drop", s.handleDrop)
	mux.HandleFunc("/reset", s.handleReset)
	mux.HandleFunc("GET /stats", s.handleStats)
	mux.HandleFunc("POST /stats/reset", s.handleStatsReset)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", s.nameFor(r))
		if !s.enter() {
			w.Header().Set("Connection", "close")
			http.Error(w, "backend is shutting down", http.StatusServiceUnavailable)
			return
		}
		defer s.running.Done()
		if !isStatsPath(r.URL.Path) {
			s.stats.request(r.URL.Path)
			defer s.stats.inFlight.Add(-1)
		}
		mux.ServeHTTP(w, r)
	})
}
