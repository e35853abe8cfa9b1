// Package acme obtains and renews a TLS listener's certificates from an
// ACME CA (RFC 8555), with golang.org/x/crypto/acme for the protocol: one
// Manager per tls.acme block orders one certificate for its domains,
// proves control of them with HTTP-01 (answered by every plain-HTTP
// listener of the same sluice) or TLS-ALPN-01 (answered by the TLS
// listener itself), keeps it under tls.acme.storage so that a restart
// reuses it, and renews it when a third of its lifetime is left, less a
// random jitter so that a fleet does not renew all at once. A failure is
// logged, published as an event and counted, the certificate in hand keeps
// serving, and the Manager tries again after a growing back-off.
//
// Why not certmagic, Caddy's library: it keeps package-level state (the
// challenges under way, a default cache and config) and background
// goroutines a caller cannot wait for, logs through zap, and answers
// HTTP-01 with an http.Handler, while sluice's HTTP/1.1 engine is not
// net/http. What sluice needs beyond the protocol is small: a schedule, a
// directory of files and two maps of challenge answers.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
)

// Options configure a Manager.
type Options struct {
	// Listener names the listener in logs, events and metrics.
	Listener string
	// Config is the listener's tls.acme block, validated.
	Config config.ACME
	// Challenges is where the Manager puts its challenge answers; every
	// Manager of a sluice shares one.
	Challenges *Challenges
	// HTTP01 reports whether a plain-HTTP listener answers HTTP-01 (read
	// at each order, so a reload that adds or removes one counts). Nil:
	// none; TLS-ALPN-01 is always possible.
	HTTP01 func() bool
	// Publish is given the certificate to serve, at New when one is
	// stored and after each one obtained. Required.
	Publish func(*tls.Certificate)
	// Logger receives what the Manager does; nil means slog.Default().
	Logger *slog.Logger
	// Events receives certificate_obtained and certificate_error; nil
	// publishes nothing.
	Events *events.Log
}

// Manager keeps one certificate for a tls.acme block. Create it with New,
// then Run it.
type Manager struct {
	o       Options
	store   storage
	name    string           // the first domain: the certificate's name
	domains []string         // lower-case
	http    *http.Client     // to the CA, trusting ca_root
	current *tls.Certificate // the one serving (nil: none yet); Run's
	renewAt time.Time        // when to renew current; Run's

	obtained, failures atomic.Uint64
}

// New prepares a Manager and publishes the certificate stored for its
// domains, if there is one that covers them all, so that a restart serves
// at once without contacting the CA.
func New(o Options) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTP01 == nil {
		o.HTTP01 = func() bool { return false }
	}
	roots, err := o.Config.Roots()
	if err != nil {
		return nil, err
	}
	st, err := newStorage(o.Config.Storage, o.Config.Directory)
	if err != nil {
		return nil, err
	}
	m := &Manager{o: o, store: st}
	for _, d := range o.Config.Domains {
		m.domains = append(m.domains, strings.ToLower(strings.TrimSuffix(d, ".")))
	}
	m.name = m.domains[0]
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	m.http = &http.Client{Transport: tr, Timeout: time.Minute}
	cert, err := st.load(m.name)
	switch {
	case err != nil:
		o.Logger.Warn("acme: the stored certificate cannot be used; a new one will be ordered", "listener", o.Listener, "error", err)
	case cert != nil && m.covers(cert.Leaf):
		m.use(cert)
		o.Logger.Info("acme: certificate loaded from storage", "listener", o.Listener, "name", m.name,
			"not_after", cert.Leaf.NotAfter, "renew_at", m.renewAt)
	case cert != nil:
		o.Logger.Info("acme: the stored certificate does not cover every domain; a new one will be ordered",
			"listener", o.Listener, "name", m.name, "has", cert.Leaf.DNSNames, "want", m.domains)
	}
	return m, nil
}

// covers reports whether leaf names every domain of m.
func (m *Manager) covers(leaf *x509.Certificate) bool {
	for _, d := range m.domains {
		if leaf.VerifyHostname(d) != nil {
			return false
		}
	}
	return true
}

// use makes cert the one serving and schedules its renewal.
func (m *Manager) use(cert *tls.Certificate) {
	m.current = cert
	m.renewAt = RenewAt(cert.Leaf.NotBefore, cert.Leaf.NotAfter, rand.Float64())
	m.o.Publish(cert)
}

// RenewAt is when a certificate valid from notBefore to notAfter is
// renewed: when a third of its lifetime is left (30 days of Let's
// Encrypt's 90), earlier by up to a twenty-fourth of it (3.75 days)
// chosen by jitter in [0, 1).
func RenewAt(notBefore, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	return notAfter.Add(-life/3 - time.Duration(jitter*float64(life/24)))
}

// Obtained returns how many certificates the Manager obtained.
func (m *Manager) Obtained() uint64 { return m.obtained.Load() }

// Failures returns how many attempts to obtain one failed.
func (m *Manager) Failures() uint64 { return m.failures.Load() }

// Back-off after a failed attempt: from backoffMin, doubling, to
// backoffMax (Let's Encrypt allows 5 failed validations per hour).
const (
	backoffMin = time.Minute
	backoffMax = time.Hour
	// orderTimeout bounds one attempt, from the order to the certificate.
	orderTimeout = 5 * time.Minute
)

// Run obtains a certificate when none serves or the one serving is due
// for renewal, then sleeps until the next renewal, until ctx is done.
func (m *Manager) Run(ctx context.Context) {
	backoff := time.Duration(0)
	for attempt := 0; ; {
		wait := time.Duration(0)
		switch {
		case backoff > 0:
			wait = backoff
		case m.current != nil:
			wait = time.Until(m.renewAt)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		octx, cancel := context.WithTimeout(ctx, orderTimeout)
		cert, err := m.obtain(octx, attempt)
		cancel()
		attempt++
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.failures.Add(1)
			backoff = min(max(2*backoff, backoffMin), backoffMax)
			backoff += time.Duration(rand.Int64N(int64(backoff / 10))) // ±: fleets spread out
			m.failed(err, backoff)
			continue
		}
		backoff = 0
		m.obtained.Add(1)
		m.use(cert)
		m.report(events.CertObtained, slog.LevelInfo, fmt.Sprintf("listener %q: certificate for %s obtained from %s, valid until %s; renewal at %s",
			m.o.Listener, strings.Join(m.domains, ", "), m.o.Config.Directory,
			cert.Leaf.NotAfter.UTC().Format(time.RFC3339), m.renewAt.UTC().Format(time.RFC3339)))
	}
}

// failed reports a failed attempt: in the log (the events log writes it)
// and as an event.
func (m *Manager) failed(err error, retry time.Duration) {
	serving := "no certificate serves these names yet"
	if c := m.current; c != nil {
		serving = "the current certificate keeps serving until " + c.Leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	reason := fmt.Sprintf("listener %q: obtaining a certificate for %s from %s failed: %v; %s; next try in %s",
		m.o.Listener, strings.Join(m.domains, ", "), m.o.Config.Directory, err, serving, retry.Round(time.Second))
	m.report(events.CertError, slog.LevelError, reason)
}

// report publishes an event, which writes the log line; without an
// events log it writes the line itself.
func (m *Manager) report(kind events.Kind, level slog.Level, reason string) {
	if m.o.Events == nil {
		m.o.Logger.Log(context.Background(), level, "acme: "+reason, "kind", string(kind))
		return
	}
	m.o.Events.Publish(kind, "", "", reason)
}
