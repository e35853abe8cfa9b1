package h1

import (
	"net"
	"runtime"
	"testing"
	"time"
)

// TestServingGoroutineStack: a request in flight, on a connection whose
// goroutine dialed the backend for it, holds a goroutine stack of 4 KiB
// (the class above the 2 KiB a goroutine starts with), not 8 KiB: the dial
// runs on a goroutine of its own (Conns.dial) and handle makes no
// request-sized temporary on the stack. With 10,000 clients connecting, a
// few hundred requests are in flight at once, and their stacks are much of
// the process's peak memory. The backend here runs no goroutine per
// connection: it accepts, reads the request's first byte and holds the
// connection, so the stacks counted are the engine's.
func TestServingGoroutineStack(t *testing.T) {
	skipOverTLS(t, "it counts the stacks of the goroutine engine's requests; TLS handshakes would be counted too")
	const n = 100
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := startEngine(t, defaultSetup(), "http://"+ln.Addr().String())

	runtime.GC()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var clients, held []net.Conn
	defer func() {
		for _, c := range append(clients, held...) {
			c.Close()
		}
	}()
	req := []byte("GET / HTTP/1.1\r\nHost: stack.test\r\n\r\n")
	for range n {
		c, err := net.Dial("tcp", env.addr)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
	}
	// Every request has reached the backend: each engine goroutine has
	// dialed, written its request and waits for the response.
	for range n {
		bc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, bc)
		bc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		if _, err := bc.Read(b[:]); err != nil {
			t.Fatalf("backend read: %v", err)
		}
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	per := (int64(after.StackInuse) - int64(before.StackInuse)) / n
	t.Logf("goroutine stack per request in flight: %d bytes", per)
	limit := int64(6 << 10) // 4 KiB stacks and some slack; 8 KiB ones exceed it
	if raceEnabled {
		limit *= 2 // the race detector's frames are larger: 8 KiB, not 16
	}
	if per > limit {
		t.Errorf("goroutine stack per request in flight = %d bytes, want at most %d", per, limit)
	}
}
