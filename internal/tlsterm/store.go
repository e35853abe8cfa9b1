// Package tlsterm terminates TLS for listeners: the certificates of a
// listener, chosen by SNI and re-read when their files change; the
// server's tls.Config; the verified client certificate as the access log
// and X-Forwarded-Client-Cert show it; and handshake counters.
//
// The handshake path takes no lock: GetCertificate does one atomic load of
// an immutable index, which a reload replaces whole. A connection keeps
// the certificate it was handed, so a reload never disturbs connections
// already open.
package tlsterm

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// Store holds the certificates of one listener, and the CA certificates
// its clients' certificates must chain to (client_ca), read, re-read and
// watched with them. Make one with NewStore
// (the zero Store holds none and must not be used); its methods are safe
// for concurrent use.
type Store struct {
	// mu serialises loads and swaps of set, so a Watch poll cannot put
	// back files that Reload or Update replaced. Handshakes never take it.
	mu  sync.Mutex
	set atomic.Pointer[certSet]
	// managed are the certificates obtained by ACME (SetManaged), indexed
	// after the files'; guarded by mu.
	managed []*tls.Certificate
	// acme: the tls block has acme, so no files is no error; guarded by
	// mu.
	acme bool
	// challenges answers TLS-ALPN-01 (nil: none); set by SetChallenges.
	challenges atomic.Pointer[func(name string) (*tls.Certificate, bool)]
}

// certSet is one loaded generation of a Store's certificates. It is never
// changed once published.
type certSet struct {
	files     []config.Certificate
	clientCA  config.TLS                    // its ClientCA: the file of clientCAs ("": none)
	clientCAs *x509.CertPool                // nil: no client_ca
	sum       [sha256.Size]byte             // of the files' contents (client_ca's too), for Watch
	fromFiles []*tls.Certificate            // in file order
	certs     []*tls.Certificate            // fromFiles, then the managed ones; certs[0] is the default
	exact     map[string][]*tls.Certificate // lower-case name → certificates, in file order
	wild      map[string][]*tls.Certificate // "example.com" → certificates for "*.example.com"
	expiry    []CertExpiry
}

// CertExpiry is when one certificate name stops being valid, for the
// metric sluice_certificate_expiry_seconds{listener,name}.
type CertExpiry struct {
	// Name is the certificate's first DNS name (else its common name).
	Name string
	// NotAfter is the end of the certificate's validity.
	NotAfter time.Time
}

// NewStore loads the certificates of cfg, which Validate accepted. It
// fails when a file cannot be read or parsed, or a key does not go with
// its certificate; an expired certificate is loaded (see ExpiryWarnings).
// With cfg.ACME it may hold no file: the certificates ACME obtains come
// through SetManaged.
func NewStore(cfg config.TLS) (*Store, error) {
	s := &Store{}
	if err := s.Update(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Update replaces the Store's certificates with those of cfg, read now.
// On error the Store keeps serving the certificates it had. The server
// calls it when a reload keeps a listener but changes its certificates.
func (s *Store) Update(cfg config.TLS) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acme = cfg.ACME != nil
	return s.load(slices.Clone(cfg.Certificates), config.TLS{ClientCA: cfg.ClientCA})
}

// Reload re-reads every certificate and key file, and client_ca, whether
// or not they changed. On error the Store keeps serving the certificates it had.
// Handshakes that start after Reload returns see the new certificates.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.set.Load()
	return s.load(cur.files, cur.clientCA)
}

// load reads and parses files and ca's client_ca and publishes them; s.mu
// is held.
func (s *Store) load(files []config.Certificate, ca config.TLS) error {
	if len(files) == 0 && !s.acme {
		return errors.New("tls has no certificates")
	}
	contents, caPEM, sum, err := read(files, ca)
	if err != nil {
		return err
	}
	set, err := build(files, ca, contents, caPEM, sum, s.managed)
	if err != nil {
		return err
	}
	s.set.Store(set)
	return nil
}

// Watch polls the Store's files (client_ca's too) every interval and
// reloads them when their content changes (a renewal, a Kubernetes secret's symlink swap).
// After each reload it triggers it calls changed, when not nil, with the
// result: nil, or the error that kept the old certificates. Files left
// broken are reported once, not at every poll. Watch returns when ctx is
// done; the caller runs it in a goroutine it waits for.
func (s *Store) Watch(ctx context.Context, interval time.Duration, changed func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var failed [sha256.Size]byte // the contents of the last failed reload
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err, tried := s.reloadChanged(&failed); tried && changed != nil {
			changed(err)
		}
	}
}

// reloadChanged reloads the files if their contents differ from both the
// current set and the last failed attempt, and reports whether it tried.
func (s *Store) reloadChanged(failed *[sha256.Size]byte) (err error, tried bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.set.Load()
	contents, caPEM, sum, readErr := read(cur.files, cur.clientCA)
	if sum == cur.sum || sum == *failed {
		return nil, false
	}
	var set *certSet
	if err = readErr; err == nil {
		set, err = build(cur.files, cur.clientCA, contents, caPEM, sum, s.managed)
	}
	if err != nil {
		*failed = sum
		return err, true
	}
	s.set.Store(set)
	return nil, true
}

// read reads each pair's files and ca's client_ca, and sums their
// contents. A file that cannot be read is summed as its error, so a
// broken state has a sum of its own; the first error is returned.
func read(files []config.Certificate, ca config.TLS) (contents [][2][]byte, caPEM []byte, sum [sha256.Size]byte, err error) {
	h := sha256.New()
	add := func(b []byte) {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	contents = make([][2][]byte, len(files))
	for i, f := range files {
		certPEM, keyPEM, rerr := f.ReadFiles()
		if rerr != nil {
			err = cmp.Or(err, rerr)
			certPEM, keyPEM = []byte(rerr.Error()), nil
		}
		contents[i] = [2][]byte{certPEM, keyPEM}
		add(certPEM)
		add(keyPEM)
	}
	caPEM, rerr := ca.ReadClientCA()
	if rerr != nil {
		err = cmp.Or(err, rerr)
		caPEM = []byte(rerr.Error())
	}
	add(caPEM)
	h.Sum(sum[:0])
	return contents, caPEM, sum, err
}

// build parses the files' contents and ca's, and indexes the
// certificates, then the managed ones.
func build(files []config.Certificate, ca config.TLS, contents [][2][]byte, caPEM []byte, sum [sha256.Size]byte, managed []*tls.Certificate) (*certSet, error) {
	set := &certSet{files: files, clientCA: ca, sum: sum}
	for i, f := range files {
		pair, err := f.KeyPair(contents[i][0], contents[i][1])
		if err != nil {
			return nil, err
		}
		set.fromFiles = append(set.fromFiles, &pair)
	}
	if ca.ClientCA != "" {
		pool, err := ca.ParseClientCA(caPEM)
		if err != nil {
			return nil, err
		}
		set.clientCAs = pool
	}
	return set.index(managed), nil
}

// index returns a copy of set, holding set's certificates from files and
// managed, indexed by name.
func (set *certSet) index(managed []*tls.Certificate) *certSet {
	n := &certSet{files: set.files, clientCA: set.clientCA, clientCAs: set.clientCAs, sum: set.sum, fromFiles: set.fromFiles,
		certs: append(slices.Clip(set.fromFiles), managed...),
		exact: map[string][]*tls.Certificate{}, wild: map[string][]*tls.Certificate{}}
	seen := map[string]int{} // expiry name → its index in n.expiry
	for _, c := range n.certs {
		for _, name := range names(c) {
			if parent, ok := strings.CutPrefix(name, "*."); ok {
				n.wild[parent] = append(n.wild[parent], c)
			} else {
				n.exact[name] = append(n.exact[name], c)
			}
		}
		name := config.CertName(c.Leaf)
		if j, dup := seen[name]; !dup {
			seen[name] = len(n.expiry)
			n.expiry = append(n.expiry, CertExpiry{Name: name, NotAfter: c.Leaf.NotAfter})
		} else if c.Leaf.NotAfter.Before(n.expiry[j].NotAfter) {
			n.expiry[j].NotAfter = c.Leaf.NotAfter
		}
	}
	return n
}

// SetManaged replaces the certificates that ACME manages (each with its
// Leaf set). They are chosen by SNI as the files' are, after them: a file
// naming the same host exactly wins, and the first file stays the
// default; without files the first managed certificate is the default.
func (s *Store) SetManaged(certs []*tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.managed = slices.Clone(certs)
	s.set.Store(s.set.Load().index(s.managed))
}

// SetChallenges makes the Store answer TLS-ALPN-01 challenges (RFC 8737):
// a handshake that offers only the ALPN protocol "acme-tls/1" gets the
// certificate f returns for its server name, or fails.
func (s *Store) SetChallenges(f func(name string) (*tls.Certificate, bool)) {
	s.challenges.Store(&f)
}

// ALPNChallenge is the ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
const ALPNChallenge = "acme-tls/1"

// names returns the lower-case names a certificate answers for: its DNS
// names, or its common name when it has none (as browsers did before
// SANs were required).
func names(c *tls.Certificate) []string {
	ns := c.Leaf.DNSNames
	if len(ns) == 0 && c.Leaf.Subject.CommonName != "" {
		ns = []string{c.Leaf.Subject.CommonName}
	}
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	return out
}

// GetCertificate chooses the certificate for a handshake by its server
// name (SNI), case-insensitively: a certificate naming it exactly, else
// one for the wildcard "*.parent" that covers exactly its first label,
// else the Store's first certificate. Among several certificates for one
// name (an ECDSA and an RSA one) it takes the first the client supports.
// It is tls.Config.GetCertificate and never returns an error.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPNChallenge {
		if f := s.challenges.Load(); f != nil {
			if c, ok := (*f)(strings.ToLower(hello.ServerName)); ok {
				return c, nil
			}
		}
		return nil, fmt.Errorf("no TLS-ALPN-01 challenge under way for %q", hello.ServerName)
	}
	if c := s.set.Load().pick(hello); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no certificate for %q yet: ACME has not obtained one (see the log)", hello.ServerName)
}

func (set *certSet) pick(hello *tls.ClientHelloInfo) *tls.Certificate {
	if len(set.certs) == 0 {
		return nil
	}
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if cs, ok := set.exact[name]; ok && name != "" {
		return supported(hello, cs)
	}
	if label, parent, ok := strings.Cut(name, "."); ok && label != "" {
		if cs, ok := set.wild[parent]; ok {
			return supported(hello, cs)
		}
	}
	return set.certs[0]
}

// supported returns the first of cs the client can use, else the first.
func supported(hello *tls.ClientHelloInfo, cs []*tls.Certificate) *tls.Certificate {
	if len(cs) > 1 {
		for _, c := range cs {
			if hello.SupportsCertificate(c) == nil {
				return c
			}
		}
	}
	return cs[0]
}

// ClientCAs returns the pool of client_ca as last read (nil: none).
func (s *Store) ClientCAs() *x509.CertPool { return s.set.Load().clientCAs }

// Expiry returns, for each certificate name in file order, when it
// expires; a name served by several certificates gets the earliest.
func (s *Store) Expiry() []CertExpiry {
	return slices.Clone(s.set.Load().expiry)
}

// ExpiryWarnings returns a line for each certificate that, at now, has
// expired, expires within config.CertExpiryWarning (7 days), or is not
// valid yet. The server logs them after each reload and once a day;
// config.Config.Warnings says the same at start-up, with the file's line.
func (s *Store) ExpiryWarnings(now time.Time) []string {
	set := s.set.Load()
	var ws []string
	for i, c := range set.fromFiles {
		if w := config.CertWarning(set.files[i].Cert, c.Leaf, now); w != "" {
			ws = append(ws, w)
		}
	}
	return ws
}
