package tlsterm

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"testing"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// TestManaged checks certificates from ACME beside files: SNI picks among
// them all, a file naming the host exactly wins, the first file stays the
// default; without files the first managed certificate is the default and
// a Store with none fails the handshake; a client offering only
// acme-tls/1 gets the challenge certificate.
func TestManaged(t *testing.T) {
	a := testenv.NewCA(t, "Test CA")
	pair := func(names ...string) *tls.Certificate {
		return &a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: names[0]}, Names: names}).Pair
	}
	files := writePair(t, t.TempDir(), "file", a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "file"}, Names: []string{"file.test", "both.test"}}))
	acme := &config.ACME{Domains: []string{"acme.test"}}

	hello := func(name string, protos ...string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{ServerName: name, SupportedProtos: protos}
	}
	name := func(s *Store, h *tls.ClientHelloInfo) string {
		c, err := s.GetCertificate(h)
		if err != nil {
			return "error"
		}
		return c.Leaf.Subject.CommonName
	}

	both, err := NewStore(config.TLS{Certificates: []config.Certificate{files}, ACME: acme})
	if err != nil {
		t.Fatal(err)
	}
	both.SetManaged([]*tls.Certificate{pair("acme.test", "both.test")})
	alone, err := NewStore(config.TLS{ACME: acme})
	if err != nil {
		t.Fatal(err)
	}
	if got := name(alone, hello("acme.test")); got != "error" {
		t.Errorf("acme alone, nothing obtained yet: %s, want a failed handshake", got)
	}
	alone.SetManaged([]*tls.Certificate{pair("acme.test")})
	alone.SetChallenges(func(n string) (*tls.Certificate, bool) {
		if n == "acme.test" {
			return pair("challenge"), true
		}
		return nil, false
	})
	tests := []struct {
		store *Store
		hello *tls.ClientHelloInfo
		want  string
	}{
		{both, hello("acme.test"), "acme.test"},
		{both, hello("file.test"), "file"},
		{both, hello("both.test"), "file"},
		{both, hello("other.test"), "file"},
		{alone, hello("acme.test"), "acme.test"},
		{alone, hello("other.test"), "acme.test"},
		{alone, hello("acme.test", "acme-tls/1"), "challenge"},
		{alone, hello("other.test", "acme-tls/1"), "error"},
		{alone, hello("acme.test", "h2", "acme-tls/1"), "acme.test"},
		{both, hello("acme.test", "acme-tls/1"), "error"},
	}
	for _, tt := range tests {
		if got := name(tt.store, tt.hello); got != tt.want {
			t.Errorf("SNI %q ALPN %q: certificate %s, want %s", tt.hello.ServerName, tt.hello.SupportedProtos, got, tt.want)
		}
	}
	if err := both.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := name(both, hello("acme.test")); got != "acme.test" {
		t.Errorf("after a reload of the files: %s, want the managed certificate still", got)
	}
	var names []string
	for _, e := range both.Expiry() {
		names = append(names, e.Name)
	}
	if len(names) != 2 || names[0] != "file.test" || names[1] != "acme.test" {
		t.Errorf("Expiry names %q, want [file.test acme.test]", names)
	}
}
