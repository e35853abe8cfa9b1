package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// When Run returns, sluice has closed its connections to backends too: a
// backend that outlives it sees every connection from it closed, and no
// keep-alive connection (with its two net/http goroutines) is left behind.
func TestShutdownClosesUpstreamConnections(t *testing.T) {
	var open atomic.Int64
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "outlives")
		w.Write([]byte("ok\n"))
	}))
	be.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)

	s := startSluice(t, oneListener(poolAt("web", be.URL)))
	c := newClient(t)
	for range 3 {
		if r := get(t, c, s.URL("public")+"/"); r.Status != 200 {
			t.Fatalf("status %d, want 200", r.Status)
		}
	}
	if n := open.Load(); n == 0 {
		t.Fatal("the backend has no open connection from sluice: nothing to test")
	}
	c.CloseIdleConnections()
	s.Stop()
	eventually(t, 5*time.Second, "after Run returned, the backend sees no connection from sluice left open", func() bool {
		return open.Load() == 0
	})
}

// DESIGN: on shutdown sluice closes WebSockets with a close frame, so a
// client learns that the server went away rather than seeing a broken
// connection.
func TestShutdownClosesWebSocketsWithACloseFrame(t *testing.T) {
	b := startBackend(t, "ws")
	s := startSluice(t, oneListener(poolOf("web", b)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+s.Addr("public")+"/ws", &websocket.DialOptions{HTTPClient: newClient(t)})
	if err != nil {
		t.Fatalf("dial ws through sluice: %v", err)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, _, err := conn.Read(ctx); err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.Stop()
	}()
	_, _, err = conn.Read(ctx)
	if err == nil {
		t.Fatal("read a message after shutdown began, want the connection closed")
	}
	if code := websocket.CloseStatus(err); code == -1 {
		t.Errorf("the WebSocket ended without a close frame: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s")
	}
}

// An HTTP/2 connection still busy when shutdown_timeout ends is closed,
// whichever server serves it (on an event loop: engine loop, the default;
// on its goroutine: engine h1), and Run returns: the client's request
// fails rather than hanging.
func TestShutdownTimeoutClosesHTTP2Connections(t *testing.T) {
	for _, engine := range []string{"loop", "h1"} {
		t.Run(engine, func(t *testing.T) {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			entered := make(chan struct{}, 1)
			be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			t.Cleanup(be.Close)
			cfg := oneListener(poolAt("web", be.URL))
			cfg.Listeners[0].H2C = true
			cfg.Listeners[0].Engine = engine
			cfg.ShutdownTimeout = 300 * time.Millisecond
			s := startSluice(t, cfg)
			failed := make(chan error, 1)
			go func() {
				// No timeout of the client's own: the shutdown must end it.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", s.URL("public")+"/slow", nil)
				c := h2cClient(t)
				c.Timeout = 0
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				failed <- err
			}()
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the request did not reach the backend")
			}
			s.Stop() // fails the test if Run does not return within 20 s
			select {
			case err := <-failed:
				if err == nil {
					t.Fatal("the request succeeded, want it cut off by the shutdown")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the client still waits 10 s after Run returned")
			}
		})
	}
}
