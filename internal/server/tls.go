package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"reflect"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/acme"
	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/tlsterm"
)

// certWatchInterval is how often a TLS listener's certificate files are
// checked for changes (renewals written in place by certbot and the like).
const certWatchInterval = 2 * time.Second

// listenerTLS is what a TLS listener keeps across generations and reloads:
// its certificates, the watch on their files and, with tls.acme, the
// Manager that obtains and renews its automatic certificate.
type listenerTLS struct {
	store  *tlsterm.Store
	cancel context.CancelFunc // stops the watch and the Manager (nil until they run)
	done   chan struct{}      // closed when both have returned

	acme    *acme.Manager // nil: no tls.acme
	acmeCfg config.ACME   // what acme was made for
}

// newListenerTLS loads the certificates of lc and, with tls.acme, makes
// its Manager (which loads the stored certificate at once).
func (s *Server) newListenerTLS(lc config.Listener) (*listenerTLS, error) {
	st, err := tlsterm.NewStore(*lc.TLS)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	lt := &listenerTLS{store: st}
	if err := lt.setACME(s, lc); err != nil {
		return nil, err
	}
	return lt, nil
}

// setACME makes the Manager of lc's tls.acme, when lt has none for it.
func (lt *listenerTLS) setACME(s *Server, lc config.Listener) error {
	a := lc.TLS.ACME
	if a == nil || lt.acme != nil && reflect.DeepEqual(*a, lt.acmeCfg) {
		return nil
	}
	store := lt.store
	m, err := acme.New(acme.Options{Listener: lc.Name, Config: *a, Challenges: s.challenges,
		HTTP01: s.plainHTTP.Load, Logger: s.logger, Events: s.events,
		Publish: func(c *tls.Certificate) { store.SetManaged([]*tls.Certificate{c}) }})
	if err != nil {
		return fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	store.SetChallenges(s.challenges.TLSALPN)
	lt.acme, lt.acmeCfg = m, *a
	return nil
}

// update applies a reload's tls block to a listener that keeps its
// certificates: the files are read again, and a changed tls.acme block
// gets a Manager of its own (the old one stops, its certificate goes).
func (lt *listenerTLS) update(s *Server, lc config.Listener) error {
	if err := lt.store.Update(*lc.TLS); err != nil {
		return err
	}
	if a := lc.TLS.ACME; lt.acme != nil && (a == nil || !reflect.DeepEqual(*a, lt.acmeCfg)) {
		lt.stopWatch() // watchCerts starts what is left again
		lt.acme = nil
		lt.store.SetManaged(nil)
	}
	return lt.setACME(s, lc)
}

// config builds the tls.Config of one generation of lc. Certificates come
// from the store at each handshake, so a reload or a change of the files
// reaches new handshakes without a new generation.
func (lt *listenerTLS) config(lc config.Listener) (*tls.Config, error) {
	c, err := tlsterm.Config(lt.store, *lc.TLS, lc.Protocol != "tcp")
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	if lc.Protocol == "tcp" {
		// A relayed byte stream has no application protocol to name: a
		// client offering ALPN gets none (refusing it would fail
		// handshakes that name the backend's protocol), except a CA
		// validating TLS-ALPN-01, which offers acme-tls/1 alone (the
		// config's GetConfigForClient answers it).
		c.NextProtos = nil
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
	var wg sync.WaitGroup
	if m := lt.acme; m != nil {
		wg.Go(func() { m.Run(ctx) })
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(lt.done)
		defer wg.Wait()
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

// stopWatch ends the watch and the Manager of a listener that leaves, or
// whose tls.acme changed.
func (lt *listenerTLS) stopWatch() {
	if lt != nil && lt.cancel != nil {
		lt.cancel()
		<-lt.done
		lt.cancel = nil
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
