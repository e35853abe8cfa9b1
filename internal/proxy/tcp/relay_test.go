package tcp

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// relayed sets up client ⇄ [relay] ⇄ backend over loopback sockets and
// returns the outer ends and the relay, running; ended receives its end.
func relayed(t *testing.T, idle time.Duration) (client, backend *net.TCPConn, r *relay, ended chan string) {
	t.Helper()
	client, sc := tcpPair(t)
	sb, backend := tcpPair(t)
	r = &relay{client: sc, backend: sb, clientTCP: sc, backendTCP: sb, idle: idle,
		toBackend: new(atomic.Uint64), toClient: new(atomic.Uint64)}
	ended = make(chan string, 1)
	go func() { ended <- r.run() }()
	return client, backend, r, ended
}

// pipes counts the pipes this process holds open: Go's splice moves bytes
// through a pipe, so a relay that splices holds one while bytes wait.
func pipes(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// TestRelaySplices: between two sockets, bytes move with splice(2): while
// the backend does not read, the relay holds a kernel pipe with bytes in
// it (a copy through user space would hold none); then every byte arrives
// in order, and the counters say how many.
func TestRelaySplices(t *testing.T) {
	before := pipes(t)
	client, backend, r, ended := relayed(t, 0)
	data := make([]byte, 4<<20)
	rand.Read(data)
	wrote := make(chan error, 1)
	go func() {
		_, err := client.Write(data)
		client.CloseWrite()
		wrote <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for pipes(t) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("no pipe in use while 4 MiB wait to be relayed: the relay does not splice")
		}
		time.Sleep(5 * time.Millisecond)
	}
	backend.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(backend)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the backend read %d bytes (%v), want the 4 MiB sent, in order", len(got), err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	backend.Close()
	if end := <-ended; end != EndClient {
		t.Errorf("end = %q, want %q", end, EndClient)
	}
	if r.in.Load() != int64(len(data)) || r.toBackend.Load() != uint64(len(data)) {
		t.Errorf("counted %d (backend counter %d) bytes in, want %d", r.in.Load(), r.toBackend.Load(), len(data))
	}
}

// TestRelayHalfClose: the client's half-close reaches the backend as EOF,
// and what the backend sends after it still reaches the client.
func TestRelayHalfClose(t *testing.T) {
	client, backend, r, ended := relayed(t, 0)
	client.Write([]byte("question"))
	client.CloseWrite()
	backend.SetDeadline(time.Now().Add(10 * time.Second))
	q, err := io.ReadAll(backend)
	if err != nil || string(q) != "question" {
		t.Fatalf("backend read %q, %v; want question then EOF", q, err)
	}
	backend.Write([]byte("answer after your FIN"))
	backend.CloseWrite()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	a, err := io.ReadAll(client)
	if err != nil || string(a) != "answer after your FIN" {
		t.Fatalf("client read %q, %v", a, err)
	}
	if end := <-ended; end != EndClient {
		t.Errorf("end = %q, want %q", end, EndClient)
	}
	if r.out.Load() != int64(len(a)) {
		t.Errorf("out = %d, want %d", r.out.Load(), len(a))
	}
}

// TestRelayIdle: a connection on which one side streams while the other is
// silent is not idle (the kernel says when each socket last received);
// once nothing moves for the idle timeout it is closed as idle.
func TestRelayIdle(t *testing.T) {
	if !haveTCPInfo() {
		t.Skip("the idle timeout needs TCP_INFO (Linux)")
	}
	const idle = time.Second
	client, backend, _, ended := relayed(t, idle)
	for i := range 25 { // 2.5 s of a trickle from the backend, the client silent
		if _, err := backend.Write([]byte{byte('a' + i%26)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		select {
		case end := <-ended:
			t.Fatalf("the relay ended (%s) after %d bytes while the backend was sending", end, i)
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case end := <-ended:
		if end != EndIdle {
			t.Errorf("end = %q, want %q", end, EndIdle)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a silent connection was not closed as idle")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(client)
	if len(got) != 25 {
		t.Errorf("the client read %d bytes of the trickle, want 25", len(got))
	}
}

// haveTCPInfo reports whether lastReceived works on this system.
func haveTCPInfo() bool {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return false
	}
	defer c.Close()
	_, ok := lastReceived(c.(*net.TCPConn))
	return ok
}
