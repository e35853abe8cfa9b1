// Package tcp is sluice's layer-4 codec: a protocol tcp listener accepts
// client connections and relays each one, byte for byte, to a backend of a
// pool of tcp:// backends. It runs beneath the same core as the HTTP
// codecs: the listener's route table (on the server name of the client's
// TLS ClientHello), the pool's picker (PickInfo.ClientIP for the hash
// policies, in-flight connections for least_requests and p2c), the
// attempt loop with its connect retries, retry budget, per-backend limits
// and queue, passive health, and the access log. A connection is one
// attempt that lasts as long as the relay: it holds its backend's slot
// (max_connections_per_backend) and counts in its in-flight figure until
// it ends.
//
// Before the relay, per connection and bounded by the listener's
// read_header timeout: the PROXY protocol header (proxy_protocol), then
// either TLS termination (tls: TLS in, plain TCP out) or, with sni routes,
// the ClientHello's server name, read without terminating TLS and sent on
// to the backend first.
package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/proxy"
)

// Options configure a Server for one listener.
type Options struct {
	// View holds the listener's current request-path view: routes,
	// pools, trusted proxies, access log.
	View   *atomic.Pointer[proxy.Listener]
	Logger *slog.Logger
	// ConnState is told +1 when a connection opens and -1 when it closes.
	ConnState func(delta int64)
	// Handshake is told each TLS handshake's result (with Settings.TLS).
	Handshake func(ok bool)
	// Rejects counts connections closed before a backend saw them.
	Rejects *proxy.Rejects
}

// Settings are what a reload may change on a running listener without
// touching its connections: each new connection uses the settings of the
// moment it was accepted.
type Settings struct {
	// TLS terminates TLS: clients speak TLS, backends get the plain
	// bytes. Nil relays the bytes untouched.
	TLS *tls.Config
	// ProxyProtocol reads a PROXY protocol header first on every
	// connection (trusted peers: the view's Trusted, when not empty).
	ProxyProtocol bool
	// SNI reads the server name of the ClientHello, without terminating
	// TLS, to route on it (the listener has sni routes and no TLS).
	SNI bool
	// ReadHeader bounds the PROXY header, the TLS handshake and the
	// ClientHello (0: 10 s, still bounded).
	ReadHeader time.Duration
	// Idle closes a relayed connection on which no byte moved either way
	// for this long; the shorter of this and the pool's idle timeout
	// applies (0: none).
	Idle time.Duration
	// MaxConnections bounds the open connections: past it, new ones wait
	// in the kernel's accept queue (0: no limit).
	MaxConnections int
}

// Server serves one tcp listener. Create it with NewServer and run it with
// Serve; Shutdown drains it, Close ends it.
type Server struct {
	o        Options
	settings atomic.Pointer[Settings]

	ctx    context.Context // every connection's; Close cancels it
	cancel context.CancelFunc

	mu       sync.Mutex // guards ln, conns, closed
	ln       net.Listener
	conns    map[*conn]struct{}
	closed   bool
	shutting atomic.Bool
	drained  chan struct{} // closed once shutting and no connection is left
	// accepting is closed when Serve's accept loop has returned.
	accepting chan struct{}
	// freed wakes an accept loop held at MaxConnections: a connection
	// ended, or the settings changed.
	freed  chan struct{}
	active atomic.Int64
	wg     sync.WaitGroup // the connections' goroutines
}

// conn is one client connection and, once relaying, its relay.
type conn struct {
	nc    net.Conn
	relay atomic.Pointer[relay]
}

// NewServer returns a server with the given settings; Serve runs it.
func NewServer(o Options, s Settings) *Server {
	if o.ConnState == nil {
		o.ConnState = func(int64) {}
	}
	if o.Handshake == nil {
		o.Handshake = func(bool) {}
	}
	if o.Rejects == nil {
		o.Rejects = new(proxy.Rejects)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{o: o, ctx: ctx, cancel: cancel, conns: map[*conn]struct{}{}, drained: make(chan struct{}),
		accepting: make(chan struct{}), freed: make(chan struct{}, 1)}
	srv.settings.Store(&s)
	return srv
}

// Update replaces the settings; connections accepted from now on use them,
// those open keep what they started with.
func (s *Server) Update(set Settings) {
	s.settings.Store(&set)
	s.wake()
}

func (s *Server) wake() {
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// Serve accepts connections on ln until Shutdown or Close, then waits for
// the goroutines of its connections and returns net.ErrClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	defer s.wg.Wait()
	defer close(s.accepting)
	if s.shutting.Load() {
		ln.Close()
		return net.ErrClosed
	}
	var backoff time.Duration
	for {
		// At max_connections, leave new connections in the kernel's
		// accept queue (HAProxy's maxconn) until one ends.
		for max := s.settings.Load().MaxConnections; max > 0 && s.active.Load() >= int64(max); max = s.settings.Load().MaxConnections {
			if s.shutting.Load() {
				return net.ErrClosed
			}
			select {
			case <-s.freed: // a connection ended, the settings changed, or shutdown began
			case <-s.ctx.Done():
				return net.ErrClosed
			}
		}
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() || errors.Is(err, net.ErrClosed) {
				return net.ErrClosed
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := &conn{nc: nc}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.active.Add(1)
		s.o.ConnState(1)
		go func() {
			defer s.wg.Done()
			defer s.forget(c)
			s.serve(c)
		}()
	}
}

func (s *Server) forget(c *conn) {
	c.nc.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.drainedLocked()
	s.mu.Unlock()
	s.active.Add(-1)
	s.o.ConnState(-1)
	s.wake()
}

func (s *Server) drainedLocked() {
	if s.shutting.Load() && len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// Shutdown stops accepting and waits until every connection has ended on
// its own (their clients and backends close them), or ctx ends: then it
// returns ctx's error and the caller closes what is left with Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.wake()
	s.mu.Lock()
	serving := s.ln != nil
	if serving {
		s.ln.Close()
	}
	s.mu.Unlock()
	if serving {
		select {
		case <-s.accepting:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	s.drainedLocked()
	s.mu.Unlock()
	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection, client and backend
// sides, at once; Serve returns once their goroutines have.
func (s *Server) Close() error {
	s.shutting.Store(true)
	s.cancel() // a dial or a wait for a backend slot gives up
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		if r := c.relay.Load(); r != nil {
			r.abort(EndShutdown)
		}
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}
