package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

// backendOf returns the pool backend with the given address.
func backendOf(t testing.TB, s *sluice, poolName, address string) *pool.Backend {
	t.Helper()
	for _, p := range s.srv.Pools() {
		if p.Name == poolName {
			if b := p.Find(address); b != nil {
				return b
			}
		}
	}
	t.Fatalf("no backend %s in pool %s", address, poolName)
	return nil
}

// accessLines reads a JSON access log file: one map per line.
func accessLines(t testing.TB, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestTCPBalancesAndRelays: a tcp listener balances connections round
// robin over echo backends and relays bytes both ways, a large payload
// included; a client's half-close reaches the backend, whose last words
// reach the client; the backend's counters and the access log see it.
func TestTCPBalancesAndRelays(t *testing.T) {
	t.Parallel()
	a, b := startEcho(t, "a", echoOpts{}), startEcho(t, "b", echoOpts{})
	cfg := tcpConfig(tcpPool("db", a, b))
	logFile := filepath.Join(t.TempDir(), "access.log")
	cfg.AccessLog = config.AccessLog{Path: logFile, Format: "json"}
	s := startSluice(t, cfg)
	addr := s.Addr("l4")

	var greets []string
	conns := make([]*tcpConn, 4)
	for i := range conns {
		conns[i] = dialEcho(t, addr, "")
		greets = append(greets, conns[i].greet)
	}
	if want := []string{"a", "b", "a", "b"}; !slices.Equal(greets, want) {
		t.Errorf("greetings = %q, want round robin %q", greets, want)
	}
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for i, c := range conns {
		if err := c.echo(fmt.Sprintf("hello %d\n", i)); err != nil {
			t.Errorf("connection %d: %v", i, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- conns[0].echo(big) }()
	if err := <-done; err != nil {
		t.Errorf("1 MiB echo: %v", err)
	}
	for i, c := range conns {
		rest, err := c.finish()
		if want := "bye " + greets[i] + "\n"; err != nil || rest != want {
			t.Errorf("after half-close, connection %d read %q, %v; want %q", i, rest, err, want)
		}
	}
	ba := backendOf(t, s, "db", a.URL())
	eventually(t, 5*time.Second, "backend a's counters", func() bool {
		return ba.Stats.Connections.Load() == 2 && ba.Stats.BytesIn.Load() >= uint64(len(big)) &&
			ba.Stats.BytesOut.Load() >= uint64(len(big)) && ba.InFlight.Load() == 0
	})
	s.Stop()
	lines := accessLines(t, logFile)
	if len(lines) != 4 {
		t.Fatalf("%d access log lines, want 4:\n%v", len(lines), lines)
	}
	for _, l := range lines {
		if l["proto"] != "TCP" || l["pool"] != "db" || l["end"] != "client" || l["listener"] != "l4" {
			t.Errorf("access log line %v: want proto TCP, pool db, end client, listener l4", l)
		}
		if cl, _ := l["client"].(string); !strings.HasPrefix(cl, "127.0.0.1:") {
			t.Errorf("access log client %q, want 127.0.0.1:PORT", cl)
		}
	}
	bigOnes := 0
	for _, l := range lines {
		in, _ := l["bytes_in"].(float64)
		out, _ := l["bytes"].(float64)
		if in >= float64(len(big)) && out >= float64(len(big)) {
			bigOnes++
			if l["backend"] != a.URL() {
				t.Errorf("the 1 MiB connection's line names backend %v, want %s", l["backend"], a.URL())
			}
		}
	}
	if bigOnes != 1 {
		t.Errorf("%d access log lines count the 1 MiB each way, want 1:\n%v", bigOnes, lines)
	}
}

// TestTCPKilledBackend: when a backend dies, new connections go to the
// others at once (the failed connect is retried and the backend leaves
// rotation), and connections to the survivors go on.
func TestTCPKilledBackend(t *testing.T) {
	t.Parallel()
	a, b := startEcho(t, "a", echoOpts{}), startEcho(t, "b", echoOpts{})
	p := tcpPool("db", a, b)
	p.HealthCheck = &config.HealthCheck{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond,
		HealthyThreshold: 1, UnhealthyThreshold: 2}
	s := startSluice(t, tcpConfig(p))
	addr := s.Addr("l4")
	var onA *tcpConn
	for range 2 {
		if c := dialEcho(t, addr, ""); c.greet == "a" {
			onA = c
		}
	}
	if onA == nil {
		t.Fatal("no connection went to a")
	}
	b.Kill()
	for i := range 20 {
		c := dialEcho(t, addr, "")
		if c.greet != "a" {
			t.Fatalf("connection %d after b died greeted %q, want a", i, c.greet)
		}
		if err := c.echo("ping\n"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if err := onA.echo("still there\n"); err != nil {
		t.Errorf("the connection to a made before b died: %v", err)
	}
	bb := backendOf(t, s, "db", b.URL())
	if bb.Eligible() {
		t.Errorf("b is %s after it died, want it out of rotation", bb.State())
	}
}

// TestTCPReloadKeepsConnections: a reload that keeps the tcp listener
// (changing its timeouts, routes' pool and backends) keeps its open
// connections; new ones follow the new config.
func TestTCPReloadKeepsConnections(t *testing.T) {
	t.Parallel()
	a, b, c := startEcho(t, "a", echoOpts{}), startEcho(t, "b", echoOpts{}), startEcho(t, "c", echoOpts{})
	yaml := func(idle string, backends ...*echoServer) string {
		var list []string
		for _, e := range backends {
			list = append(list, fmt.Sprintf("{address: %q}", e.URL()))
		}
		return fmt.Sprintf(`listeners:
  - name: l4
    address: "127.0.0.1:0"
    protocol: tcp
    timeouts: {idle: %s}
    pool: db
pools:
  - name: db
    backends: [%s]
admin: {address: "127.0.0.1:0"}
shutdown_timeout: 5s
`, idle, strings.Join(list, ", "))
	}
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(file, []byte(yaml("1m", a)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	s := startSluice(t, cfg)
	addr := s.Addr("l4")
	old := dialEcho(t, addr, "")
	if old.greet != "a" {
		t.Fatalf("greeting %q, want a", old.greet)
	}
	for i, next := range []string{yaml("2m", b, c), yaml("3m", c)} {
		if err := os.WriteFile(file, []byte(next), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.srv.Reload(); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		if err := old.echo(fmt.Sprintf("after reload %d\n", i+1)); err != nil {
			t.Fatalf("the connection opened before reload %d: %v", i+1, err)
		}
		if s.Addr("l4") != addr {
			t.Fatalf("the listener moved from %s to %s", addr, s.Addr("l4"))
		}
	}
	if g := dialEcho(t, addr, "").greet; g != "c" {
		t.Errorf("a connection after the reloads greeted %q, want c", g)
	}
	if rest, err := old.finish(); err != nil || rest != "bye a\n" {
		t.Errorf("the old connection ended with %q, %v", rest, err)
	}
}

// TestTCPShutdownDrains: on shutdown the listener stops accepting, open
// connections go on until their ends close them, and what is still open at
// shutdown_timeout is closed.
func TestTCPShutdownDrains(t *testing.T) {
	t.Parallel()
	a := startEcho(t, "a", echoOpts{})
	cfg := tcpConfig(tcpPool("db", a))
	cfg.ShutdownTimeout = 2 * time.Second
	s := startSluice(t, cfg)
	addr := s.Addr("l4")
	finishing, lingering := dialEcho(t, addr, ""), dialEcho(t, addr, "")
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.Stop()
	}()
	eventually(t, 5*time.Second, "the listener stops accepting", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if err := finishing.echo("during shutdown\n"); err != nil {
		t.Fatalf("a connection open at shutdown: %v", err)
	}
	if rest, err := finishing.finish(); err != nil || rest != "bye a\n" {
		t.Errorf("it ended with %q, %v; want the backend's bye", rest, err)
	}
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown did not end with a connection left open past shutdown_timeout")
	}
	lingering.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := lingering.r.ReadByte(); err == nil {
		t.Errorf("the lingering connection is still open after shutdown (read %q)", n)
	}
}

// TestTCPProxyProtocol: a tcp listener with proxy_protocol takes the client
// from a v1 or v2 header, and a pool with send_proxy_protocol names that
// client to its backend; a connection without a header, with a bad one or
// from a peer outside trusted_proxies is closed before any backend sees it.
func TestTCPProxyProtocol(t *testing.T) {
	t.Parallel()
	for _, send := range []string{"v1", "v2"} {
		t.Run("send "+send, func(t *testing.T) {
			t.Parallel()
			e := startEcho(t, "a", echoOpts{proxy: true})
			p := tcpPool("db", e)
			p.SendProxyProtocol = send
			cfg := tcpConfig(p)
			cfg.Listeners[0].ProxyProtocol = true
			cfg.Listeners[0].TrustedProxies = []string{"127.0.0.0/8"}
			cfg.Listeners[0].Timeouts.ReadHeader = 500 * time.Millisecond
			s := startSluice(t, cfg)
			addr := s.Addr("l4")
			v1 := dialEcho(t, addr, "PROXY TCP4 203.0.113.7 198.51.100.1 40000 5432\r\n")
			if want := "a 203.0.113.7:40000"; v1.greet != want {
				t.Errorf("with a v1 header the backend greeted %q, want %q", v1.greet, want)
			}
			v2 := dialEcho(t, addr, "\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24"+
				"\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07"+
				"\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"+"\x9c\x41\x15\x38")
			if want := "a [2001:db8::7]:40001"; v2.greet != want {
				t.Errorf("with a v2 header the backend greeted %q, want %q", v2.greet, want)
			}
			local := dialEcho(t, addr, "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
			if !strings.HasPrefix(local.greet, "a 127.0.0.1:") {
				t.Errorf("with a v2 LOCAL header the backend greeted %q, want the peer 127.0.0.1", local.greet)
			}
			for _, bad := range []string{"hello\r\n", "PROXY TCP4 203.0.113.7\r\n", ""} {
				assertClosedUnseen(t, addr, bad, e)
			}
			for _, h := range e.Headers() {
				if h.Version != map[string]int{"v1": 1, "v2": 2}[send] {
					t.Errorf("the backend got a v%d header, want %s", h.Version, send)
				}
			}
		})
	}
	t.Run("untrusted peer", func(t *testing.T) {
		t.Parallel()
		e := startEcho(t, "a", echoOpts{})
		cfg := tcpConfig(tcpPool("db", e))
		cfg.Listeners[0].ProxyProtocol = true
		cfg.Listeners[0].TrustedProxies = []string{"10.0.0.0/8"}
		s := startSluice(t, cfg)
		assertClosedUnseen(t, s.Addr("l4"), "PROXY TCP4 203.0.113.7 198.51.100.1 40000 5432\r\n", e)
	})
}

// assertClosedUnseen sends pre on a new connection to addr and checks that
// sluice closes it without a byte, and that no new connection reached e.
func assertClosedUnseen(t *testing.T, addr, pre string, e *echoServer) {
	t.Helper()
	before := e.accepted.Load()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(pre))
	b, err := bufio.NewReader(c).ReadByte()
	if err == nil {
		t.Errorf("after %q sluice sent %q, want the connection closed", pre, b)
	}
	if n := e.accepted.Load(); n != before {
		t.Errorf("after %q the backend got %d connections, want none", pre, n-before)
	}
}

// TestTCPSNIPassthrough: without terminating TLS, a tcp listener routes
// on the server name of the ClientHello: each client completes its
// handshake with the backend of its name, whose certificate it sees; a
// name no route knows goes to the default pool, or is closed without one.
func TestTCPSNIPassthrough(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "sni ca")
	certA := ca.issue(t, leafOpts{names: []string{"a.example.com"}})
	certB := ca.issue(t, leafOpts{names: []string{"b.example.com", "x.wild.example.com"}})
	a := startEcho(t, "a", echoOpts{tls: &tls.Config{Certificates: []tls.Certificate{certA.pair}}})
	b := startEcho(t, "b", echoOpts{tls: &tls.Config{Certificates: []tls.Certificate{certB.pair}}})
	cfg := tcpConfig(tcpPool("pa", a), tcpPool("pb", b))
	cfg.Listeners[0].Routes = []config.Route{{SNI: "a.example.com", Pool: "pa"}, {SNI: "*.wild.example.com", Pool: "pb"}, {SNI: "b.example.com", Pool: "pb"}}
	cfg.Listeners[0].Pool = "pa"
	cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "strict", Address: "127.0.0.1:0", Protocol: "tcp",
		Routes: []config.Route{{SNI: "b.example.com", Pool: "pb"}}})
	s := startSluice(t, cfg)
	addr := s.Addr("l4")
	tests := []struct {
		addr, sni, greet, serial string
	}{
		{addr, "a.example.com", "a", certA.cert.SerialNumber.Text(16)},
		{addr, "b.example.com", "b", certB.cert.SerialNumber.Text(16)},
		{addr, "x.wild.example.com", "b", certB.cert.SerialNumber.Text(16)},
		{addr, "B.EXAMPLE.COM", "b", certB.cert.SerialNumber.Text(16)},
		{s.Addr("strict"), "b.example.com", "b", certB.cert.SerialNumber.Text(16)},
	}
	for _, tt := range tests {
		tc, err := dialTLS(tt.addr, clientTLS(ca, tt.sni))
		if err != nil {
			t.Fatalf("handshake for %s: %v", tt.sni, err)
		}
		if got := tc.ConnectionState().PeerCertificates[0].SerialNumber.Text(16); got != tt.serial {
			t.Errorf("%s: the client saw certificate %s, want %s (the backend's own)", tt.sni, got, tt.serial)
		}
		c := greeted(t, tc, "")
		if c.greet != tt.greet {
			t.Errorf("%s: greeted by %q, want %q", tt.sni, c.greet, tt.greet)
		}
		if err := c.echo("through TLS end to end\n"); err != nil {
			t.Errorf("%s: %v", tt.sni, err)
		}
		if rest, err := c.finish(); err != nil || rest != "bye "+tt.greet+"\n" {
			t.Errorf("%s: ended with %q, %v", tt.sni, rest, err)
		}
	}
	// No route for the name: the default pool's backend answers (a's
	// certificate does not cover it, which the client then refuses).
	if _, err := dialTLS(addr, clientTLS(ca, "other.example.com")); err == nil {
		t.Errorf("a handshake for other.example.com succeeded, want a's certificate refused")
	}
	tc, err := dialTLS(addr, &tls.Config{ServerName: "other.example.com", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake for other.example.com, not verifying: %v", err)
	}
	if g := greeted(t, tc, "").greet; g != "a" {
		t.Errorf("other.example.com went to %q, want the default pool's a", g)
	}
	// No route and no default pool: closed.
	if _, err := dialTLS(s.Addr("strict"), clientTLS(ca, "a.example.com")); err == nil {
		t.Errorf("a handshake for a name the strict listener does not route succeeded, want it closed")
	}
}

// TestTCPTLSTermination: a tcp listener with tls terminates it: clients
// speak TLS to sluice, with its certificate, and the backend gets the
// plain bytes.
func TestTCPTLSTermination(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "term ca")
	leaf := ca.issue(t, leafOpts{names: []string{"db.example.com"}})
	a := startEcho(t, "a", echoOpts{})
	cfg := tcpConfig(tcpPool("db", a))
	cfg.Listeners[0].TLS = &config.TLS{Certificates: []config.Certificate{leaf.write(t, t.TempDir(), "db")}}
	s := startSluice(t, cfg)
	tc, err := dialTLS(s.Addr("l4"), clientTLS(ca, "db.example.com"))
	if err != nil {
		t.Fatalf("handshake with sluice: %v", err)
	}
	if got := tc.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(leaf.cert.SerialNumber) != 0 {
		t.Errorf("the client saw certificate %s, want sluice's", got.Text(16))
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" {
		t.Errorf("ALPN negotiated %q on a tcp listener, want none", p)
	}
	c := greeted(t, tc, "")
	if c.greet != "a" {
		t.Errorf("greeted %q, want a", c.greet)
	}
	big := strings.Repeat("x", 300<<10)
	if err := c.echo(big); err != nil {
		t.Errorf("300 KiB through TLS termination: %v", err)
	}
	if rest, err := c.finish(); err != nil || rest != "bye a\n" {
		t.Errorf("after close_notify and half-close: %q, %v; want the backend's bye", rest, err)
	}
}

// TestTCPLimitsAndLeastConnections: max_connections_per_backend counts
// open connections (a connection past it, with no queue, is closed before
// any backend sees it, and the slot frees when one closes), and
// least_requests sends new connections to the backend with the fewest open.
func TestTCPLimitsAndLeastConnections(t *testing.T) {
	t.Parallel()
	t.Run("max_connections_per_backend", func(t *testing.T) {
		t.Parallel()
		a := startEcho(t, "a", echoOpts{})
		p := tcpPool("db", a)
		p.MaxConnectionsPerBackend, p.MaxQueue = 1, 0
		s := startSluice(t, tcpConfig(p))
		addr := s.Addr("l4")
		first := dialEcho(t, addr, "")
		assertClosedUnseen(t, addr, "", a)
		if rest, err := first.finish(); err != nil || rest != "bye a\n" {
			t.Fatalf("first connection ended with %q, %v", rest, err)
		}
		eventually(t, 5*time.Second, "the slot frees when the connection ends", func() bool {
			return backendOf(t, s, "db", a.URL()).InFlight.Load() == 0
		})
		if g := dialEcho(t, addr, "").greet; g != "a" {
			t.Errorf("after the first ended, a new connection greeted %q, want a", g)
		}
	})
	t.Run("least_requests", func(t *testing.T) {
		t.Parallel()
		a, b := startEcho(t, "a", echoOpts{}), startEcho(t, "b", echoOpts{})
		p := tcpPool("db", a, b)
		p.Balance = "least_requests"
		s := startSluice(t, tcpConfig(p))
		addr := s.Addr("l4")
		held := dialEcho(t, addr, "") // stays open
		other := map[string]string{"a": "b", "b": "a"}[held.greet]
		for i := range 5 {
			c := dialEcho(t, addr, "")
			if c.greet != other {
				t.Errorf("connection %d went to %s, which holds an open connection; want %s", i, c.greet, other)
			}
			if rest, err := c.finish(); err != nil || rest != "bye "+other+"\n" {
				t.Fatalf("connection %d ended with %q, %v", i, rest, err)
			}
			eventually(t, 5*time.Second, "the connection's slot frees", func() bool {
				return backendOf(t, s, "db", "tcp://"+map[string]string{"a": a.Addr, "b": b.Addr}[other]).InFlight.Load() == 0
			})
		}
	})
}

// TestTCPRateLimit: a tcp listener's rate_limit counts connections by
// client: past the burst a connection is closed before any backend sees it.
func TestTCPRateLimit(t *testing.T) {
	t.Parallel()
	a := startEcho(t, "a", echoOpts{})
	cfg := tcpConfig(tcpPool("db", a))
	cfg.Listeners[0].RateLimit = &config.RateLimit{Rate: 2, Per: time.Hour}
	s := startSluice(t, cfg)
	addr := s.Addr("l4")
	for range 2 {
		if g := dialEcho(t, addr, "").greet; g != "a" {
			t.Fatalf("greeting %q, want a", g)
		}
	}
	assertClosedUnseen(t, addr, "", a)
}
