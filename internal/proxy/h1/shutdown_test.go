package h1

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// heldListener holds each accepted connection until released, so that a
// test can begin Shutdown between the accept and the engine's taking it.
type heldListener struct {
	net.Listener
	got     chan struct{}
	release chan struct{}
}

func (l *heldListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.got <- struct{}{}
	<-l.release
	return c, nil
}

// TestShutdownServesAConnectionAcceptedBefore: a connection accepted just
// before Shutdown closed the listener is served (its client sent a
// request), not closed: after an upgrade the client would see EOF.
func TestShutdownServesAConnectionAcceptedBefore(t *testing.T) {
	skipOverTLS(t, "the test holds the listener's Accept, beneath the TLS handshake (the front's own tests cover TLS)")
	be, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	held := &heldListener{got: make(chan struct{}, 1), release: make(chan struct{})}
	s := defaultSetup()
	s.Wrap = func(ln net.Listener) net.Listener { held.Listener = ln; return held }
	env := startEngine(t, s, be.URL)

	c := dialClient(t, env.addr)
	<-held.got // accepted, not yet the engine's
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- env.engine.Shutdown(ctx)
	}()
	waitFor(t, "Shutdown to begin", env.engine.shutting.Load)
	close(held.release)
	resp, body := c.get("/")
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("request on a connection accepted before Shutdown: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if err := recv(t, shut, "Shutdown to return"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestShutdownServesTheRequestSentBeforeItCloses: Shutdown begins while a
// response is on its way, after its head said keep-alive; the client has
// sent its next request meanwhile, in good faith. That request is served
// (with "Connection: close"), not dropped with a reset: a reload or an
// upgrade must lose no request a client sent.
func TestShutdownServesTheRequestSentBeforeItCloses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pipelined bool // the next request goes with the first, else after its head arrived
	}{
		{"sent after the head", false},
		{"pipelined", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, gate := slowFirstBackend(t)
			env := startEngine(t, defaultSetup(), be.URL)
			c := dialClient(t, env.addr)
			slow := "GET /slow HTTP/1.1\r\nHost: test.example\r\n\r\n"
			next := "GET /next HTTP/1.1\r\nHost: test.example\r\n\r\n"
			if tc.pipelined {
				c.write(slow + next)
			} else {
				c.write(slow)
			}
			if head := parseHead(t, c.rawHead(), "GET"); head.StatusCode != 200 || head.Close {
				t.Fatalf("head of the first response: %d, close %v; want 200, keep-alive", head.StatusCode, head.Close)
			}
			if !tc.pipelined {
				c.write(next)
				// It waits in the engine's socket: the test does not
				// depend on how fast loopback delivers it. (Pipelined, it
				// came in the same segment as the first request.)
				waitFor(t, "the next request to reach the engine", func() bool {
					env.engine.mu.Lock()
					defer env.engine.mu.Unlock()
					for hc := range env.engine.conns {
						if readable(hc.nc) || loopReadable(hc) {
							return true
						}
					}
					return false
				})
			}
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				shut <- env.engine.Shutdown(ctx)
			}()
			waitFor(t, "Shutdown to begin", env.engine.shutting.Load)
			close(gate)

			first := make([]byte, 10)
			if _, err := io.ReadFull(c.br, first); err != nil || string(first) != "first-done" {
				t.Fatalf("body of the first response: %q, %v; want \"first-done\"", first, err)
			}
			resp, body := c.read("GET")
			if resp.StatusCode != 200 || string(body) != "next" {
				t.Fatalf("the request sent before Shutdown closed the connection: %d %q, want 200 \"next\"", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Errorf("the response served during Shutdown says keep-alive, want Connection: close")
			}
			c.expectEOF()
			if err := recv(t, shut, "Shutdown to return"); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		})
	}
}

// slowFirstBackend answers /slow with the head and "first" of a 10-byte
// body, and the rest ("-done") once gate is closed; any other path with
// "next".
func slowFirstBackend(t *testing.T) (*httptest.Server, chan struct{}) {
	gate := make(chan struct{})
	be, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "next")
			return
		}
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "-done")
	})
	return be, gate
}
