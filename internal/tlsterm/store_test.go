package tlsterm

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// sniStore is a Store of five certificates: the default, an exact name
// (RSA), a wildcard beside an exact name under it, one named only by its
// common name, and an ECDSA and an RSA certificate for one name.
func sniStore(t testing.TB) (*Store, config.TLS) {
	t.Helper()
	dir := t.TempDir()
	a := testenv.NewCA(t, "Test CA")
	pair := func(base string, l testenv.Leaf) config.Certificate {
		return writePair(t, dir, base, a.Issue(t, l))
	}
	cfg := config.TLS{Certificates: []config.Certificate{
		pair("default", testenv.Leaf{Subject: pkix.Name{CommonName: "default"}, Names: []string{"default.test", "www.default.test"}}),
		pair("exact", testenv.Leaf{Subject: pkix.Name{CommonName: "exact"}, Names: []string{"Exact.Example.com"}, RSA: true}),
		pair("wild", testenv.Leaf{Subject: pkix.Name{CommonName: "wild"}, Names: []string{"*.example.com"}}),
		pair("cn", testenv.Leaf{Subject: pkix.Name{CommonName: "cn.example.org"}}),
		pair("dual-ec", testenv.Leaf{Subject: pkix.Name{CommonName: "dual-ec"}, Names: []string{"dual.example.net"}}),
		pair("dual-rsa", testenv.Leaf{Subject: pkix.Name{CommonName: "dual-rsa"}, Names: []string{"dual.example.net"}, RSA: true}),
	}}
	s, err := NewStore(cfg)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s, cfg
}

var sniTests = []struct {
	name, sni, want string // want: the chosen certificate's CN
}{
	{"exact, any case, trailing dot", "EXACT.example.COM.", "exact"},
	{"exact beats the wildcard", "exact.example.com", "exact"},
	{"wildcard", "shop.example.com", "wild"},
	{"wildcard, any case", "Shop.EXAMPLE.com", "wild"},
	{"wildcard covers one label only", "a.shop.example.com", "default"},
	{"wildcard does not cover its parent", "example.com", "default"},
	{"empty first label", ".example.com", "default"},
	{"common name without SANs", "cn.example.org", "cn.example.org"},
	{"second name of the default", "www.default.test", "default"},
	{"unknown name", "unknown.test", "default"},
	{"no SNI", "", "default"},
	{"first of two for a name", "dual.example.net", "dual-ec"},
}

func TestGetCertificate(t *testing.T) {
	s, _ := sniStore(t)
	for _, tt := range sniTests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
			if err != nil {
				t.Fatalf("GetCertificate(%q): %v", tt.sni, err)
			}
			if got := c.Leaf.Subject.CommonName; got != tt.want {
				t.Errorf("GetCertificate(%q) = %q, want %q", tt.sni, got, tt.want)
			}
		})
	}
}

// TestSNIHandshake runs the same choices through real handshakes, and
// checks a client that can only use RSA gets the RSA certificate of a
// name that has both.
func TestSNIHandshake(t *testing.T) {
	s, cfg := sniStore(t)
	conf, err := Config(s, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, conf)
	tests := append(slices.Clone(sniTests), struct{ name, sni, want string }{"RSA-only client", "dual.example.net", "dual-rsa"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true}
			if tt.name == "RSA-only client" {
				cc.MaxVersion = tls.VersionTLS12
				cc.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
			}
			c, err := dial(t, srv, cc)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != tt.want {
				t.Errorf("SNI %q got certificate %q, want %q", tt.sni, got, tt.want)
			}
			if r := srv.result(t); r.err != nil {
				t.Errorf("server handshake: %v", r.err)
			}
		})
	}
	if got, want := srv.counters.OK(), uint64(len(tests)); got != want {
		t.Errorf("Counters.OK() = %d, want %d", got, want)
	}
}

// TestReload checks a reload swaps the certificates for new handshakes
// while connections opened before keep theirs and keep working, and a
// failed reload keeps the old set.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	a := testenv.NewCA(t, "Test CA")
	issue := func() *testenv.Issued {
		return a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "site"}, Names: []string{"site.test"}})
	}
	isA := issue()
	serialA := serialOf(isA)
	cfg := config.TLS{Certificates: []config.Certificate{writePair(t, dir, "site", isA)}}
	s, err := NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := Config(s, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, conf)
	client := &tls.Config{ServerName: "site.test", RootCAs: a.Pool}

	old, err := dial(t, srv, client)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(old); got != serialA {
		t.Fatalf("first connection got serial %s, want %s", got, serialA)
	}

	isB := issue()
	serialB := serialOf(isB)
	writePair(t, dir, "site", isB)
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	fresh, err := dial(t, srv, client)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(fresh); got != serialB {
		t.Errorf("connection after the reload got serial %s, want %s", got, serialB)
	}
	if err := echo(t, old, "still here"); err != nil {
		t.Errorf("connection opened before the reload: %v", err)
	}
	if got := servedSerial(old); got != serialA {
		t.Errorf("connection opened before the reload now has serial %s, want %s", got, serialA)
	}

	// A key that does not go with its certificate: the old set stays.
	testenv.WriteFileAtomic(t, cfg.Certificates[0].Cert, issue().CertPEM)
	err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), "does not go with") {
		t.Errorf("Reload with a mismatched key = %v, want a key error", err)
	}
	after, err := dial(t, srv, client)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(after); got != serialB {
		t.Errorf("after a failed reload got serial %s, want %s (kept)", got, serialB)
	}
}

// TestWatch checks Watch reloads when a file's content changes, reports
// each change once, a broken state once, and returns when its context
// ends.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	a := testenv.NewCA(t, "Test CA")
	issue := func() *testenv.Issued {
		return a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "site"}, Names: []string{"site.test"}})
	}
	isA := issue()
	serialA := serialOf(isA)
	cfg := config.TLS{Certificates: []config.Certificate{writePair(t, dir, "site", isA)}}
	s, err := NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := Config(s, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, conf)
	client := &tls.Config{ServerName: "site.test", RootCAs: a.Pool}

	changed := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, 5*time.Millisecond, func(err error) { changed <- err })
	}()
	next := func() error {
		t.Helper()
		select {
		case err := <-changed:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Watch reported no change")
			return nil
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case err := <-changed:
			t.Errorf("%s: Watch reported %v, want nothing", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}

	old, err := dial(t, srv, client)
	if err != nil {
		t.Fatal(err)
	}
	quiet("unchanged files")

	isB := issue()
	serialB := serialOf(isB)
	writePair(t, dir, "site", isB)
	// The cert and the key are replaced one after the other; a poll
	// between the two may see a mismatch first.
	err = next()
	for err != nil {
		err = next()
	}
	fresh, err := dial(t, srv, client)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(fresh); got != serialB {
		t.Errorf("after the change got serial %s, want %s", got, serialB)
	}
	if err := echo(t, old, "ping"); err != nil || servedSerial(old) != serialA {
		t.Errorf("connection opened before the change: %v, serial %s, want working with %s", err, servedSerial(old), serialA)
	}

	testenv.WriteFileAtomic(t, cfg.Certificates[0].Key, []byte("garbage\n"))
	if err := next(); err == nil || !strings.Contains(err.Error(), "holds no PEM private key") {
		t.Errorf("Watch reported %v for a broken key, want its error", err)
	}
	quiet("files left broken")
	if got := s.Expiry(); len(got) != 1 || got[0].Name != "site.test" {
		t.Errorf("Expiry() after a failed reload = %v, want the kept certificate's", got)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

func TestNewStoreErrors(t *testing.T) {
	dir := t.TempDir()
	a := testenv.NewCA(t, "Test CA")
	good := writePair(t, dir, "good", a.Issue(t, testenv.Leaf{Names: []string{"a.test"}}))
	tests := []struct {
		name string
		cfg  config.TLS
		want string
	}{
		{"none", config.TLS{}, "tls has no certificates"},
		{"missing file", config.TLS{Certificates: []config.Certificate{good, {Cert: dir + "/nope.pem", Key: good.Key}}},
			"tls cert: stat " + dir + "/nope.pem: no such file or directory: give the path of a readable PEM file"},
		{"swapped", config.TLS{Certificates: []config.Certificate{{Cert: good.Key, Key: good.Cert}}},
			`tls cert "` + good.Key + `" holds a private key, not a certificate: are cert and key swapped?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewStore(tt.cfg)
			if s != nil || err == nil || err.Error() != tt.want {
				t.Errorf("NewStore() = %v, %v; want nil, %q", s, err, tt.want)
			}
		})
	}
}

// TestUpdate checks Update takes a new list of files, and keeps the old
// one when the new one fails.
func TestUpdate(t *testing.T) {
	s, _ := sniStore(t)
	dir := t.TempDir()
	a := testenv.NewCA(t, "Other CA")
	other := writePair(t, dir, "other", a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "other"}, Names: []string{"other.test"}}))
	if err := s.Update(config.TLS{Certificates: []config.Certificate{{Cert: other.Cert, Key: dir + "/nope.key"}}}); err == nil {
		t.Error("Update with a missing key succeeded")
	}
	if c, _ := s.GetCertificate(&tls.ClientHelloInfo{}); c.Leaf.Subject.CommonName != "default" {
		t.Errorf("after a failed Update the default is %q, want the old one", c.Leaf.Subject.CommonName)
	}
	if err := s.Update(config.TLS{Certificates: []config.Certificate{other}}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if c, _ := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "exact.example.com"}); c.Leaf.Subject.CommonName != "other" {
		t.Errorf("after Update the default is %q, want %q", c.Leaf.Subject.CommonName, "other")
	}
}

func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	a := testenv.NewCA(t, "Test CA")
	now := time.Now().Truncate(time.Second)
	pair := func(base string, l testenv.Leaf) config.Certificate {
		return writePair(t, dir, base, a.Issue(t, l))
	}
	in := func(d time.Duration) time.Time { return now.Add(d) }
	cfg := config.TLS{Certificates: []config.Certificate{
		pair("year", testenv.Leaf{Names: []string{"year.test", "www.year.test"}, NotAfter: in(365 * 24 * time.Hour)}),
		pair("soon", testenv.Leaf{Names: []string{"soon.test"}, NotAfter: in(3*24*time.Hour + time.Hour)}),
		pair("expired", testenv.Leaf{Subject: pkix.Name{CommonName: "old.test"}, NotAfter: in(-time.Hour)}),
		pair("year-rsa", testenv.Leaf{Names: []string{"year.test"}, NotAfter: in(200 * 24 * time.Hour), RSA: true}),
	}}
	s, err := NewStore(cfg)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	want := []CertExpiry{
		{Name: "year.test", NotAfter: in(200 * 24 * time.Hour)},
		{Name: "soon.test", NotAfter: in(3*24*time.Hour + time.Hour)},
		{Name: "old.test", NotAfter: in(-time.Hour)},
	}
	if diff := cmp.Diff(want, s.Expiry()); diff != "" {
		t.Errorf("Expiry() (-want +got):\n%s", diff)
	}
	ws := s.ExpiryWarnings(now)
	if len(ws) != 2 ||
		!strings.HasPrefix(ws[0], `tls cert "`+cfg.Certificates[1].Cert+`" (soon.test) expires `) || !strings.HasSuffix(ws[0], ", in 3 days: renew it") ||
		!strings.HasPrefix(ws[1], `tls cert "`+cfg.Certificates[2].Cert+`" (old.test) expired `) {
		t.Errorf("ExpiryWarnings(now) = %q, want the soon and the expired certificates", ws)
	}
	if ws := s.ExpiryWarnings(now.Add(195 * 24 * time.Hour)); len(ws) != 3 {
		t.Errorf("ExpiryWarnings(in 195 days) = %q, want 3 (the RSA year.test too)", ws)
	}
}

// BenchmarkGetCertificate measures the choice on the handshake path: one
// atomic load and a map look-up, without allocating.
func BenchmarkGetCertificate(b *testing.B) {
	s, _ := sniStore(b)
	hellos := []*tls.ClientHelloInfo{{ServerName: "exact.example.com"}, {ServerName: "shop.example.com"}, {ServerName: "unknown.test"}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.GetCertificate(hellos[i%len(hellos)]); err != nil {
			b.Fatal(err)
		}
	}
}
