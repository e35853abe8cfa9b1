package h1

import (
	"context"
	"net"
	"net/http"
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
	time.Sleep(50 * time.Millisecond) // Shutdown has begun and closed the listener
	close(held.release)
	resp, body := c.get("/")
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("request on a connection accepted before Shutdown: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if err := recv(t, shut, "Shutdown to return"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
