package h1

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/netlimit"
)

// TestEngineMaxConnectionsKeepsTheSocket: behind the listener's
// max_connections (netlimit), the engine still reaches the TCP socket of
// each client connection, so it splices large bodies, lingers on close and
// peeks at a waiting request (readable); and the limit holds: a third
// connection is served only once one of the first two closes.
func TestEngineMaxConnectionsKeepsTheSocket(t *testing.T) {
	data := randomBytes(1<<20, 9)
	var env *engineEnv
	sockets := make(chan string, 4)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		// While the request is on its way: what the engine holds of each
		// client connection.
		env.engine.mu.Lock()
		for c := range env.engine.conns {
			if c.tcp == nil && c.lc.Load() == nil && !overTLS { // on a loop, the engine holds its descriptor (TLS: no splice on a goroutine)
				sockets <- "a client connection (" + c.nc.RemoteAddr().String() + ") without its TCP socket"
			}
		}
		env.engine.mu.Unlock()
		sockets <- ""
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	})
	s := defaultSetup()
	s.Wrap = func(ln net.Listener) net.Listener { return netlimit.NewListener(ln, 2) }
	env = startEngine(t, s, srv.URL)

	a, b := dialClient(t, env.addr), dialClient(t, env.addr)
	for _, c := range []*testClient{a, b} {
		resp, body := c.get("/big")
		if resp.StatusCode != 200 || !bytes.Equal(body, data) {
			t.Fatalf("GET /big: %d, %d bytes, want 200 and the backend's %d", resp.StatusCode, len(body), len(data))
		}
		if msg := recv(t, sockets, "the backend's look at the engine"); msg != "" {
			t.Fatal(msg)
		}
	}
	env.engine.mu.Lock()
	for c := range env.engine.conns {
		if c.tcp == nil && c.lc.Load() == nil && !overTLS {
			t.Errorf("client connection %s: the engine has no TCP socket (no splice, no lingering close)", c.nc.RemoteAddr())
		}
	}
	env.engine.mu.Unlock()

	// The third connection waits in the accept queue while two are open
	// (over TLS, in its handshake, which its first write makes).
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		nc, err := net.DialTimeout("tcp", env.addr, 5*time.Second)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer nc.Close()
		if overTLS {
			nc = tls.Client(nc, clientTLS(t))
		}
		nc.SetDeadline(ioDeadline(t))
		if _, err := io.WriteString(nc, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			answered <- answer{err: err}
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, body, err}
	}()
	select {
	case a := <-answered:
		t.Fatalf("a third connection was answered (%d, %v) while max_connections 2 were open", a.status, a.err)
	case <-time.After(300 * time.Millisecond):
	}
	// A second request on the first connection, while the third waits.
	resp, body := a.get("/big")
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("second GET /big on the first connection: %d, %d bytes", resp.StatusCode, len(body))
	}
	recv(t, sockets, "the backend's look at the engine")
	b.nc.Close()
	third := recv(t, answered, "the third connection's answer once one closed")
	if third.err != nil || third.status != 200 || !bytes.Equal(third.body, data) {
		t.Fatalf("the third connection, once one closed: %d, %d bytes, %v", third.status, len(third.body), third.err)
	}
	recv(t, sockets, "the backend's look at the engine")
}

// TestReadableThroughMaxConnections: the peek at a client connection's
// next request (Shutdown's readable) sees through a netlimit connection.
func TestReadableThroughMaxConnections(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := netlimit.NewListener(tl, 1)
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if readable(sc) {
		t.Fatal("readable before the client sent anything")
	}
	cc.Write([]byte("GET / HTTP/1.1\r\n"))
	waitFor(t, "the client's bytes to be readable on the accepted connection", func() bool { return readable(sc) })
}
