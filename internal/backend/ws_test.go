package backend

import (
	"bytes"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

func dialWS(t *testing.T, b *testBackend) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(testContext(t), "ws"+strings.TrimPrefix(b.url, "http")+"/ws",
		&websocket.DialOptions{HTTPHeader: map[string][]string{"Origin": {"https://elsewhere.example"}}})
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(-1)
	if got := resp.Header.Get("X-Backend"); got != "b1" {
		t.Errorf("X-Backend on the handshake: got %q, want b1", got)
	}
	return c
}

func TestWebSocketEcho(t *testing.T) {
	b := startBackend(t, "b1")
	c := dialWS(t, b)
	ctx := testContext(t)
	messages := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello")},
		{websocket.MessageBinary, []byte{0, 1, 2, 255}},
		{websocket.MessageText, bytes.Repeat([]byte("x"), 100_000)},
		{websocket.MessageText, []byte{}},
	}
	for i, m := range messages {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: read: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(data, m.data) {
			t.Errorf("message %d: got %v of %d bytes, want %v of %d bytes", i, typ, len(data), m.typ, len(m.data))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
	if got := b.Stats().WebSockets; got != 1 {
		t.Errorf("websockets: got %d, want 1", got)
	}
}

func TestWebSocketMessageTooBig(t *testing.T) {
	b := startBackend(t, "b1")
	c := dialWS(t, b)
	ctx := testContext(t)
	_ = c.Write(ctx, websocket.MessageBinary, make([]byte, wsReadLimit+1))
	_, _, err := c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Errorf("read after an oversized message: got %v (status %v), want status %v", err, got, websocket.StatusMessageTooBig)
	}
}

func TestShutdownClosesWebSocketsGoingAway(t *testing.T) {
	b := startBackend(t, "b1")
	c := dialWS(t, b)
	ctx := testContext(t)
	if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- b.stop() }()
	_, _, err := c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("read during shutdown: got %v (status %v), want status %v", err, got, websocket.StatusGoingAway)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Serve: got %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after shutdown")
	}
}
