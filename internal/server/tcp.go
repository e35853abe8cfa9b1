package server

import (
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/proxy/tcp"
)

// serveTCP starts the layer-4 server of a protocol tcp listener (package
// tcp) on a new generation of its socket.
func (l *listener) serveTCP(s *Server) {
	l.gen = l.sock.generation()
	srv := tcp.NewServer(tcp.Options{View: &l.view, Logger: s.logger, Rejects: l.rejects,
		ConnState: func(d int64) { l.active.Add(d) }, Handshake: l.handshake}, l.tcpSettings())
	l.srv, l.tcp = srv, srv
	go func() {
		defer close(l.done)
		if err := srv.Serve(l.gen); err != nil && !isClosed(err) {
			s.logger.Error("listener stopped", "listener", l.cfg.Name, "error", err)
		}
	}()
}

// tcpSettings are the settings of l's layer-4 server that a reload may
// change in place.
func (l *listener) tcpSettings() tcp.Settings {
	sni := false
	for _, r := range l.cfg.Routes {
		sni = sni || r.SNI != ""
	}
	return tcp.Settings{TLS: l.tls, ProxyProtocol: l.cfg.ProxyProtocol, SNI: sni && l.cfg.TLS == nil,
		ReadHeader: l.cfg.Timeouts.ReadHeader, Idle: l.cfg.Timeouts.Idle, MaxConnections: l.cfg.Limits.MaxConnections}
}

// reloadTCP applies a reload to a tcp listener that stays tcp on the same
// address: certificates, settings and routes change for the connections
// accepted from now on, and the open ones go on untouched (a layer-4
// connection may last for hours; a reload must not cut it). It reports
// false, with the listener unchanged, when the new TLS settings cannot be
// used.
func (s *Server) reloadTCP(l *listener, lc config.Listener, snap *snapshot) bool {
	old, oldTLS, oldState := l.cfg, l.tls, l.tlsState
	l.cfg = lc
	if lc.TLS == nil {
		l.tls = nil
	} else if err := l.prepareTLS(s); err != nil {
		s.logger.Error("listener keeps its previous settings", "listener", lc.Name, "error", err)
		l.cfg, l.tls, l.tlsState = old, oldTLS, oldState
		return false
	}
	if lc.TLS == nil && l.tlsState != nil {
		l.tlsState.stopWatch()
		l.tlsState = nil
	}
	s.watchCerts(l)
	l.view.Store(s.view(lc, snap, l))
	l.tcp.Update(l.tcpSettings())
	return true
}
