// Package server wires sluice together: it builds the runtime view of a
// config (pools, health checkers, upstream transports, listener views),
// binds listeners, swaps views atomically on reload while carrying backend
// state over by identity, runs the admin listener, and shuts down
// gracefully.
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/acme"
	"github.com/sluice-lb/sluice/internal/admin"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/h2guard"
	"github.com/sluice-lb/sluice/internal/health"
	"github.com/sluice-lb/sluice/internal/metrics"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxy/h1"
	"github.com/sluice-lb/sluice/internal/state"
	"github.com/sluice-lb/sluice/internal/tracing"
)

// Options are the parts of a Server that do not come from the config.
type Options struct {
	// Logger receives the process log. Nil means slog.Default().
	Logger *slog.Logger
	// Stdout is where "access_log: {path: stdout}" writes. Nil means
	// os.Stdout.
	Stdout io.Writer
	// Version is reported by the admin API and the dashboard.
	Version string
	// Build labels sluice_build_info.
	Build BuildInfo
	// Notify is told when the server is ready, reloads and stops; nil tells
	// nobody.
	Notify Notifier
	// Listen binds every listening socket: each listener's ("tcp", its
	// address as the config gives it) and the admin one. An upgrade passes
	// one that hands over the sockets the previous process had. Nil means
	// net.Listen.
	Listen func(network, address string) (net.Listener, error)
	// ListenPacket binds the UDP socket of each listener with http3
	// ("udp", the listener's host and bound port), as Listen does for
	// TCP. Nil means net.ListenPacket.
	ListenPacket func(network, address string) (net.PacketConn, error)
}

// Server is a running sluice. Create it with New, then call Run.
type Server struct {
	logger *slog.Logger
	opts   Options
	ids    *proxy.RequestIDs
	// stickyKey keys sticky cookies of pools without a secret; it lives as
	// long as the process, so cookies survive reloads.
	stickyKey []byte
	tunnels   proxy.Tunnels
	access    *accesslog.Logger
	// events records every decision (health, ejections, API changes,
	// reloads) with its reason, logs it once and feeds GET /api/v1/events.
	events *events.Log
	// state is admin.state_file (nil: none); stale lists its entries that
	// name no pool or backend of the running config.
	state *state.Store
	stale atomic.Pointer[[]state.Stale]
	// storeErrors counts the failed calls of rate limit stores a reload
	// or shutdown retired.
	storeErrors atomic.Uint64

	// mu serialises Reload, Run's start-up and shutdown, and admin changes
	// of membership.
	mu        sync.Mutex
	cfg       *config.Config
	cfgHash   []byte // of the file cfg was loaded from (nil: none)
	snap      atomic.Pointer[snapshot]
	listeners map[string]*listener // by name
	// removing holds the backends the admin API is removing (draining
	// until their requests finish): a reload leaves their state and
	// their removal's event to the API.
	removing  map[*pool.Backend]bool
	slotNames [pool.MaxListeners]atomic.Pointer[string]
	nextSlot  int
	lstats    [pool.MaxListeners]*proxy.ListenerStats // by slot (see listenerStats)

	traceCounts tracing.Counts

	ready        atomic.Bool
	reloadsOK    atomic.Uint64
	reloadsFail  atomic.Uint64
	lastReloadOK atomic.Bool

	ctx    context.Context // lives as long as Run
	cancel context.CancelFunc
	wg     sync.WaitGroup // checker loops and drain waits

	admin     *gentleServer
	adminAddr net.Addr // bound; guarded by mu
	// endStreams ends the admin API's event streams, which would otherwise
	// hold its Shutdown up.
	endStreams context.CancelFunc
	// handover: the coming shutdown hands the sockets over (see HandOver).
	handover atomic.Bool

	// challenges are the ACME challenges under way, answered on every
	// plain-HTTP listener (HTTP-01) and on the TLS listener of each
	// Manager (TLS-ALPN-01).
	challenges *acme.Challenges
	// plainHTTP: some listener serves plain HTTP, so HTTP-01 can be
	// answered.
	plainHTTP atomic.Bool
	// quicRetryAbove is the number of QUIC handshakes in progress on one
	// listener past which new ones need a Retry (quicRetryAbove; tests
	// lower it).
	quicRetryAbove int64
	// loops serve the listeners with engine: loop, made with the first
	// of them (eventLoops) and stopped once every listener has shut down.
	loopsMu   sync.Mutex
	loops     *h1.Loops
	loopsStop func()
	loopsN    int // event_loops, as the loops will be made (wantLoops)
	// discovery runs each pool's discovery, by pool name; discErrors
	// counts each pool's failed look-ups by source, across restarts of
	// its discovery. Both guarded by mu.
	discovery  map[string]*poolDiscovery
	discErrors map[string]map[pool.Source]*atomic.Uint64
}

// snapshot is the pool side of one config generation; listener views point
// into it.
type snapshot struct {
	pools  []*poolRT
	byName map[string]*poolRT
	// tracing is the tracing provider the views' requests use (nil: off).
	tracing *tracing.Provider
	limits  *limits
}

// poolRT is one pool with what runs beside it.
type poolRT struct {
	cfg      config.Pool
	pool     *pool.Pool
	checker  *health.Checker
	target   *proxy.Target
	upstream *proxy.Upstream
	cancel   context.CancelFunc
	done     chan struct{}
}

// New validates nothing (the config must come from config.Load or have
// passed Validate) and binds nothing; Run does.
func New(cfg *config.Config, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Notify == nil {
		o.Notify = nopNotifier{}
	}
	s := &Server{logger: o.Logger, opts: o, ids: proxy.NewRequestIDs(), cfg: cfg, loopsN: cfg.EventLoops, listeners: map[string]*listener{},
		removing: map[*pool.Backend]bool{}, events: events.New(0, o.Logger),
		challenges: acme.NewChallenges(), quicRetryAbove: quicRetryAbove}
	s.discovery, s.discErrors = map[string]*poolDiscovery{}, map[string]map[pool.Source]*atomic.Uint64{}
	if f := cfg.Admin.StateFile; f != "" {
		st, err := state.Open(f)
		if err != nil {
			return nil, err
		}
		s.state = st
	}
	key := make([]byte, 32)
	rand.Read(key)
	s.stickyKey = key
	if cfg.Path != "" {
		s.cfgHash = fileHash(cfg.Path)
	}
	s.lastReloadOK.Store(true)
	access, err := s.accessLogger(cfg.AccessLog)
	if err != nil {
		return nil, err
	}
	s.access = access
	return s, nil
}

// accessLogger returns the access log the config asks for (nil: off).
func (s *Server) accessLogger(al config.AccessLog) (*accesslog.Logger, error) {
	if al.Format == "off" {
		return nil, nil
	}
	switch al.Path {
	case "", "stdout":
		w := s.opts.Stdout
		if w == nil {
			w = os.Stdout
		}
		return accesslog.New(w, al.Format), nil
	case "stderr":
		return accesslog.New(os.Stderr, al.Format), nil
	}
	l, err := accesslog.NewFile(al.Path, al.Format)
	if err != nil {
		return nil, fmt.Errorf("open access log: %w (check access_log.path)", err)
	}
	return l, nil
}

// Run binds every listener and the admin listener, serves until ctx is
// done, then shuts down gracefully. It returns an error when start-up fails
// (e.g. an address in use) and nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	token, err := readToken(s.cfg.Admin.TokenFile)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.access != nil {
		actx, acancel := context.WithCancel(context.Background())
		defer func() { acancel(); s.access.Wait() }()
		go s.access.Run(actx)
	}
	tp, err := s.tracingFor(s.cfg, nil)
	if err != nil {
		s.mu.Unlock()
		s.cancel()
		return err
	}
	snap := s.buildSnapshot(s.cfg, nil)
	snap.tracing = tp
	s.plainHTTP.Store(hasPlainHTTP(s.cfg))
	abort := func(err error) error { // undo what the start did so far
		s.mu.Unlock()
		s.stopPools(snap.pools)
		s.flushTracing(tp)
		s.retireStore(snap.limits, nil)
		s.cancel()
		return err
	}
	adminLn, err := s.listen("", s.cfg.Admin.Address)
	if err != nil {
		return abort(err)
	}
	bound, err := s.bindListeners(s.cfg, snap, nil)
	if err != nil {
		adminLn.Close()
		return abort(err)
	}
	s.snap.Store(snap)
	s.activate(snap, nil)
	s.syncDiscovery(snap, s.cfg.ShutdownTimeout)
	for _, l := range bound {
		s.listeners[l.cfg.Name] = l
		l.serve(s)
		s.watchCerts(l)
	}
	for _, w := range s.cfg.Warnings() {
		s.logger.Warn("config", "warning", w)
	}
	streams, endStreams := context.WithCancel(context.Background())
	s.endStreams = endStreams
	s.adminAddr = adminLn.Addr()
	s.admin = gentle(&http.Server{
		Handler: admin.New(s, admin.Options{Address: adminLn.Addr().String(), Token: token,
			Metrics: metrics.NewHandler(s), Logger: s.logger, Version: s.opts.Version,
			Events: s.events, Done: streams.Done(),
			Stats: s, Fleet: s}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.admin.Serve(adminLn) // ends with Shutdown, before shutdown waits for s.wg
	}()
	for _, l := range bound {
		s.logger.Info("listening", "listener", l.cfg.Name, "address", l.sock.Addr().String())
	}
	settled := s.discoverySettled()
	s.mu.Unlock()
	s.logger.Info("admin listening", "address", adminLn.Addr().String())
	// Ready once discovery has given its pools what it can (bounded: a
	// registry that does not answer is reported, and the pool serves its
	// static backends).
	waitSettled(ctx, settled, discoverySettleTimeout)
	s.ready.Store(true)
	s.opts.Notify.Ready()

	<-ctx.Done()
	return s.shutdown()
}

// Addr returns the bound address of a listener (tests bind ":0").
func (s *Server) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[name]; l != nil {
		return l.sock.Addr()
	}
	return nil
}

// AdminAddr returns the bound address of the admin listener (tests bind
// ":0"), or nil before Run has bound it.
func (s *Server) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adminAddr
}

func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token: %w (check admin.token_file)", err)
	}
	tok := string(b)
	for len(tok) > 0 && (tok[len(tok)-1] == '\n' || tok[len(tok)-1] == '\r' || tok[len(tok)-1] == ' ') {
		tok = tok[:len(tok)-1]
	}
	if tok == "" {
		return "", fmt.Errorf("admin token file %q is empty", path)
	}
	return tok, nil
}

// shutdown: /readyz turns 503 at once; after shutdown_delay listeners stop
// accepting; WebSockets get a close frame; requests in flight get up to
// shutdown_timeout; then idle connections are closed. After HandOver it
// goes the same way, but without the delay, with /readyz left at 200, with
// the admin listener closed at once too, and with WebSockets left to run
// until just before shutdown_timeout.
func (s *Server) shutdown() error {
	handover := s.handover.Load()
	s.opts.Notify.Stopping()
	if !handover {
		s.ready.Store(false)
	}
	s.mu.Lock()
	cfg := s.cfg
	ls := make([]*listener, 0, len(s.listeners))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if handover {
		s.logger.Info("draining after the hand-over", "timeout", cfg.ShutdownTimeout)
		// The new process serves the admin address too: stop accepting
		// there now and let the calls under way finish.
		s.endStreams()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.admin.Shutdown(ctx)
		}()
	} else {
		s.logger.Info("shutting down", "delay", cfg.ShutdownDelay, "timeout", cfg.ShutdownTimeout)
		if cfg.ShutdownDelay > 0 {
			time.Sleep(cfg.ShutdownDelay)
		}
	}
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.shutdown(ctx, true)
		}()
	}
	if handover {
		// The address is served by the new process: WebSockets here run on
		// like requests in flight, and those still open just before
		// shutdown_timeout get a close frame, so all end within it.
		s.tunnels.Drain(ctx, min(5*time.Second, cfg.ShutdownTimeout/10))
	} else {
		// Tunnels (WebSockets) do not end by themselves: send each client
		// a close frame now, so the wait below is for ordinary requests.
		s.tunnels.CloseAll(min(5*time.Second, cfg.ShutdownTimeout))
	}
	wg.Wait()
	s.stopLoops() // after the listeners: no connection is left on them
	s.endStreams()
	s.admin.Shutdown(ctx)
	s.cancel()
	s.stopDiscovery()
	if snap := s.snap.Load(); snap != nil {
		s.stopPools(snap.pools)
		for _, p := range snap.pools {
			p.upstream.Close()
		}
		s.retireStore(snap.limits, nil)
		// Every request has ended: its span is queued. Export what is.
		s.flushTracing(snap.tracing)
	}
	s.wg.Wait()
	if ctx.Err() != nil {
		s.logger.Warn("shutdown timeout reached; remaining connections were closed", "timeout", cfg.ShutdownTimeout)
	}
	s.logger.Info("stopped")
	return nil
}

// HandOver marks the coming shutdown (when Run's context ends) as the end of
// an upgrade: another process now accepts on the same sockets. Listeners
// stop accepting at once (no shutdown_delay: nobody needs to notice),
// requests in flight finish as on SIGTERM, WebSockets run on until they
// end or shutdown_timeout is near (then they get a close frame), /readyz
// keeps answering 200 on the connections left (the address is served) and
// the admin listener closes at once.
func (s *Server) HandOver() { s.handover.Store(true) }

// Events returns the log of decisions (GET /api/v1/events).
func (s *Server) Events() *events.Log { return s.events }

// Ready reports whether every listener is bound and the server is not
// shutting down.
func (s *Server) Ready() bool { return s.ready.Load() }

// Reloads implements metrics.Source.
func (s *Server) Reloads() (ok, failed uint64, lastOK bool) {
	return s.reloadsOK.Load(), s.reloadsFail.Load(), s.lastReloadOK.Load()
}

// AccessLogDropped implements metrics.Source.
func (s *Server) AccessLogDropped() uint64 { return s.access.Dropped() }

// Pools returns the current pools in config order.
func (s *Server) Pools() []*pool.Pool {
	snap := s.snap.Load()
	if snap == nil {
		return nil
	}
	ps := make([]*pool.Pool, len(snap.pools))
	for i, p := range snap.pools {
		ps[i] = p.pool
	}
	return ps
}

// Listeners implements metrics.Source.
func (s *Server) Listeners() []metrics.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]metrics.Listener, 0, len(s.listeners))
	for _, l := range s.listeners {
		ml := metrics.Listener{Name: l.cfg.Name, Active: l.active.Load(), NoPool: l.noPool,
			HTTP2Errors: l.h2Errors.Load(), Stats: s.listenerStats(s.slot(l.cfg.Name)),
			RateLimited: l.rateLimited.Load()}
		if l.cfg.H2C || l.cfg.TLS != nil {
			ml.HTTP2Floods = map[string]uint64{}
			for _, r := range h2guard.Reasons() {
				ml.HTTP2Floods[r.String()] = l.h2Floods.Closed(r)
			}
			ml.HTTP2 = &metrics.HTTP2Counts{Streams: l.h2Floods.Streams.Load(),
				ResetsReceived: l.h2Floods.ResetsReceived.Load(), ResetsSent: l.h2Floods.ResetsSent.Load()}
		}
		ml.Protocols = l.protocols()
		if l.cfg.ProxyProtocol || l.cfg.Protocol == "tcp" {
			ml.Rejected = map[string]uint64{}
			l.rejects.Each(func(reason string, n uint64) { ml.Rejected[reason] = n })
		}
		if lt := l.tlsState; lt != nil {
			ml.TLS = true
			ml.HandshakesOK, ml.HandshakesFailed = l.handshakes.ok.Load(), l.handshakes.failed.Load()
			for _, e := range lt.store.Expiry() {
				ml.Certificates = append(ml.Certificates, metrics.Certificate{Name: e.Name, NotAfter: e.NotAfter})
			}
		}
		out = append(out, ml)
	}
	return out
}

// ListenerName implements metrics.Source.
func (s *Server) ListenerName(slot int) string {
	if slot < 0 || slot >= len(s.slotNames) {
		return ""
	}
	if p := s.slotNames[slot].Load(); p != nil {
		return *p
	}
	return ""
}

// slot returns the stable counter slot of a listener name (-1 when all
// slots are taken). Called with s.mu held.
func (s *Server) slot(name string) int {
	for i := 0; i < s.nextSlot; i++ {
		if *s.slotNames[i].Load() == name {
			return i
		}
	}
	if s.nextSlot >= len(s.slotNames) {
		return -1
	}
	i := s.nextSlot
	s.slotNames[i].Store(&name)
	s.nextSlot++
	return i
}

var _ interface {
	admin.Runtime
	metrics.Source
} = (*Server)(nil)

// isClosed reports whether err is the expected error of a closed listener.
func isClosed(err error) bool {
	return errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed)
}

// hasPlainHTTP reports whether cfg has a plain-HTTP listener, which
// answers ACME HTTP-01 challenges.
func hasPlainHTTP(cfg *config.Config) bool {
	for _, l := range cfg.Listeners {
		if l.TLS == nil && l.Protocol == "http" {
			return true
		}
	}
	return false
}

// eventLoops returns the event loops of engine: loop listeners, made and
// started the first time one asks; nil when they cannot be made (the
// listener's connections are then served by goroutines, and the reason is
// logged).
func (s *Server) eventLoops() *h1.Loops {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if s.loops != nil {
		return s.loops
	}
	ls, err := h1.NewLoops(s.loopsN, s.logger)
	if err != nil {
		s.logger.Error("engine: loop: the event loops could not be made; goroutines serve these listeners", "error", err)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ls.Run(ctx); err != nil {
			s.logger.Error("engine: loop: the event loops stopped", "error", err)
		}
	}()
	s.loops = ls
	s.loopsStop = func() {
		cancel()
		<-done
		ls.Close()
	}
	return ls
}

// wantLoops sets event_loops for the loops still to be made, and reports
// whether it applies: false once they are made.
func (s *Server) wantLoops(n int) bool {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if s.loops != nil {
		return false
	}
	s.loopsN = n
	return true
}

// stopLoops stops the event loops, if any, once no listener uses them.
func (s *Server) stopLoops() {
	s.loopsMu.Lock()
	stop := s.loopsStop
	s.loops, s.loopsStop = nil, nil
	s.loopsMu.Unlock()
	if stop != nil {
		stop()
	}
}
