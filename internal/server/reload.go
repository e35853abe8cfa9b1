package server

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"reflect"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/pool"
)

// Reload reads the config file again and applies it: the new config is
// validated first and the old one keeps serving when it is wrong. Requests in
// flight finish on the view they started with; no connection is dropped.
// Listeners whose address changed are bound anew before anything is swapped,
// so a port in use fails the reload rather than half-applying it.
func (s *Server) Reload() (err error) {
	s.opts.Notify.Reloading()
	defer func() { s.opts.Notify.Reloaded(err) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Whatever becomes of the config, reopen the access log file: this is
	// the signal logrotate sends after renaming it.
	if err := s.access.Reopen(); err != nil {
		s.logger.Error("access log could not be reopened; writing to the old file", "error", err)
	}
	changes, err := s.reloadLocked()
	if err != nil {
		s.reloadsFail.Add(1)
		s.lastReloadOK.Store(false)
		s.events.Publish(events.ReloadFailed, "", "", fmt.Sprintf("the previous config keeps serving: %v", err))
		return err
	}
	s.reloadsOK.Add(1)
	s.lastReloadOK.Store(true)
	s.events.Publish(events.ReloadOK, "", "", changes.Summary())
	return nil
}

func (s *Server) reloadLocked() (config.Changes, error) {
	if s.cfg.Path == "" {
		return config.Changes{}, errNoFile
	}
	hash := fileHash(s.cfg.Path)
	cfg, err := config.Load(s.cfg.Path)
	if err != nil {
		return config.Changes{}, err
	}
	// The state file is read again too: an operator may have edited it.
	if err := s.state.Reload(); err != nil {
		return config.Changes{}, err
	}
	if cfg.Admin != s.cfg.Admin || cfg.AccessLog != s.cfg.AccessLog {
		s.logger.Warn("admin and access_log changes take effect at the next restart (a reload reopens the access log file, for log rotation)")
	}
	old := s.snap.Load()
	tp, err := s.tracingFor(cfg, old.tracing)
	if err != nil {
		return config.Changes{}, err
	}
	snap := s.buildSnapshot(cfg, old)
	snap.tracing = tp
	bound, err := s.bindListeners(cfg, snap, s.listeners)
	if err != nil {
		s.stopPools(snap.pools)
		if tp != old.tracing {
			s.flushTracing(tp)
		}
		s.retireStore(snap.limits, old.limits)
		return config.Changes{}, err
	}
	// From here the reload cannot fail: the loops still to be made take
	// the new event_loops; running ones keep theirs.
	if cfg.EventLoops != s.cfg.EventLoops && !s.wantLoops(cfg.EventLoops) {
		s.logger.Warn("event_loops changes take effect at the next restart or upgrade; the running loops keep serving",
			"event_loops", s.cfg.EventLoops, "new", cfg.EventLoops)
		cfg.EventLoops = s.cfg.EventLoops
	}
	// Swap: pools first, then each listener's view.
	s.plainHTTP.Store(hasPlainHTTP(cfg))
	s.snap.Store(snap)
	s.activate(snap, old)
	s.syncDiscovery(snap, cfg.ShutdownTimeout)
	keep := map[string]bool{}
	for _, lc := range cfg.Listeners {
		keep[lc.Name] = true
		l := s.listeners[lc.Name]
		if l == nil || l.cfg.Address != lc.Address {
			continue
		}
		if l.cfg.Protocol == "tcp" && lc.Protocol == "tcp" {
			s.reloadTCP(l, lc, snap)
			continue
		}
		if l.cfg.Protocol == lc.Protocol && l.cfg.Timeouts == lc.Timeouts && l.cfg.Limits == lc.Limits && l.cfg.Engine == lc.Engine &&
			l.cfg.H2C == lc.H2C && l.cfg.HTTP3 == lc.HTTP3 && l.cfg.ProxyProtocol == lc.ProxyProtocol && reflect.DeepEqual(l.cfg.TLS, lc.TLS) {
			l.cfg = lc // routes and the like: the view is enough
			if lc.TLS != nil {
				// Every certificate file is read again, changed or not.
				if err := l.tlsState.store.Reload(); err != nil {
					s.logger.Error("certificates could not be re-read; the previous ones keep serving", "listener", lc.Name, "error", err)
				}
			}
			l.view.Store(s.view(lc, snap, l))
			continue
		}
		// Timeouts, limits or protocols changed: a new server generation on
		// the same socket; the old one drains its connections.
		nl := l.next(lc)
		err := nl.prepareQUIC(s)
		if err == nil {
			err = nl.prepareTLS(s)
		}
		if err != nil {
			if nl.quic != nil && nl.quic != l.quic {
				nl.quic.Close() // bound for nl alone
			}
			l.quicLeaves = false
			s.logger.Error("listener keeps its previous settings", "listener", lc.Name, "error", err)
			continue
		}
		nl.view.Store(s.view(lc, snap, nl))
		nl.serve(s)
		s.watchCerts(nl)
		s.listeners[lc.Name] = nl
		s.drain(l, cfg.ShutdownTimeout, false)
	}
	for _, l := range bound {
		if prev := s.listeners[l.cfg.Name]; prev != nil {
			s.drain(prev, cfg.ShutdownTimeout, true) // its address changed
		}
		s.listeners[l.cfg.Name] = l
		l.serve(s)
		s.watchCerts(l)
		s.logger.Info("listening", "listener", l.cfg.Name, "address", l.sock.Addr().String())
	}
	for name, l := range s.listeners {
		if !keep[name] {
			delete(s.listeners, name)
			l.tlsState.stopWatch()
			s.drain(l, cfg.ShutdownTimeout, true)
		}
	}
	for _, w := range cfg.Warnings() {
		s.logger.Warn("config", "warning", w)
	}
	// WebSockets whose pool or backend is gone get shutdown_timeout to end.
	if n := s.tunnels.Retire(func(poolName string, b *pool.Backend) bool {
		p := snap.byName[poolName]
		return p != nil && p.pool.Find(b.Address) == b
	}, cfg.ShutdownTimeout, s.ctx.Done(), func(f func()) {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); f() }()
	}); n > 0 {
		s.logger.Info("tunnels on removed backends close after the grace period", "tunnels", n, "grace", cfg.ShutdownTimeout)
	}
	// Requests under way may still ask the old store: they count alone.
	s.retireStore(old.limits, snap.limits)
	// The old pools' backends live on in the new pools or, when removed,
	// until their requests in flight finish.
	for _, p := range old.pools {
		if np := snap.byName[p.cfg.Name]; np == nil || np.upstream != p.upstream {
			p.upstream.Close()
		}
	}
	if old.tracing != tp {
		// Requests that began on the old views end their spans there.
		s.retireTracing(old.tracing, cfg.ShutdownTimeout)
		if tp == nil {
			s.logger.Info("tracing off")
		}
	}
	if !reflect.DeepEqual(cfg.Log, s.cfg.Log) {
		s.logger.Warn("log changes take effect at the next restart")
	}
	changes := config.Compare(s.cfg, cfg)
	cfg.Admin, cfg.AccessLog = s.cfg.Admin, s.cfg.AccessLog
	s.cfg, s.cfgHash = cfg, hash
	return changes, nil
}

// drain shuts a listener generation down in the background: it stops
// accepting at once (closing the socket when the listener leaves) and its
// requests get up to timeout. Shutdown waits for it.
func (s *Server) drain(l *listener, timeout time.Duration, closeSocket bool) {
	if l.gen != nil {
		// At once: a connection accepted from now on is the next
		// generation's (or, when the socket closes, nobody's).
		l.gen.Close()
	}
	if l.h3gen != nil {
		l.h3gen.Close() // QUIC connections too
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		l.shutdown(ctx, closeSocket)
	}()
}

type reloadError string

func (e reloadError) Error() string { return string(e) }

const errNoFile = reloadError("no config file to reload: sluice was started without -config")

// slogLogger adapts net/http's error log to slog at debug level: those lines
// are about single misbehaving clients (TLS noise, bad requests).
func slogLogger(s *Server) *log.Logger {
	return slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug)
}
