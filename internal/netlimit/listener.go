// Package netlimit bounds the connections a listener keeps open
// (limits.max_connections) without hiding the socket from the codecs.
package netlimit

import (
	"io"
	"net"
	"sync"
)

// Listener bounds the open connections of the listener beneath: like
// HAProxy's maxconn, past the limit Accept waits, leaving new connections
// in the kernel's accept queue, until one of those it returned closes.
// Unlike golang.org/x/net/netutil.LimitListener it returns a TCP
// connection as a *Conn, which embeds the *net.TCPConn and names it (TCP),
// so that the codecs above still splice(2), half-close and peek at the
// socket (see proxyproto.TCP).
type Listener struct {
	net.Listener
	sem    chan struct{}
	closed chan struct{}
	once   sync.Once
}

// NewListener returns ln bounded to max open connections (max > 0).
func NewListener(ln net.Listener, max int) *Listener {
	return &Listener{Listener: ln, sem: make(chan struct{}, max), closed: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &Conn{TCPConn: tc, l: l}, nil
	}
	return &otherConn{Conn: c, l: l}, nil
}

// Close closes the listener beneath and ends an Accept waiting for a slot.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *Listener) release() { <-l.sem }

// Conn is a TCP connection that holds one of its listener's slots until it
// is closed. Its bytes are the socket's: it only counts.
type Conn struct {
	*net.TCPConn
	l    *Listener
	once sync.Once
}

// Close closes the connection and frees its slot (once).
func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.l.release)
	return err
}

// TCP returns the socket.
func (c *Conn) TCP() *net.TCPConn { return c.TCPConn }

// Slot takes the connection's slot from it, for a caller that serves a
// duplicate of the socket and closes this one: closing what Slot returns
// frees the slot (once), and closing c no longer does. What it returns
// holds neither c nor its socket, so they can be collected while the
// duplicate lives (an idle connection on an event loop). Taken from a
// connection already closed, it frees nothing.
func (c *Conn) Slot() io.Closer {
	s := &slot{l: c.l}
	taken := false
	c.once.Do(func() { taken = true })
	if !taken {
		s.once.Do(func() {}) // c's Close freed it already
	}
	return s
}

// slot is a listener's slot apart from its connection (Conn.Slot).
type slot struct {
	l    *Listener
	once sync.Once
}

func (s *slot) Close() error {
	s.once.Do(s.l.release)
	return nil
}

// NetConn returns the socket, as tls.Conn's NetConn does.
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

// otherConn is a connection of another kind, counted alike.
type otherConn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *otherConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.release)
	return err
}
