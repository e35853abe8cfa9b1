package netlimit

import (
	"net"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/proxyproto"
)

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestListenerBoundsOpenConnections: past max open connections Accept
// waits until one is closed (twice closing frees one slot), the socket
// stays reachable beneath (proxyproto.TCP), and Close ends a waiting
// Accept.
func TestListenerBoundsOpenConnections(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(tl, 2)
	accepted := make(chan net.Conn, 4)
	done := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			accepted <- c
		}
	}()
	next := func(what string) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not accepted within 5s", what)
			return nil
		}
	}
	for range 3 {
		dial(t, ln.Addr().String())
	}
	a, b := next("first"), next("second")
	for _, c := range []net.Conn{a, b} {
		tc := proxyproto.TCP(c)
		if tc == nil {
			t.Fatalf("proxyproto.TCP(%T) = nil, want the socket beneath", c)
		}
		if _, ok := c.(interface{ CloseWrite() error }); !ok {
			t.Errorf("%T has no CloseWrite", c)
		}
	}
	select {
	case c := <-accepted:
		t.Fatalf("a third connection (%s) was accepted while 2 were open", c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
	a.Close()
	a.Close() // a second Close frees nothing more
	third := next("third, once one closed")
	dial(t, ln.Addr().String())
	select {
	case c := <-accepted:
		t.Fatalf("a fourth connection (%s) was accepted while 2 were open", c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
	ln.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Accept returned no error after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waits for a slot 5s after Close")
	}
	b.Close()
	third.Close()
}

// TestSlotOutlivesItsConnection: a slot taken from a connection (Slot)
// is freed by closing the slot (once, however often), not the connection.
func TestSlotOutlivesItsConnection(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(tl, 1)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	accept := func(what string, want bool) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			if !want {
				t.Fatalf("%s: a connection (%s) was accepted while the slot was held", what, c.RemoteAddr())
			}
			return c
		case <-time.After(map[bool]time.Duration{true: 5 * time.Second, false: 200 * time.Millisecond}[want]):
			if want {
				t.Fatalf("%s: not accepted within 5s", what)
			}
			return nil
		}
	}
	for range 5 {
		dial(t, ln.Addr().String())
	}
	c := accept("first", true)
	slot := c.(*Conn).Slot()
	c.Close()
	accept("after the connection closed, its slot taken", false)
	slot.Close()
	second := accept("after the slot closed", true)
	slot.Close() // a second Close frees nothing more
	accept("after the slot closed twice", false)
	second.Close()
	third := accept("after the second connection closed", true)
	third.Close()
	third.(*Conn).Slot().Close() // taken after its Close: frees nothing more
	accept("after a slot taken from a closed connection closed", true)
	accept("with one slot and one connection open", false)
}
