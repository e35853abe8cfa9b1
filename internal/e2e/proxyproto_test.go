package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// v2Header is a PROXY v2 header naming src → dst.
func v2Header(src, dst string) string {
	return string(proxyproto.Append(nil, 2, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)))
}

// proxiedGET sends a PROXY header and then GET path on a new connection to
// addr (over TLS with tlsCfg when set) and returns the response.
func proxiedGET(t testing.TB, addr, header, path, extra string, tlsCfg *tls.Config) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, header); err != nil {
		t.Fatal(err)
	}
	var rw net.Conn = c
	if tlsCfg != nil {
		tc := tls.Client(c, tlsCfg)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS after the PROXY header: %v", err)
		}
		rw = tc
	}
	fmt.Fprintf(rw, "GET %s HTTP/1.1\r\nHost: proxied.test\r\n%sConnection: close\r\n\r\n", path, extra)
	resp, err := http.ReadResponse(bufio.NewReader(rw), nil)
	if err != nil {
		t.Fatalf("response after the PROXY header %q: %v", header, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestProxyProtocolIn: on a listener with proxy_protocol, the client a v1
// or v2 header names is the client everywhere: X-Forwarded-For, the
// trusted-proxy decision, the access log, the client_ip hash key; over
// TLS (the header comes before the ClientHello) and HTTP/2 too.
func TestProxyProtocolIn(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "pp ca")
	leaf := ca.issue(t, leafOpts{names: []string{"proxied.test"}})
	bs := startBackends(t, "a", "b")
	p := poolOf("web", bs...)
	p.Balance = "ip_hash"
	cfg := oneListener(p)
	cfg.Listeners[0].ProxyProtocol = true
	cfg.Listeners[0].TrustedProxies = []string{"127.0.0.1", "10.0.0.0/8"}
	cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "tls", Address: "127.0.0.1:0", Pool: "web",
		ProxyProtocol: true, TLS: &config.TLS{Certificates: []config.Certificate{leaf.write(t, t.TempDir(), "pp")}}})
	logFile := filepath.Join(t.TempDir(), "access.log")
	cfg.AccessLog = config.AccessLog{Path: logFile, Format: "json"}
	s := startSluice(t, cfg)
	addr := s.Addr("public")

	tests := []struct {
		name, header, extra string
		wantXFF             string
	}{
		{"v1, its X-Forwarded-For replaced", "PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\n", "X-Forwarded-For: 1.1.1.1\r\n", "203.0.113.7"},
		{"v2 IPv6", v2Header("[2001:db8::7]:40000", "[2001:db8::1]:80"), "", "2001:db8::7"},
		{"from a trusted proxy, its X-Forwarded-For kept", "PROXY TCP4 10.1.2.3 198.51.100.1 40000 80\r\n", "X-Forwarded-For: 198.51.100.9\r\n", "198.51.100.9, 10.1.2.3"},
		{"LOCAL: the peer", "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", "", "127.0.0.1"},
	}
	for _, tt := range tests {
		resp, body := proxiedGET(t, addr, tt.header, "/echo", tt.extra, nil)
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d", tt.name, resp.StatusCode)
			continue
		}
		if got := parseEcho(t, body).Headers.Get("X-Forwarded-For"); got != tt.wantXFF {
			t.Errorf("%s: X-Forwarded-For %q, want %q", tt.name, got, tt.wantXFF)
		}
	}
	// Expect: 100-continue: the backend decides (its 100 Continue reaches
	// the client, which then sends the body), and the request still names
	// the header's client (the net/http codec once lost it on this path).
	func() {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "PROXY TCP4 203.0.113.9 198.51.100.1 40000 80\r\nPOST /echo HTTP/1.1\r\nHost: proxied.test\r\n"+
			"Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
		br := bufio.NewReader(c)
		interim, err := http.ReadResponse(br, nil)
		if err != nil || interim.StatusCode != 100 {
			t.Fatalf("Expect after a PROXY header: %v, %v; want 100 Continue before the body", interim, err)
		}
		io.WriteString(c, "hello")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("Expect after a PROXY header, the final response: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e := parseEcho(t, string(body))
		if resp.StatusCode != 200 || e.Headers.Get("X-Forwarded-For") != "203.0.113.9" || e.BodyBytes != 5 {
			t.Errorf("Expect after a PROXY header: status %d, X-Forwarded-For %q, %d body bytes; want 200, 203.0.113.9, 5",
				resp.StatusCode, e.Headers.Get("X-Forwarded-For"), e.BodyBytes)
		}
	}()
	// Over TLS: the header, then the handshake.
	resp, body := proxiedGET(t, s.Addr("tls"), "PROXY TCP4 203.0.113.8 198.51.100.1 40000 443\r\n", "/echo", "",
		clientTLS(ca, "proxied.test", "http/1.1"))
	e := parseEcho(t, body)
	if resp.StatusCode != 200 || e.Headers.Get("X-Forwarded-For") != "203.0.113.8" || e.Headers.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("over TLS: status %d, X-Forwarded-For %q, -Proto %q; want 200, 203.0.113.8, https",
			resp.StatusCode, e.Headers.Get("X-Forwarded-For"), e.Headers.Get("X-Forwarded-Proto"))
	}
	// HTTP/2 over TLS: the same front, then the HTTP/2 server.
	h2 := &http2.Transport{DialTLSContext: func(ctx context.Context, network, a string, cfg *tls.Config) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", s.Addr("tls"), 5*time.Second)
		if err != nil {
			return nil, err
		}
		io.WriteString(c, v2Header("198.51.100.77:50000", "198.51.100.1:443"))
		tc := tls.Client(c, clientTLS(ca, "proxied.test", "h2"))
		return tc, tc.HandshakeContext(ctx)
	}}
	defer h2.CloseIdleConnections()
	r, err := (&http.Client{Transport: h2, Timeout: 10 * time.Second}).Get("https://proxied.test/echo")
	if err != nil {
		t.Fatalf("HTTP/2 after a PROXY header: %v", err)
	}
	b2, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if got := parseEcho(t, string(b2)).Headers.Get("X-Forwarded-For"); r.ProtoMajor != 2 || got != "198.51.100.77" {
		t.Errorf("HTTP/2: proto %s, X-Forwarded-For %q; want HTTP/2 and 198.51.100.77", r.Proto, got)
	}
	// ip_hash on the client the header names: each client keeps its
	// backend, and the clients spread over both (all peers are 127.0.0.1).
	seen := map[string]bool{}
	for i := range 16 {
		hdr := fmt.Sprintf("PROXY TCP4 192.0.2.%d 198.51.100.1 40000 80\r\n", i+1)
		var first string
		for j := range 3 {
			resp, _ := proxiedGET(t, addr, hdr, "/", "", nil)
			got := resp.Header.Get("X-Backend")
			if j == 0 {
				first = got
			} else if got != first {
				t.Errorf("client 192.0.2.%d went to %s, then %s", i+1, first, got)
			}
		}
		seen[first] = true
	}
	if len(seen) != 2 {
		t.Errorf("16 clients of ip_hash went to %d backends, want both: the hash must see the header's client", len(seen))
	}
	s.Stop()
	found := false
	for _, l := range accessLines(t, logFile) {
		found = found || l["client"] == "203.0.113.7"
		if l["client"] == "127.0.0.1" && l["path"] != "/echo" {
			t.Errorf("access log line %v names the peer, not the client of the header", l)
		}
	}
	if !found {
		t.Errorf("no access log line names client 203.0.113.7")
	}
}

// TestProxyProtocolInRefused: on a listener with proxy_protocol, a
// connection without a valid header, or from a peer outside
// trusted_proxies, is closed without an answer and reaches no backend.
func TestProxyProtocolInRefused(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "a")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].ProxyProtocol = true
	cfg.Listeners[0].Timeouts.ReadHeader = 300 * time.Millisecond
	cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "strict", Address: "127.0.0.1:0", Pool: "web",
		ProxyProtocol: true, TrustedProxies: []string{"10.0.0.0/8"}})
	s := startSluice(t, cfg)
	client := newClient(t)
	before := statsOf(t, client, be).Requests
	for _, tt := range []struct{ addr, send string }{
		{s.Addr("public"), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{s.Addr("public"), "PROXY TCP4 203.0.113.7 198.51.100.1 040000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{s.Addr("public"), "PROXY TCP4 203.0.113.7"}, // then silence: read_header
		{s.Addr("public"), ""},
		{s.Addr("strict"), "PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		c, err := net.DialTimeout("tcp", tt.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, tt.send)
		// Closed with unread bytes, the socket may reset rather than end:
		// either way, not a byte of an answer.
		got, err := io.ReadAll(c)
		c.Close()
		if len(got) != 0 || isTimeoutErr(err) {
			t.Errorf("after %q sluice answered %q (%v), want the connection closed", tt.send, got, err)
		}
	}
	if after := statsOf(t, client, be).Requests; after != before {
		t.Errorf("the backend served %d requests meanwhile, want none", after-before)
	}
}

// proxyBackend is an HTTP/1.1 backend that requires a PROXY header on each
// connection: it answers every request with the header's client and the
// number of the backend connection it came on.
type proxyBackend struct {
	ln    net.Listener
	mu    sync.Mutex
	conns int
	wg    sync.WaitGroup
}

func startProxyBackend(t testing.TB) *proxyBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pb := &proxyBackend{ln: ln}
	pb.wg.Add(1)
	go func() {
		defer pb.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			pb.mu.Lock()
			pb.conns++
			n := pb.conns
			pb.mu.Unlock()
			pb.wg.Add(1)
			go func() {
				defer pb.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				h, err := proxyproto.Read(c)
				if err != nil {
					return
				}
				src := "local"
				if !h.Local {
					src = h.Src.String()
				}
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					body := fmt.Sprintf("v%d %s", h.Version, src)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Conn: %d\r\nContent-Length: %d\r\n\r\n%s", n, len(body), body)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return pb
}

// TestProxyProtocolOut: a pool with send_proxy_protocol begins each backend
// connection with a header naming the client (the one a PROXY header in
// named, when there was one), and a backend connection carries the
// requests of one client connection only (engine h1 keeps it for that
// client, std uses one per request).
func TestProxyProtocolOut(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			pb := startProxyBackend(t)
			p := config.Pool{Name: "web", SendProxyProtocol: v, Backends: []config.Backend{{Address: "http://" + pb.ln.Addr().String()}},
				HealthCheck: &config.HealthCheck{Path: "/health", Interval: time.Second, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}}
			cfg := oneListener(p)
			cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "pp", Address: "127.0.0.1:0", Pool: "web", ProxyProtocol: true})
			s := startSluice(t, cfg)
			connOf := map[string]string{} // backend connection → the client it carried
			for i := range 3 {
				c, err := net.DialTimeout("tcp", s.Addr("public"), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				me := c.LocalAddr().String()
				for j := range 3 {
					fmt.Fprintf(c, "GET /%d/%d HTTP/1.1\r\nHost: x\r\n\r\n", i, j)
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("client %d request %d: %v", i, j, err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if want := v + " " + me; string(body) != want {
						t.Errorf("client %d request %d: the backend's header said %q, want %q", i, j, body, want)
					}
					conn := resp.Header.Get("X-Conn")
					if prev, ok := connOf[conn]; ok && prev != me {
						t.Errorf("backend connection %s carried requests of %s and %s", conn, prev, me)
					}
					connOf[conn] = me
				}
				c.Close()
			}
			if testEngine != "std" && len(connOf) != 3 {
				t.Errorf("engine h1 used %d backend connections for 3 keep-alive clients, want one each", len(connOf))
			}
			// Through a PROXY header in: the client it named goes on.
			resp, body := proxiedGET(t, s.Addr("pp"), "PROXY TCP4 203.0.113.9 198.51.100.1 41000 80\r\n", "/", "", nil)
			if want := v + " 203.0.113.9:41000"; resp.StatusCode != 200 || body != want {
				t.Errorf("behind a PROXY header: %d %q, want 200 %q", resp.StatusCode, body, want)
			}
		})
	}
}

// isTimeoutErr reports whether err is a deadline that ran out (the peer
// kept the connection open).
func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
