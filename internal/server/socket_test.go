package server

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// oneConnListener accepts one connection, then nothing until closed.
type oneConnListener struct {
	conn     net.Conn
	given    chan struct{} // closed once conn was returned
	closed   chan struct{}
	once     sync.Once
	accepted bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.accepted {
		l.accepted = true
		close(l.given)
		return l.conn, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestSocketCloseHandsOverWhatItAccepted: a connection the accept loop
// holds when the socket closes goes to the generation that serves, not to
// the floor (after an upgrade, the client would see a reset).
func TestSocketCloseHandsOverWhatItAccepted(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	ln := &oneConnListener{conn: server, given: make(chan struct{}), closed: make(chan struct{})}
	s := newSocket(ln)
	<-ln.given
	gen := s.generation()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	time.Sleep(50 * time.Millisecond) // Close has begun
	c, err := gen.Accept()
	if err != nil || c != server {
		t.Fatalf("Accept after Close began: %v, %v; want the connection accepted before", c, err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return once the connection was handed over")
	}
	if _, err := gen.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// TestSocketCloseGivesUpWithoutATaker: with no generation accepting, Close
// closes the connection it holds after handoffWait instead of hanging.
func TestSocketCloseGivesUpWithoutATaker(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	ln := &oneConnListener{conn: server, given: make(chan struct{}), closed: make(chan struct{})}
	s := newSocket(ln)
	<-ln.given
	start := time.Now()
	s.Close()
	if d := time.Since(start); d < handoffWait || d > handoffWait+2*time.Second {
		t.Errorf("Close took %v, want about handoffWait (%v)", d, handoffWait)
	}
	client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("the connection nobody took is still open")
	}
}
