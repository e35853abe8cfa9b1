package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"

	"github.com/sluice-lb/sluice/internal/config"
)

// This file: work in flight when a listener stops accepting (a shutdown,
// an upgrade) is finished, not dropped: a TLS handshake under way, and
// WebSockets (see also upgrade_test.go).

// splitHello is a client connection whose first write (the TLS
// ClientHello) goes out in two parts: the first n bytes at once, the rest
// once gate is closed. sent is closed when the first part is out.
type splitHello struct {
	net.Conn
	n     int
	gate  <-chan struct{}
	sent  chan struct{}
	first sync.Once
}

func (c *splitHello) Write(p []byte) (int, error) {
	written, split := 0, false
	var err error
	c.first.Do(func() {
		split = true
		written, err = c.Conn.Write(p[:min(c.n, len(p))])
		close(c.sent)
		if err != nil {
			return
		}
		<-c.gate
		var m int
		m, err = c.Conn.Write(p[written:])
		written += m
	})
	if split {
		return written, err
	}
	return c.Conn.Write(p)
}

// slowTLSGet opens a TCP connection to addr at once and writes the first
// bytes of its ClientHello; the rest goes out when release is closed.
// Then, over HTTP/1.1 or HTTP/2 as cfg's ALPN decides, it asks for "/" and
// sends the outcome on the channel: nil for a 200 from a backend. It
// returns once the first part of the ClientHello is out.
func slowTLSGet(t *testing.T, addr string, cfg *tls.Config, release <-chan struct{}) <-chan error {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { raw.Close() })
	sc := &splitHello{Conn: raw, n: 20, gate: release, sent: make(chan struct{})}
	tc := tls.Client(sc, cfg)
	out := make(chan error, 1)
	go func() {
		out <- func() error {
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("handshake: %w", err)
			}
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			req, _ := http.NewRequest("GET", "https://"+cfg.ServerName+"/", nil)
			var resp *http.Response
			if tc.ConnectionState().NegotiatedProtocol == "h2" {
				cc, err := (&http2.Transport{}).NewClientConn(tc)
				if err != nil {
					return err
				}
				if resp, err = cc.RoundTrip(req); err != nil {
					return fmt.Errorf("HTTP/2 request: %w", err)
				}
			} else {
				if err := req.Write(tc); err != nil {
					return fmt.Errorf("writing the request: %w", err)
				}
				if resp, err = http.ReadResponse(bufio.NewReader(tc), req); err != nil {
					return fmt.Errorf("reading the response: %w", err)
				}
			}
			return helloOK(resp)
		}()
	}()
	<-sc.sent
	return out
}

// TestTLSHandshakeInFlightIsServed: a client whose ClientHello is still
// arriving when sluice stops accepting (a shutdown, over HTTP/1.1 and
// HTTP/2; a reload that replaces the listener's generation) completes its
// handshake and gets its answer, as a plain HTTP client accepted just
// before would. The upgrade case is in TestProcessUpgradeLetsWorkInFlightFinish.
func TestTLSHandshakeInFlightIsServed(t *testing.T) {
	ca := newTestCA(t, "sluice e2e CA")
	dir := t.TempDir()
	cert := ca.issue(t, leafOpts{names: []string{"shop.example.com"}}).write(t, dir, "shop")
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			b := startBackend(t, "b1")
			s := startSluice(t, tlsListenerConfig(&config.TLS{Certificates: []config.Certificate{cert}}, poolOf("web", b)))
			addr := s.Addr("public")
			release := make(chan struct{})
			result := slowTLSGet(t, addr, clientTLS(ca, "shop.example.com", proto), release)
			// sluice's accept loop must have taken the connection: one
			// still in the kernel's accept queue is closed with the socket.
			waitAccepted(t, addr)
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				s.Stop()
			}()
			eventually(t, 10*time.Second, "sluice stops accepting", func() bool {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					c.Close()
				}
				return err != nil
			})
			close(release)
			if err := <-result; err != nil {
				t.Errorf("the client whose handshake was under way at shutdown: %v, want its answer", err)
			}
			<-stopped
		})
	}
	// A reload that changes the listener's timeouts replaces its server
	// generation on the same socket: the old one, which accepted the
	// connection, finishes the handshake and serves it.
	t.Run("reload", func(t *testing.T) {
		b := startBackend(t, "b1")
		file := filepath.Join(dir, "sluice.yaml")
		yaml := func(readHeader string) string {
			return withEngineYAML(fmt.Sprintf("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n"+
				"    tls: {certificates: [{cert: %q, key: %q}]}\n    timeouts: {read_header: %s}\n"+
				"pools:\n  - name: web\n    backends: [{address: %q}]\n"+
				"admin: {address: \"127.0.0.1:0\"}\naccess_log: {format: off}\n", cert.Cert, cert.Key, readHeader, b.URL()))
		}
		if err := os.WriteFile(file, []byte(yaml("10s")), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		s := startSluice(t, cfg)
		release := make(chan struct{})
		result := slowTLSGet(t, s.Addr("public"), clientTLS(ca, "shop.example.com", "http/1.1"), release)
		waitAccepted(t, s.Addr("public")) // the old generation has it
		if err := os.WriteFile(file, []byte(yaml("9s")), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.srv.Reload(); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		close(release)
		if err := <-result; err != nil {
			t.Errorf("the client whose handshake was under way at the reload: %v, want its answer", err)
		}
	})
}

// wsEcho sends msg on a WebSocket through sluice to the backend's /ws and
// checks that it comes back.
func wsEcho(ctx context.Context, c *websocket.Conn, msg string) error {
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return fmt.Errorf("write %q: %w", msg, err)
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("read the echo of %q: %w", msg, err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo of %q: got %q", msg, got)
	}
	return nil
}

// TestProcessUpgradeLetsWorkInFlightFinish: during a SIGUSR2 upgrade of
// the real binary, the old process finishes what it had: a TLS client
// whose ClientHello is still arriving when the old process stops accepting
// completes its handshake and gets its answer; WebSockets opened before
// the upgrade keep exchanging messages after the new process serves, until
// the client closes one, and the other gets a close frame (1001, going
// away) at shutdown_timeout; a SIGHUP meanwhile is ignored; then the old
// process exits 0.
func TestProcessUpgradeLetsWorkInFlightFinish(t *testing.T) {
	needBinary(t)
	becomeSubreaper(t)
	dir := t.TempDir()
	ca := newTestCA(t, "sluice e2e CA")
	cert := ca.issue(t, leafOpts{names: []string{"shop.example.com"}}).write(t, dir, "shop")
	b := startBackend(t, "b1")
	p := startUpgradable(t, dir, binary, fmt.Sprintf("listeners:\n  - name: public\n    address: \"127.0.0.1:0\"\n    pool: web\n"+
		"  - name: secure\n    address: \"127.0.0.1:0\"\n    pool: web\n    tls: {certificates: [{cert: %q, key: %q}]}\n"+
		"pools:\n  - name: web\n    backends: [{address: %q}]\n"+
		"admin: {address: \"127.0.0.1:0\"}\naccess_log: {format: off}\nshutdown_timeout: 5s\n", cert.Cert, cert.Key, b.URL()))
	public, secure := p.addr("public"), p.addr("secure")
	pid1 := p.pid(0)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func() *websocket.Conn {
		t.Helper()
		c, _, err := websocket.Dial(ctx, "ws://"+public+"/ws", &websocket.DialOptions{HTTPClient: newClient(t)})
		if err != nil {
			t.Fatalf("WebSocket through sluice: %v", err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	closedByClient, closedBySluice := dial(), dial()
	for _, c := range []*websocket.Conn{closedByClient, closedBySluice} {
		if err := wsEcho(ctx, c, "before"); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	result := slowTLSGet(t, secure, clientTLS(ca, "shop.example.com", "http/1.1"), release)
	waitAccepted(t, secure) // by the old process

	p.Process.Signal(syscall.SIGUSR2)
	pid2 := p.pid(pid1)
	waitStopsListening(t, pid1, secure)
	close(release)
	if err := <-result; err != nil {
		t.Errorf("the TLS client whose handshake was under way at the hand-over: %v, want its answer", err)
	}
	for i := range 3 {
		if err := wsEcho(ctx, closedByClient, fmt.Sprintf("after %d", i)); err != nil {
			t.Fatalf("a WebSocket of the old process after the new one (pid %d) serves: %v", pid2, err)
		}
	}
	if err := closedByClient.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("closing a WebSocket of the old process: %v", err)
	}
	if err := wsEcho(ctx, closedBySluice, "after"); err != nil {
		t.Fatalf("the other WebSocket of the old process after the new one serves: %v", err)
	}
	// A SIGHUP reaching the draining process (logrotate's) is ignored,
	// not its end.
	if err := syscall.Kill(pid1, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(regexp.MustCompile(`msg="reload ignored: this process is shutting down"`))
	_, _, err := closedBySluice.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Errorf("the WebSocket left open ended with %v (close status %d), want a close frame with %d (going away) at shutdown_timeout",
			err, code, websocket.StatusGoingAway)
	}
	p.firstExits("the old process after the upgrade")

	// The new process serves both listeners.
	if err := wsEcho(ctx, dial(), "new"); err != nil {
		t.Errorf("a WebSocket after the upgrade: %v", err)
	}
	if err := getOK(httpsClient(t, secure, clientTLS(ca, "shop.example.com"), false, true), "https://shop.example.com/"); err != nil {
		t.Errorf("HTTPS after the upgrade: %v", err)
	}
	if err := syscall.Kill(pid2, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitPIDExit(t, pid2, 30*time.Second); code != 0 {
		t.Fatalf("the new process exited with %d after SIGTERM, want 0", code)
	}
}

// waitAccepted waits until no connection to the listening socket(s) at
// addr (127.0.0.1:port) waits in the kernel's accept queue: the server has
// accepted every connection made to it so far. Linux shows the queue's
// length as rx_queue of a LISTEN socket in /proc/net/tcp.
func waitAccepted(t *testing.T, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf(":%04X", p)
	eventually(t, 10*time.Second, "the server accepts the connection to "+addr, func() bool {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatalf("the accept queue of %s: %v", addr, err)
		}
		seen := false
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx_queue:rx_queue ...
			f := strings.Fields(line)
			if len(f) < 5 || !strings.HasSuffix(f[1], local) || f[3] != "0A" {
				continue
			}
			seen = true
			if _, rx, _ := strings.Cut(f[4], ":"); strings.TrimLeft(rx, "0") != "" {
				return false
			}
		}
		if !seen {
			t.Fatalf("no listening socket on %s in /proc/net/tcp", addr)
		}
		return true
	})
}
