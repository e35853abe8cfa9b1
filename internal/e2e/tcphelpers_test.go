package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// echoServer is a raw TCP backend on 127.0.0.1: it greets each connection
// with "NAME\n", then echoes every byte; when the client half-closes, it
// writes "bye NAME\n" and closes. With proxy set it first reads a PROXY
// protocol header (refusing a connection without one) and greets with
// "NAME SRC\n", SRC the client the header named ("local" when none).
// With tls set it speaks TLS with that certificate.
type echoServer struct {
	t     testing.TB
	Name  string
	Addr  string
	proxy bool
	tls   *tls.Config

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]struct{}
	headers  []proxyproto.Header // what each connection's PROXY header said
	accepted atomic.Int64
	wg       sync.WaitGroup
}

type echoOpts struct {
	proxy bool
	tls   *tls.Config
}

func startEcho(t testing.TB, name string, o echoOpts) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{t: t, Name: name, Addr: ln.Addr().String(), proxy: o.proxy, tls: o.tls, conns: map[net.Conn]struct{}{}}
	e.serve(ln)
	t.Cleanup(e.Kill)
	return e
}

// URL is the backend's address in a tcp pool.
func (e *echoServer) URL() string { return "tcp://" + e.Addr }

func (e *echoServer) serve(ln net.Listener) {
	e.mu.Lock()
	e.ln = ln
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.mu.Lock()
			e.conns[c] = struct{}{}
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer func() {
					e.mu.Lock()
					delete(e.conns, c)
					e.mu.Unlock()
					c.Close()
				}()
				e.echo(c)
			}()
		}
	}()
}

func (e *echoServer) echo(c net.Conn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	greet := e.Name
	if e.proxy {
		h, err := proxyproto.Read(c)
		if err != nil {
			return
		}
		e.mu.Lock()
		e.headers = append(e.headers, h)
		e.mu.Unlock()
		if h.Local {
			greet += " local"
		} else {
			greet += " " + h.Src.String()
		}
	}
	var rw io.ReadWriter = c
	if e.tls != nil {
		tc := tls.Server(c, e.tls)
		if tc.Handshake() != nil {
			return
		}
		rw = tc
	}
	if _, err := io.WriteString(rw, greet+"\n"); err != nil {
		return
	}
	if _, err := io.Copy(rw, rw); err != nil {
		return
	}
	io.WriteString(rw, "bye "+e.Name+"\n")
	if tc, ok := rw.(*tls.Conn); ok {
		tc.CloseWrite()
	}
}

// Kill closes the listener and every open connection, as a crash would.
func (e *echoServer) Kill() {
	e.mu.Lock()
	if e.ln != nil {
		e.ln.Close()
	}
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// Headers returns the PROXY headers received so far.
func (e *echoServer) Headers() []proxyproto.Header {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]proxyproto.Header(nil), e.headers...)
}

// tcpConn is a client connection to an echo backend through sluice.
type tcpConn struct {
	t     testing.TB
	c     net.Conn
	r     *bufio.Reader
	greet string
}

// dialEcho connects to addr, sends pre (a PROXY header, say) first, and
// reads the backend's greeting.
func dialEcho(t testing.TB, addr, pre string) *tcpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return greeted(t, c, pre)
}

// greeted reads the greeting on an open connection.
func greeted(t testing.TB, c net.Conn, pre string) *tcpConn {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if pre != "" {
		if _, err := io.WriteString(c, pre); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	tc := &tcpConn{t: t, c: c, r: bufio.NewReader(c)}
	g, err := tc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the greeting through %s: %v (got %q)", c.RemoteAddr(), err, g)
	}
	tc.greet = strings.TrimSuffix(g, "\n")
	return tc
}

// echo sends msg and checks it comes back.
func (tc *tcpConn) echo(msg string) error {
	tc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(tc.c, msg); err != nil {
		return fmt.Errorf("write %d bytes: %w", len(msg), err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(tc.r, got); err != nil {
		return fmt.Errorf("read the echo of %d bytes: %w", len(msg), err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo differs from what was sent (%d bytes)", len(msg))
	}
	return nil
}

// finish half-closes the connection and reads what follows until EOF.
func (tc *tcpConn) finish() (string, error) {
	tc.c.SetDeadline(time.Now().Add(10 * time.Second))
	switch c := tc.c.(type) {
	case *net.TCPConn:
		c.CloseWrite()
	case *tls.Conn:
		c.CloseWrite()
	}
	rest, err := io.ReadAll(tc.r)
	return string(rest), err
}

// tcpConfig is a config with one tcp listener "l4" on 127.0.0.1:0 whose
// default pool is the first of pools.
func tcpConfig(pools ...config.Pool) *config.Config {
	return &config.Config{
		Listeners:       []config.Listener{{Name: "l4", Address: "127.0.0.1:0", Protocol: "tcp", Pool: pools[0].Name}},
		Pools:           pools,
		Admin:           config.Admin{Address: "127.0.0.1:0"},
		ShutdownTimeout: 5 * time.Second,
	}
}

// tcpPool is a round robin pool of echo backends.
func tcpPool(name string, es ...*echoServer) config.Pool {
	p := config.Pool{Name: name, Balance: "round_robin"}
	for _, e := range es {
		p.Backends = append(p.Backends, config.Backend{Address: e.URL()})
	}
	return p
}
