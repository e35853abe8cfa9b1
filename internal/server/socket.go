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
type socket struct {
	ln     net.Listener
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	looped chan struct{} // closed when the accept loop has returned
}

func newSocket(ln net.Listener) *socket {
	s := &socket{ln: ln, conns: make(chan net.Conn), done: make(chan struct{}), looped: make(chan struct{})}
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
			case <-s.done:
				return
			}
		}
		backoff = 0
		select {
		case s.conns <- c:
		case <-s.done:
			c.Close()
			return
		}
	}
}

// Addr returns the bound address.
func (s *socket) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting for good and returns once the accept loop has.
func (s *socket) Close() {
	s.once.Do(func() {
		close(s.done)
		s.ln.Close()
	})
	<-s.looped
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
	case <-g.s.done:
		return nil, net.ErrClosed
	}
}

func (g *genListener) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

func (g *genListener) Addr() net.Addr { return g.s.Addr() }
