package e2e

import (
	"context"
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
