package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/sluice-lb/sluice/internal/balance"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/health"
	"github.com/sluice-lb/sluice/internal/netlimit"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxy/h1"
	"github.com/sluice-lb/sluice/internal/proxy/nethttp"
	"github.com/sluice-lb/sluice/internal/proxy/tcp"
	"github.com/sluice-lb/sluice/internal/proxyproto"
	"github.com/sluice-lb/sluice/internal/route"
	"github.com/sluice-lb/sluice/internal/tlsterm"
)

// buildSnapshot builds the pools of cfg and starts their checkers. Backends
// whose pool name and address appear in prev are carried over (health,
// admin state, counters, requests in flight); so are the upstreams of pools
// whose upstream settings did not change, with their idle connections.
func (s *Server) buildSnapshot(cfg *config.Config, prev *snapshot) *snapshot {
	snap := &snapshot{byName: map[string]*poolRT{}}
	var prevLimits *limits
	if prev != nil {
		prevLimits = prev.limits
	}
	snap.limits = s.buildLimits(cfg, prevLimits)
	for _, pc := range cfg.Pools {
		var old *poolRT
		if prev != nil {
			old = prev.byName[pc.Name]
		}
		policy, err := balance.New(pc.Balance, balance.Options{HashKey: pc.HashKey, HashBalanceFactor: pc.HashBalanceFactor})
		if err != nil {
			panic(err) // config validation admits only known policies
		}
		backends := make([]*pool.Backend, 0, len(pc.Backends))
		for _, bc := range pc.Backends {
			if e, ok := s.state.Get(pc.Name, bc.Address); ok && e.Removed {
				continue // removed through the admin API
			}
			var b *pool.Backend
			if old != nil {
				b = old.pool.Find(bc.Address)
			}
			if b != nil && b.Source != pool.SourceConfig && b.Source != pool.SourceRuntime {
				b = nil // found by discovery before, written in the file now
			}
			if b == nil {
				b = pool.NewBackend(bc.Address, bc.URL, bc.Weight)
				if prev != nil {
					b.Joined() // added by a reload: slow start applies
				}
			}
			backends = append(backends, b)
		}
		backends = append(backends, s.addedBackends(pc, old, prev != nil)...)
		if old != nil {
			backends = append(backends, carryDiscovered(old.pool, pc, backends)...)
		}
		p := pool.New(pc.Name, policy, backends)
		if old != nil {
			p.Inherit(old.pool)
		}
		p.SetSlowStart(pc.SlowStart)
		p.Limit.PerBackend = int64(pc.MaxConnectionsPerBackend)
		p.Limit.MaxQueue, p.Limit.Timeout = pc.MaxQueue, pc.QueueTimeout
		var up *proxy.Upstream
		if old != nil && old.cfg.Timeouts == pc.Timeouts && old.cfg.UpstreamTLS == pc.UpstreamTLS &&
			old.cfg.UpstreamHTTP2 == pc.UpstreamHTTP2 && old.cfg.SendProxyProtocol == pc.SendProxyProtocol {
			up = old.upstream
		} else {
			up = proxy.NewUpstream(pc.Timeouts, pc.UpstreamTLS.ClientConfig())
			up.HTTP2 = pc.UpstreamHTTP2
			up.ProxyHeader = proxyproto.Version(pc.SendProxyProtocol)
		}
		ck := health.New(p, pc.HealthCheck, s.logger, health.Options{
			Passive:       pc.PassiveHealth,
			UpstreamTLS:   pc.UpstreamTLS,
			UpstreamHTTP2: pc.UpstreamHTTP2,
			AgentPort:     agentPort(pc),
			Events:        s.events,
			ProxyHeader:   proxyproto.Version(pc.SendProxyProtocol),
		})
		retryAfter := "5"
		if iv := ck.Interval(); iv > 0 {
			retryAfter = strconv.Itoa(max(1, int((iv+time.Second-1)/time.Second)))
		}
		rt := &poolRT{
			cfg:      pc,
			pool:     p,
			checker:  ck,
			upstream: up,
			target: &proxy.Target{Pool: p, Health: ck, Retries: pc.Retries, Timeouts: pc.Timeouts,
				Upstream: up, RetryAfter: retryAfter, HashKey: proxy.ParseHashKey(pc.HashKey),
				LoadHeader: loadHeader(pc), GRPCWeb: pc.GRPCWeb},
		}
		if st := pc.Sticky; st != nil {
			key := s.stickyKey
			if st.Secret != "" {
				key = proxy.StickyKey(st.Secret)
			}
			rt.target.Sticky = proxy.NewSticky(st.Cookie, st.TTL, key)
		}
		snap.pools = append(snap.pools, rt)
		snap.byName[pc.Name] = rt
	}
	return snap
}

// activate is the last step of a swap, once snap serves: its pools claim
// their backends and configured weights take effect. Until then a reload
// that fails (a port in use) has changed nothing the running config uses.
//
// The health loops of prev stop first; then those of snap start, each
// inheriting the check history of its predecessor when the pool's
// health_check did not change.
func (s *Server) activate(snap, prev *snapshot) {
	if prev != nil {
		s.stopPools(prev.pools)
	}
	for _, p := range snap.pools {
		p.pool.Claim()
		p.pool.Budget.SetPercent(p.cfg.Retries.BudgetPercent)
		s.applyState(p)
		if prev != nil {
			if old := prev.byName[p.cfg.Name]; old != nil && reflect.DeepEqual(old.cfg.HealthCheck, p.cfg.HealthCheck) {
				p.checker.Inherit(old.checker)
			} else if old != nil {
				p.checker.InheritAgents(old.checker)
			}
		}
		s.startChecker(p)
	}
	s.membershipEvents(snap, prev)
	s.reportStale(snap)
}

func (s *Server) startChecker(p *poolRT) {
	var ctx context.Context
	ctx, p.cancel = context.WithCancel(s.ctx)
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		p.checker.Run(ctx)
	}()
}

// stopPools stops the health loops of pools that left service and waits for
// them. Their upstreams may live on in the next snapshot: callers close
// idle connections of those that do not.
func (s *Server) stopPools(ps []*poolRT) {
	for _, p := range ps {
		if p.cancel != nil {
			p.cancel()
		}
	}
	for _, p := range ps {
		if p.done != nil {
			<-p.done
		}
	}
}

// listener is one generation of a bound client listener: its socket, its
// server (the HTTP/1.1 engine, or net/http's) and the view its requests use. A reload that changes only
// routes swaps the view; one that changes timeouts or limits starts a new
// generation on the same socket (see socket).
type listener struct {
	cfg    config.Listener
	view   atomic.Pointer[proxy.Listener]
	sock   *socket
	srv    httpServer
	front  *front        // TLS termination and HTTP/2 dispatch (nil: cleartext HTTP/1 only)
	tls    *tls.Config   // this generation's; nil: cleartext
	active *atomic.Int64 // open connections, across generations
	// tlsState holds the certificates, across generations (nil: no TLS).
	tlsState *listenerTLS
	gen      net.Listener // this generation's share of the socket
	noPool   *pool.Stats  // across generations
	// Across generations too: TLS handshakes by result, HTTP/2 errors.
	handshakes *handshakeCounts
	h2Errors   *atomic.Uint64
	h2Floods   *h2guard.Stats // the HTTP/2 guard's: streams, resets, connections closed for a flood
	rejects    *proxy.Rejects // connections closed before a backend saw them, by reason
	tcp        *tcp.Server    // the layer-4 server of a protocol tcp listener (also srv)
	done       chan struct{}
	// quic is the UDP side of a listener with http3, across generations
	// (nil: no http3); quicLeaves: the next generation has none, so this
	// one's shutdown closes it.
	quic       *quicSocket
	quicLeaves bool
	h3         *http3.Server // this generation's (nil: no http3)
	h3gen      *quicGen
	h3done     chan struct{} // closed when h3 has stopped serving
	// rateLimited counts requests a rate limit refused, across generations.
	rateLimited *atomic.Uint64
}

// next returns a new generation of l with config lc on the same socket;
// prepareTLS gives it its TLS config.
func (l *listener) next(lc config.Listener) *listener {
	nl := &listener{cfg: lc, sock: l.sock, active: l.active, noPool: l.noPool, done: make(chan struct{}),
		handshakes: l.handshakes, h2Errors: l.h2Errors, h2Floods: l.h2Floods, rejects: l.rejects, tlsState: l.tlsState,
		rateLimited: l.rateLimited,
	}
	if lc.TLS == nil {
		nl.tlsState.stopWatch()
		nl.tlsState = nil
	}
	if lc.HTTP3 {
		nl.quic = l.quic
	} else {
		l.quicLeaves = l.quic != nil
	}
	return nl
}

// prepareTLS loads l's certificates (or re-reads them, for a generation
// that keeps them: a reload re-reads every certificate file) and builds
// its TLS config.
func (l *listener) prepareTLS(s *Server) error {
	if l.cfg.TLS == nil {
		return nil
	}
	if l.tlsState == nil {
		lt, err := s.newListenerTLS(l.cfg)
		if err != nil {
			return err
		}
		l.tlsState = lt
	} else if err := l.tlsState.update(s, l.cfg); err != nil {
		return fmt.Errorf("listener %q: %w", l.cfg.Name, err)
	}
	c, err := l.tlsState.config(l.cfg)
	if err != nil {
		return err
	}
	l.tls = c
	return nil
}

// view builds the immutable request-path view of listener lc over snap.
func (s *Server) view(lc config.Listener, snap *snapshot, l *listener) *proxy.Listener {
	targets := make([]*proxy.Target, len(snap.pools))
	index := map[string]int{}
	for i, p := range snap.pools {
		targets[i] = p.target
		index[p.cfg.Name] = i
	}
	poolIndex := func(name string) int {
		if i, ok := index[name]; ok {
			return i
		}
		return -1
	}
	slot := s.slot(lc.Name)
	v := &proxy.Listener{
		Name:    lc.Name,
		Slot:    slot,
		Routes:  route.Compile(lc.Routes, lc.Pool, poolIndex),
		Targets: targets,
		Trusted: lc.TrustedPrefixes,
		Limits:  lc.Limits,
		TLS:     lc.TLS != nil,
		NoPool:  l.noPool,
		Access:  s.access,
		Tracer:  snap.tracing.Tracer(),
		Stats:   s.listenerStats(slot),
		AltSvc:  l.altSvc(),

		RateLimited: l.rateLimited,
	}
	if lc.TLS == nil {
		v.ACME = s.challenges // HTTP-01 is answered on every plain-HTTP listener
	}
	snap.limits.views(lc, v)
	if lt := l.tlsState; lt != nil && lc.TLS != nil {
		v.Covers = lt.covers
		if lc.TLS.ClientCA != "" {
			v.ClientCert = tlsterm.ClientCertHeader
			v.ClientSubject = tlsterm.ClientSubject
		}
	}
	return v
}

// bindListeners binds the listeners of cfg that are not already bound
// (existing maps names to bound listeners whose address is unchanged). On
// error it closes what it bound and returns the error.
func (s *Server) bindListeners(cfg *config.Config, snap *snapshot, existing map[string]*listener) ([]*listener, error) {
	var bound []*listener
	for _, lc := range cfg.Listeners {
		if l := existing[lc.Name]; l != nil && reflect.DeepEqual(l.cfg, lc) {
			continue
		}
		if l := existing[lc.Name]; l != nil && l.cfg.Address == lc.Address {
			continue // same socket, new settings: swapped by the caller
		}
		ln, err := s.listen(lc.Name, lc.Address)
		if err != nil {
			for _, b := range bound {
				b.close()
			}
			return nil, err // a *ListenError
		}
		l := &listener{cfg: lc, sock: newSocket(ln), active: new(atomic.Int64), noPool: new(pool.Stats),
			done: make(chan struct{}), handshakes: new(handshakeCounts), h2Errors: new(atomic.Uint64),
			h2Floods: new(h2guard.Stats), rateLimited: new(atomic.Uint64), rejects: new(proxy.Rejects)}
		err = l.prepareQUIC(s)
		if err == nil {
			err = l.prepareTLS(s)
		}
		if err != nil {
			l.close()
			for _, b := range bound {
				b.close()
			}
			return nil, err
		}
		l.view.Store(s.view(lc, snap, l))
		bound = append(bound, l)
	}
	return bound, nil
}

// close releases the sockets of a listener bound but never served.
func (l *listener) close() {
	l.sock.Close()
	if l.quic != nil {
		l.quic.Close()
	}
	l.tlsState.stopWatch()
}

// handshakeCounts are a listener's TLS handshakes by result.
type handshakeCounts struct{ ok, failed atomic.Uint64 }

// httpServer is what a listener generation runs: *h1.Engine or
// *http.Server.
type httpServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// serve starts the server of l: the HTTP/1.1 engine, or with engine std an
// http.Server beneath the strict edge guard.
func (l *listener) serve(s *Server) {
	if l.cfg.Protocol == "tcp" {
		l.serveTCP(s)
		return
	}
	lim := l.cfg.Limits
	l.gen = l.sock.generation()
	var ln net.Listener = l.gen
	if n := lim.MaxConnections; n > 0 {
		// Like HAProxy's maxconn: past the limit, connections wait in the
		// kernel's accept queue instead of being accepted.
		ln = netlimit.NewListener(ln, n)
	}
	var h2s h2Serving
	if l.tls != nil || l.cfg.H2C || l.cfg.ProxyProtocol {
		var base func(net.Conn) net.Conn
		if l.cfg.Engine == "loop" {
			base = h1.LoopTLS
		}
		h2s = l.h2Server(s)
		l.front = newFront(ln, frontOptions{TLS: l.tls, TLSBase: base, H2C: l.cfg.H2C, HandshakeTimeout: l.cfg.Timeouts.ReadHeader,
			H2: h2s, Handshake: func(ok bool) { l.handshake(ok) },
			H2Guard: &h2guard.Config{Stats: l.h2Floods, Unbatched: l.cfg.Engine != "std",
				Limits: h2guard.Limits{MaxHeaderBlockBytes: lim.MaxHeaderBytes}},
			ConnState:     func(d int64) { l.active.Add(d) },
			ProxyProtocol: l.cfg.ProxyProtocol, Trusted: l.trustedPeer, Rejected: l.rejects.Add})
		ln = l.front
	}
	if l.quic != nil {
		l.serveH3(s)
	}
	if l.cfg.Engine == "std" {
		l.srv = gentle(l.stdServer(s))
		ln = edge.NewListener(ln, edge.Limits{MaxURIBytes: lim.MaxURIBytes,
			MaxHeaderBytes: lim.MaxHeaderBytes, MaxHeaders: lim.MaxHeaders})
	} else {
		o := h1.EngineOptions{View: &l.view, IDs: s.ids,
			Logger: s.logger, Tunnels: &s.tunnels, Timeouts: l.cfg.Timeouts, Limits: lim,
			ConnState: func(d int64) { l.active.Add(d) }}
		if l.cfg.H2C {
			o.H2C = l.front.serveUpgraded
		}
		if l.cfg.Engine == "loop" {
			o.Loops = s.eventLoops()
		}
		e := h1.NewEngine(o)
		if own, ok := h2s.(*ownH2); ok {
			own.engine.Store(e)
		}
		l.srv = e
	}
	go func() {
		defer close(l.done)
		if err := l.srv.Serve(ln); err != nil && !isClosed(err) {
			s.logger.Error("listener stopped", "listener", l.cfg.Name, "error", err)
		}
	}()
}

// streamHandler is the net/http codec's handler for l's HTTP/2 and HTTP/3
// streams: with engine h1 their requests reach HTTP/1.1 backends over the
// engine's connections (h1.Streams), with engine std through http.Transport.
func (l *listener) streamHandler(s *Server) *nethttp.Handler {
	h := nethttp.NewHandler(&l.view, s.ids, s.logger, &s.tunnels)
	if l.cfg.Engine != "std" {
		h.UseEngine(h1.Streams{})
	}
	return h
}

// HTTP/2 limits towards clients (the streams at once per connection are
// limits.max_concurrent_streams): the flow-control windows a client may
// fill before sluice reads: one stream 1 MiB, one connection 4 MiB.
const (
	h2StreamWindow = 1 << 20
	h2ConnWindow   = 4 << 20
)

// trustedPeer reports whether peer may send a PROXY protocol header: it is
// in the current trusted_proxies, or that list is empty.
func (l *listener) trustedPeer(peer netip.Addr) bool {
	t := l.view.Load().Trusted
	return len(t) == 0 || proxy.IsTrusted(peer, t)
}

// handshake counts one TLS handshake of l.
func (l *listener) handshake(ok bool) {
	if ok {
		l.handshakes.ok.Add(1)
	} else {
		l.handshakes.failed.Add(1)
	}
}

// stdServer is the net/http codec's server for l.
func (l *listener) stdServer(s *Server) *http.Server {
	lim := l.cfg.Limits
	t := l.cfg.Timeouts
	return &http.Server{
		Handler:           nethttp.NewHandler(&l.view, s.ids, s.logger, &s.tunnels),
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		// The guard enforces max_header_bytes exactly; this is a backstop.
		MaxHeaderBytes: lim.MaxHeaderBytes + 4096,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if g, ok := c.(*edge.Conn); ok {
				ctx = nethttp.WithGuard(ctx, g)
				if tc, ok := g.NetConn().(*tls.Conn); ok {
					cs := tc.ConnectionState()
					ctx = nethttp.WithTLS(ctx, &cs)
				}
			}
			return ctx
		},
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				l.active.Add(1)
			case http.StateHijacked, http.StateClosed:
				l.active.Add(-1)
			}
		},
		ErrorLog: slogLogger(s),
	}
}

// shutdown stops accepting and waits for requests in flight until ctx ends,
// then closes what is left. With closeSocket the socket closes too (the
// listener leaves); without, the next generation goes on accepting.
func (l *listener) shutdown(ctx context.Context, closeSocket bool) {
	if closeSocket {
		l.sock.Close()
	}
	var wg sync.WaitGroup
	if l.h3 != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.shutdownH3(ctx, closeSocket || l.quicLeaves)
		}()
	}
	if l.front != nil {
		// HTTP/2 connections get GOAWAY and finish their streams.
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.front.shutdown(ctx)
		}()
	}
	if err := l.srv.Shutdown(ctx); err != nil {
		l.srv.Close()
	}
	wg.Wait()
	<-l.done
}
