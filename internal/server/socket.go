package server

import (
	"errors"
	"net"
	"sync"
	"time"
)

// socket is one bound listening socket that outlives reloads. A single
// accept loop hands connections to whichever server generation is current,
// so a reload that changes a listener's timeouts or limits starts a new
// http.Server on the same socket while the old one drains: no connection is
// refused or dropped in between.
//
// Close stops accepting, but a connection the loop has already accepted is
// still handed to the generation that serves (the kernel completed its
// handshake: the client is about to send, and after an upgrade the new
// process accepts everything not yet taken). Only when no generation takes
// it within handoffWait is it closed.
type socket struct {
	ln      net.Listener
	conns   chan net.Conn
	once    sync.Once     // closes ln
	abandon chan struct{} // closed when Close gives up handing over
	gaveUp  sync.Once
	looped  chan struct{} // closed when the accept loop has returned
}

// handoffWait bounds how long Close waits for a generation to take the
// connection the loop holds (one whose accept loop is blocked, e.g. at
// max_connections, takes nothing).
const handoffWait = time.Second

func newSocket(ln net.Listener) *socket {
	s := &socket{ln: ln, conns: make(chan net.Conn), abandon: make(chan struct{}), looped: make(chan struct{})}
	go func() {
		defer close(s.looped)
		s.loop()
	}()
	return s
}

func (s *socket) loop() {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-s.abandon:
				return
			}
		}
		backoff = 0
		select {
		case s.conns <- c:
		case <-s.abandon:
			c.Close()
			return
		}
	}
}

// Addr returns the bound address.
func (s *socket) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting for good and returns once the accept loop has,
// after handing over what it had accepted (see socket).
func (s *socket) Close() {
	s.once.Do(func() { s.ln.Close() })
	select {
	case <-s.looped:
	case <-time.After(handoffWait):
		s.gaveUp.Do(func() { close(s.abandon) })
		<-s.looped
	}
}

// generation returns a listener for one server generation; closing it
// leaves the socket open for the next.
func (s *socket) generation() net.Listener {
	return &genListener{s: s, closed: make(chan struct{})}
}

type genListener struct {
	s      *socket
	closed chan struct{}
	once   sync.Once
}

func (g *genListener) Accept() (net.Conn, error) {
	// Once closed, take nothing more, even when a connection is waiting:
	// it is the next generation's.
	select {
	case <-g.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-g.s.conns:
		return c, nil
	case <-g.closed:
		return nil, net.ErrClosed
	case <-g.s.looped: // the socket closed and the loop handed over all it had
		return nil, net.ErrClosed
	}
}

func (g *genListener) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

func (g *genListener) Addr() net.Addr { return g.s.Addr() }
