package acme

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/events"
	"github.com/sluice-lb/sluice/internal/testenv"
)

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(90 * 24 * time.Hour)
	tests := []struct {
		jitter float64
		want   time.Time
	}{
		{0, na.Add(-30 * 24 * time.Hour)},
		{0.5, na.Add(-30*24*time.Hour - 45*time.Hour)},
		{0.999999, na.Add(-30*24*time.Hour - 90*time.Hour + 27*time.Second)},
	}
	for _, tt := range tests {
		if got := RenewAt(nb, na, tt.jitter); got.Sub(tt.want).Abs() > time.Minute {
			t.Errorf("RenewAt(90 days, jitter %v) = %v, want %v", tt.jitter, got, tt.want)
		}
	}
}

func TestChallengeTypes(t *testing.T) {
	for _, tt := range []struct {
		http01  bool
		attempt int
		want    []string
	}{
		{false, 0, []string{tlsALPN01}},
		{false, 1, []string{tlsALPN01}},
		{true, 0, []string{http01, tlsALPN01}},
		{true, 1, []string{tlsALPN01, http01}},
		{true, 2, []string{http01, tlsALPN01}},
	} {
		m := &Manager{o: Options{HTTP01: func() bool { return tt.http01 }}}
		if diff := cmp.Diff(tt.want, m.challengeTypes(tt.attempt)); diff != "" {
			t.Errorf("challengeTypes(http01 %v, attempt %d) (-want +got):\n%s", tt.http01, tt.attempt, diff)
		}
	}
}

func TestChallenges(t *testing.T) {
	c := NewChallenges()
	done := c.setHTTP("tok", "tok.thumb")
	if ka, ok := c.KeyAuthorization("tok"); !ok || ka != "tok.thumb" {
		t.Errorf("KeyAuthorization(tok) = %q, %v", ka, ok)
	}
	done()
	if _, ok := c.KeyAuthorization("tok"); ok {
		t.Errorf("the token outlived its challenge")
	}
	cert := &tls.Certificate{}
	done = c.setALPN("A.Example.com", cert)
	if got, ok := c.TLSALPN("a.example.COM"); !ok || got != cert {
		t.Errorf("TLSALPN: %v, %v", got, ok)
	}
	done()
	if _, ok := c.TLSALPN("a.example.com"); ok {
		t.Errorf("the certificate outlived its challenge")
	}
}

// stored saves, as st's certificate for the first of names, one issued
// for names by a CA made for the test, valid from nb to na, and returns it.
func stored(t *testing.T, st storage, nb, na time.Time, names ...string) *x509.Certificate {
	t.Helper()
	is := testenv.NewCA(t, "Test CA").Issue(t, testenv.Leaf{Names: names, NotBefore: nb, NotAfter: na})
	if err := st.save(names[0], [][]byte{is.Cert.Raw}, is.Pair.PrivateKey.(crypto.Signer)); err != nil {
		t.Fatal(err)
	}
	return is.Cert
}

// TestStoredCertificateKeepsServingWhenRenewalFails: a stored certificate
// is published at New; when its renewal is due and the CA cannot be
// reached, the failure is an event and a count, and the certificate stays.
func TestStoredCertificateKeepsServingWhenRenewalFails(t *testing.T) {
	dir := t.TempDir()
	cfg := config.ACME{Domains: []string{"a.example.com"}, Directory: "https://127.0.0.1:1/dir", Storage: filepath.Join(dir, "acme")}
	st, err := newStorage(cfg.Storage, cfg.Directory)
	if err != nil {
		t.Fatal(err)
	}
	// Valid, but past its renewal time: a week of a 90-day life is left.
	leaf := stored(t, st, time.Now().Add(-83*24*time.Hour), time.Now().Add(7*24*time.Hour), "a.example.com")
	for _, p := range []string{cfg.Storage, st.dir} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, want a 0700 directory", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(st.dir, "a.example.com.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, want mode 0600", err)
	}
	var mu sync.Mutex
	var published []*tls.Certificate
	evs := events.New(0, nil)
	m, err := New(Options{Listener: "public", Config: cfg, Challenges: NewChallenges(), Events: evs,
		Publish: func(c *tls.Certificate) { mu.Lock(); published = append(published, c); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(published) != 1 || !published[0].Leaf.Equal(leaf) {
		t.Fatalf("New published %d certificates, want the stored one", len(published))
	}
	mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for m.Failures() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if m.Failures() != 1 || m.Obtained() != 0 {
		t.Errorf("Failures() = %d, Obtained() = %d; want 1, 0", m.Failures(), m.Obtained())
	}
	if len(published) != 1 {
		t.Errorf("%d certificates published, want the stored one only", len(published))
	}
	got, _ := evs.Since(0)
	if len(got) != 1 || got[0].Kind != events.CertError ||
		!strings.Contains(got[0].Reason, `listener "public": obtaining a certificate for a.example.com from https://127.0.0.1:1/dir failed`) ||
		!strings.Contains(got[0].Reason, "the current certificate keeps serving until") {
		t.Errorf("events: %+v, want one certificate_error saying the current certificate keeps serving", got)
	}
}

// TestStoredCertificateForOtherDomains: a stored certificate that does not
// cover every domain is not served; the Manager orders a new one.
func TestStoredCertificateForOtherDomains(t *testing.T) {
	dir := t.TempDir()
	cfg := config.ACME{Domains: []string{"a.example.com", "b.example.com"}, Directory: "https://127.0.0.1:1/dir", Storage: dir}
	st, _ := newStorage(cfg.Storage, cfg.Directory)
	stored(t, st, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour), "a.example.com")
	n := 0
	if _, err := New(Options{Config: cfg, Challenges: NewChallenges(), Publish: func(*tls.Certificate) { n++ }}); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("a certificate for a.example.com alone was published for a.example.com and b.example.com")
	}
}
