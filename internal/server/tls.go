package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/tlsterm"
)

// certWatchInterval is how often a TLS listener's certificate files are
// checked for changes (renewals written in place by certbot and the like).
const certWatchInterval = 2 * time.Second

// listenerTLS is what a TLS listener keeps across generations and reloads:
// its certificates, and the watch on their files.
type listenerTLS struct {
	store  *tlsterm.Store
	cancel context.CancelFunc // stops the watch (nil until it runs)
	done   chan struct{}      // closed when the watch has returned
}

// newListenerTLS loads the certificates of lc.
func newListenerTLS(lc config.Listener) (*listenerTLS, error) {
	st, err := tlsterm.NewStore(*lc.TLS)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	return &listenerTLS{store: st}, nil
}

// config builds the tls.Config of one generation of lc. Certificates come
// from the store at each handshake, so a reload or a change of the files
// reaches new handshakes without a new generation.
func (lt *listenerTLS) config(lc config.Listener) (*tls.Config, error) {
	c, err := tlsterm.Config(lt.store, *lc.TLS, true)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	return c, nil
}

// watch starts the watch on the certificate files of l, owned by s.
func (s *Server) watchCerts(l *listener) {
	lt := l.tlsState
	if lt == nil || lt.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	lt.cancel, lt.done = cancel, make(chan struct{})
	name := l.cfg.Name
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(lt.done)
		lt.store.Watch(ctx, certWatchInterval, func(err error) {
			if err != nil {
				s.logger.Error("certificate files changed but cannot be used; the previous certificates keep serving",
					"listener", name, "error", err)
				return
			}
			s.logger.Info("certificates reloaded after their files changed", "listener", name)
			s.certWarnings(name, lt)
		})
	}()
}

// stopWatch ends the watch of a listener that leaves.
func (lt *listenerTLS) stopWatch() {
	if lt != nil && lt.cancel != nil {
		lt.cancel()
		<-lt.done
	}
}

// certWarnings logs certificates of a listener that expired or are about to.
func (s *Server) certWarnings(name string, lt *listenerTLS) {
	for _, w := range lt.store.ExpiryWarnings(time.Now()) {
		s.logger.Warn("certificate", "listener", name, "warning", w)
	}
}

// covers reports whether the certificate a connection was served with
// covers host (for 421 on HTTP/2, where a client may send requests for
// other authorities on a connection it reuses).
func (lt *listenerTLS) covers(cs *tls.ConnectionState, host string) bool {
	cert, err := lt.store.GetCertificate(&tls.ClientHelloInfo{ServerName: cs.ServerName})
	if err != nil || cert == nil || cert.Leaf == nil {
		return true // nothing to judge by: let the request through
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return cert.Leaf.VerifyHostname(host) == nil
}
