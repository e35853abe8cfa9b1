package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestListenerMaxConnections: limits.max_connections bounds a listener's
// open connections (a connection past it waits in the accept queue until
// one closes), and what sees the socket beneath still works behind it: an
// h2c listener tells HTTP/2 prior knowledge from HTTP/1.1 by peeking at
// it.
func TestListenerMaxConnections(t *testing.T) {
	be := startBackend(t, "b1")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].H2C = true
	cfg.Listeners[0].Limits.MaxConnections = 2
	s := startSluice(t, cfg)
	addr := s.Addr("public")

	h2 := h2cClient(t)
	resp, err := h2.Get(s.URL("public") + "/")
	if err != nil {
		t.Fatalf("HTTP/2 prior knowledge on an h2c listener with max_connections: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.HasPrefix(string(body), "Hello from b1") {
		t.Fatalf("HTTP/2 prior knowledge on an h2c listener with max_connections: %s %d %q",
			resp.Proto, resp.StatusCode, body)
	}
	h2.CloseIdleConnections() // its slot frees once sluice sees the close

	// Two HTTP/1.1 connections, each answered once and kept open, hold
	// both slots: a third is answered only once one of them closes.
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	dial := func() client {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		return client{c, bufio.NewReader(c)}
	}
	answered := func(cl client, d time.Duration) error {
		resp, _, err := c9ReadResponse(cl.c, cl.br, http.MethodGet, d)
		if err == nil && resp.StatusCode != 200 {
			t.Errorf("GET / got %d, want 200", resp.StatusCode)
		}
		return err
	}
	first, second := dial(), dial()
	for _, cl := range []client{first, second} {
		if err := answered(cl, 5*time.Second); err != nil {
			t.Fatalf("one of the first two connections: %v", err)
		}
	}
	third := dial()
	if err := answered(third, 300*time.Millisecond); err == nil {
		t.Fatal("a third connection was answered while max_connections 2 were open")
	} else if !c9IsTimeout(err) {
		t.Fatalf("the third connection, while 2 were open: %v, want it to wait", err)
	}
	first.c.Close()
	if err := answered(third, 5*time.Second); err != nil {
		t.Fatalf("the third connection, once one of the two closed: %v", err)
	}
}
