package tlsterm

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// oneCert returns a Store and tls block with one ECDSA certificate for
// site.test that CA a signed.
func oneCert(t *testing.T, a *testenv.CA) (*Store, config.TLS) {
	t.Helper()
	is := a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "site"}, Names: []string{"site.test"}})
	cfg := config.TLS{Certificates: []config.Certificate{writePair(t, t.TempDir(), "site", is)}}
	s, err := NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// TestConfigHandshakes checks which clients the listener's tls.Config
// accepts: versions, suites, curves and ALPN.
func TestConfigHandshakes(t *testing.T) {
	a := testenv.NewCA(t, "Test CA")
	s, cfg := oneCert(t, a)
	tls13 := cfg
	tls13.MinVersion = "1.3"
	h2 := func(cfg config.TLS, h2 bool) *tls.Config {
		conf, err := Config(s, cfg, h2)
		if err != nil {
			t.Fatal(err)
		}
		return conf
	}
	servers := map[string]*server{
		"1.2":       serve(t, h2(cfg, true)),
		"1.3":       serve(t, h2(tls13, true)),
		"1.2 no h2": serve(t, h2(cfg, false)),
	}
	tests := []struct {
		name     string
		server   string
		client   *tls.Config
		wantErr  bool
		wantVers uint16
		wantALPN string
	}{
		{"default client", "1.2", &tls.Config{NextProtos: []string{"h2", "http/1.1"}}, false, tls.VersionTLS13, "h2"},
		{"http/1.1 only client", "1.2", &tls.Config{NextProtos: []string{"http/1.1"}}, false, tls.VersionTLS13, "http/1.1"},
		{"no ALPN", "1.2", &tls.Config{}, false, tls.VersionTLS13, ""},
		{"h2 not offered", "1.2 no h2", &tls.Config{NextProtos: []string{"h2", "http/1.1"}}, false, tls.VersionTLS13, "http/1.1"},
		{"TLS 1.2, ECDHE-ECDSA-AES128-GCM", "1.2", &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, false, tls.VersionTLS12, ""},
		{"TLS 1.2, ECDHE-ECDSA-CHACHA20", "1.2", &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, false, tls.VersionTLS12, ""},
		{"TLS 1.2, CBC refused", "1.2", &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, true, 0, ""},
		{"TLS 1.2, P-256 only", "1.2", &tls.Config{MaxVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.CurveP256}}, false, tls.VersionTLS12, ""},
		{"TLS 1.2, P-384 only refused", "1.2", &tls.Config{MaxVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.CurveP384}}, true, 0, ""},
		{"TLS 1.1 refused", "1.2", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, true, 0, ""},
		{"min_version 1.3, TLS 1.3 client", "1.3", &tls.Config{}, false, tls.VersionTLS13, ""},
		{"min_version 1.3, TLS 1.2 client refused", "1.3", &tls.Config{MaxVersion: tls.VersionTLS12}, true, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := tt.client.Clone()
			cc.ServerName, cc.RootCAs = "site.test", a.Pool
			c, err := dial(t, servers[tt.server], cc)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("handshake succeeded with %s, want it refused", tls.VersionName(c.ConnectionState().Version))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			st := c.ConnectionState()
			if st.Version != tt.wantVers || st.NegotiatedProtocol != tt.wantALPN {
				t.Errorf("got %s with ALPN %q, want %s with %q", tls.VersionName(st.Version), st.NegotiatedProtocol,
					tls.VersionName(tt.wantVers), tt.wantALPN)
			}
		})
	}
}

func TestConfigFields(t *testing.T) {
	a := testenv.NewCA(t, "Test CA")
	s, cfg := oneCert(t, a)
	conf, err := Config(s, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if conf.MinVersion != tls.VersionTLS12 || conf.SessionTicketsDisabled || conf.ClientAuth != tls.NoClientCert || conf.ClientCAs != nil {
		t.Errorf("Config() = MinVersion %x, SessionTicketsDisabled %v, ClientAuth %v, ClientCAs %v; want 1.2, false, none, nil",
			conf.MinVersion, conf.SessionTicketsDisabled, conf.ClientAuth, conf.ClientCAs)
	}
	insecure := map[uint16]bool{}
	for _, cs := range tls.InsecureCipherSuites() {
		insecure[cs.ID] = true
	}
	for _, id := range conf.CipherSuites {
		if insecure[id] {
			t.Errorf("Config() offers insecure suite %s", tls.CipherSuiteName(id))
		}
	}
	bad := cfg
	bad.MinVersion = "1.1"
	if _, err := Config(s, bad, true); err == nil {
		t.Error(`Config() with min_version "1.1" succeeded`)
	}
	bad = cfg
	bad.ClientCA = filepath.Join(t.TempDir(), "nope.pem")
	if _, err := Config(s, bad, true); err == nil {
		t.Error("Config() with a client_ca the Store was not loaded with succeeded")
	}
	if _, err := NewStore(bad); err == nil || !strings.Contains(err.Error(), "client_ca") {
		t.Errorf("NewStore() with a missing client_ca = %v, want an error naming client_ca", err)
	}
}

// TestMutualTLS checks a listener with client_ca accepts only clients
// with a certificate that CA signed, and exposes the verified one.
func TestMutualTLS(t *testing.T) {
	serverCA, clientCA, otherCA := testenv.NewCA(t, "Server CA"), testenv.NewCA(t, "Client CA"), testenv.NewCA(t, "Other CA")
	s, cfg := oneCert(t, serverCA)
	cfg.ClientCA = filepath.Join(t.TempDir(), "clients.pem")
	testenv.WriteFileAtomic(t, cfg.ClientCA, clientCA.PEM)
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	conf, err := Config(s, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if conf.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("ClientAuth = %v, want RequireAndVerifyClientCert", conf.ClientAuth)
	}
	srv := serve(t, conf)

	clientCert := func(a *testenv.CA) []tls.Certificate {
		return []tls.Certificate{a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "alice", Organization: []string{"Example, Inc."}}, Client: true}).Pair}
	}
	good := clientCert(clientCA)
	tests := []struct {
		name    string
		certs   []tls.Certificate
		version uint16
		wantOK  bool
	}{
		{"signed by client_ca", good, 0, true},
		{"signed by client_ca, TLS 1.2", good, tls.VersionTLS12, true},
		{"no certificate", nil, 0, false},
		{"no certificate, TLS 1.2", nil, tls.VersionTLS12, false},
		{"signed by another CA", clientCert(otherCA), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := &tls.Config{ServerName: "site.test", RootCAs: serverCA.Pool, Certificates: tt.certs, MaxVersion: tt.version}
			c, dialErr := dial(t, srv, cc)
			// In TLS 1.3 the client finishes first; the server's verdict
			// reaches it at its first read.
			var echoErr error
			if dialErr == nil {
				echoErr = echo(t, c, "hello")
			}
			r := srv.result(t)
			if got := r.err == nil; got != tt.wantOK {
				t.Fatalf("server handshake error = %v, want ok %v", r.err, tt.wantOK)
			}
			if !tt.wantOK {
				if dialErr == nil && echoErr == nil {
					t.Error("the client was refused but its connection still works")
				}
				return
			}
			if dialErr != nil || echoErr != nil {
				t.Fatalf("client: dial %v, echo %v", dialErr, echoErr)
			}
			sum := sha256.Sum256(good[0].Leaf.Raw)
			want := "Hash=" + hex.EncodeToString(sum[:]) + `;Subject="CN=alice,O=Example\\, Inc."`
			if got := ClientCertHeader(&r.state); got != want {
				t.Errorf("ClientCertHeader() = %q, want %q", got, want)
			}
			if got, want := ClientSubject(&r.state), `CN=alice,O=Example\, Inc.`; got != want {
				t.Errorf("ClientSubject() = %q, want %q", got, want)
			}
		})
	}
	if ok, errs := srv.counters.OK(), srv.counters.Errors(); ok != 2 || errs != 3 {
		t.Errorf("Counters = %d ok, %d errors; want 2, 3", ok, errs)
	}
}

// TestClientCARotation: a client_ca file replaced (a CA rotated) reaches
// the handshakes after a Reload, and after Watch sees the change, without
// a new Config; connections opened before keep working; a broken file
// keeps the CA that was there.
func TestClientCARotation(t *testing.T) {
	serverCA, ca1, ca2 := testenv.NewCA(t, "Server CA"), testenv.NewCA(t, "Client CA 1"), testenv.NewCA(t, "Client CA 2")
	s, cfg := oneCert(t, serverCA)
	cfg.ClientCA = filepath.Join(t.TempDir(), "clients.pem")
	testenv.WriteFileAtomic(t, cfg.ClientCA, ca1.PEM)
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	conf, err := Config(s, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, conf)
	client := func(a *testenv.CA) *tls.Config {
		is := a.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "alice"}, Client: true})
		return &tls.Config{ServerName: "site.test", RootCAs: serverCA.Pool, Certificates: []tls.Certificate{is.Pair},
			ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	}
	c1, c2 := client(ca1), client(ca2)
	// accepted reports whether the server took a new connection from a
	// client with conf (the TLS 1.3 client learns it at its first read).
	accepted := func(conf *tls.Config) bool {
		t.Helper()
		c, err := dial(t, srv, conf)
		if err == nil {
			err = echo(t, c, "hello")
			if err == nil {
				c.Close()
			}
		}
		r := srv.result(t)
		if (err == nil) != (r.err == nil) {
			t.Fatalf("the client says %v, the server %v", err, r.err)
		}
		return r.err == nil
	}
	if !accepted(c1) || accepted(c2) {
		t.Fatal("before the rotation, want CA 1's client accepted and CA 2's refused")
	}
	old, err := dial(t, srv, c1)
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(t, old, "before"); err != nil {
		t.Fatal(err)
	}
	srv.result(t)

	testenv.WriteFileAtomic(t, cfg.ClientCA, ca2.PEM)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	// c1 holds a session ticket from its accepted handshakes: resuming it
	// must not pass the verification its certificate now fails.
	if accepted(c1) || !accepted(c2) {
		t.Error("after Reload, want CA 1's client refused (resumed or not) and CA 2's accepted")
	}
	if err := echo(t, old, "after"); err != nil {
		t.Errorf("a connection opened before the rotation: %v, want it working", err)
	}

	testenv.WriteFileAtomic(t, cfg.ClientCA, []byte("garbage\n"))
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "client_ca") {
		t.Errorf("Reload() with a broken client_ca = %v, want an error naming it", err)
	}
	if accepted(c1) || !accepted(c2) {
		t.Error("after a failed Reload, want CA 2 kept")
	}

	testenv.WriteFileAtomic(t, cfg.ClientCA, ca1.PEM)
	var failed [sha256.Size]byte
	if err, tried := s.reloadChanged(&failed); err != nil || !tried {
		t.Fatalf("Watch's poll after the file changed: %v, tried %v; want a reload", err, tried)
	}
	if !accepted(c1) || accepted(c2) {
		t.Error("after Watch saw the file change, want CA 1's client accepted and CA 2's refused")
	}
}

// TestTLSALPNChallengeWithClientCA: with client_ca and acme, a CA
// validating TLS-ALPN-01 (no client certificate, acme-tls/1 alone) gets
// the challenge certificate; any other client still needs a certificate.
func TestTLSALPNChallengeWithClientCA(t *testing.T) {
	serverCA, clientCA := testenv.NewCA(t, "Server CA"), testenv.NewCA(t, "Client CA")
	s, cfg := oneCert(t, serverCA)
	cfg.ClientCA = filepath.Join(t.TempDir(), "clients.pem")
	testenv.WriteFileAtomic(t, cfg.ClientCA, clientCA.PEM)
	cfg.ACME = &config.ACME{Domains: []string{"site.test"}}
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	challenge := serverCA.Issue(t, testenv.Leaf{Subject: pkix.Name{CommonName: "challenge"}, Names: []string{"site.test"}})
	s.SetChallenges(func(name string) (*tls.Certificate, bool) { return &challenge.Pair, name == "site.test" })
	conf, err := Config(s, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, conf)

	c, err := dial(t, srv, &tls.Config{ServerName: "site.test", RootCAs: serverCA.Pool, NextProtos: []string{ALPNChallenge}})
	if err != nil {
		t.Fatalf("the validation's handshake: %v", err)
	}
	if err := echo(t, c, "x"); err != nil {
		t.Fatalf("the validation's connection: %v", err)
	}
	st := c.ConnectionState()
	if st.NegotiatedProtocol != ALPNChallenge || st.PeerCertificates[0].Subject.CommonName != "challenge" {
		t.Errorf("got ALPN %q and certificate %q, want acme-tls/1 and the challenge's", st.NegotiatedProtocol, st.PeerCertificates[0].Subject.CommonName)
	}
	srv.result(t)
	c, err = dial(t, srv, &tls.Config{ServerName: "site.test", RootCAs: serverCA.Pool, NextProtos: []string{"h2", "http/1.1"}})
	if err == nil {
		err = echo(t, c, "x")
	}
	if r := srv.result(t); r.err == nil || err == nil {
		t.Errorf("a client without a certificate: server %v, client %v; want it refused", r.err, err)
	}
}

func TestClientCertHeader(t *testing.T) {
	cert := &x509.Certificate{Raw: []byte("not really DER"), Subject: pkix.Name{
		CommonName:   "Jane \"JD\" Doe\\",
		Organization: []string{"A;B\r\nX-Evil: 1"},
	}}
	sum := sha256.Sum256(cert.Raw)
	hash := hex.EncodeToString(sum[:])
	tests := []struct {
		name string
		cs   *tls.ConnectionState
		want string
	}{
		{"no connection state", nil, ""},
		{"no client certificate", &tls.ConnectionState{}, ""},
		{"presented but not verified", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}, ""},
		{"quotes, backslashes and control characters escaped", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}},
			"Hash=" + hash + `;Subject="CN=Jane \\\"JD\\\" Doe\\\\,O=A\\;B\\0d\\0aX-Evil: 1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClientCertHeader(tt.cs); got != tt.want {
				t.Errorf("ClientCertHeader() = %q, want %q", got, tt.want)
			}
		})
	}
	if got, want := ClientSubject(tests[3].cs), `CN=Jane \"JD\" Doe\\,O=A\;B\0d\0aX-Evil: 1`; got != want {
		t.Errorf("ClientSubject() = %q, want %q", got, want)
	}
}
