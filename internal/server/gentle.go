package server

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// gentleServer is an http.Server whose Shutdown loses no request of a
// connection accepted just before it. net/http's own Shutdown marks the
// server as shutting down first; a connection that was accepted but has
// not sent its request yet then has that request read and dropped
// unanswered (conn.serve returns when shuttingDown() after readRequest),
// and its client sees EOF. That is every connection in the kernel's hands
// during an upgrade or a reload that restarts a listener. gentleServer
// stops accepting first, lets such connections send their first request
// (up to freshGrace, as net/http's own 5 s for StateNew), and only then
// calls http.Server.Shutdown.
type gentleServer struct {
	*http.Server

	mu    sync.Mutex // guards ln and fresh
	ln    net.Listener
	fresh map[net.Conn]struct{} // in StateNew
	// served is closed when Serve has returned: every connection it
	// accepted has had its StateNew by then.
	served chan struct{}
}

// freshGrace bounds the wait for connections that have not sent a request.
const freshGrace = 5 * time.Second

// gentle wraps srv; srv.ConnState, if set, is still called.
func gentle(srv *http.Server) *gentleServer {
	g := &gentleServer{Server: srv, fresh: map[net.Conn]struct{}{}, served: make(chan struct{})}
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		g.mu.Lock()
		if st == http.StateNew {
			g.fresh[c] = struct{}{}
		} else {
			delete(g.fresh, c)
		}
		g.mu.Unlock()
		if next != nil {
			next(c, st)
		}
	}
	return g
}

// Serve is http.Server.Serve, remembering ln for Shutdown.
func (g *gentleServer) Serve(ln net.Listener) error {
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
	defer close(g.served)
	return g.Server.Serve(ln)
}

// Shutdown stops accepting, waits until the connections accepted before
// have sent their first request (or freshGrace or ctx ends), then shuts
// the server down as http.Server.Shutdown does.
func (g *gentleServer) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	ln := g.ln
	g.mu.Unlock()
	if ln != nil {
		ln.Close()
		select {
		case <-g.served:
		case <-ctx.Done():
		}
		deadline := time.Now().Add(freshGrace)
		for g.freshConns() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return g.Server.Shutdown(ctx)
}

func (g *gentleServer) freshConns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.fresh)
}
