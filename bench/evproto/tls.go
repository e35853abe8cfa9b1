package main

// HTTP/2 over TLS on the loops (-h2-tls-listen): can crypto/tls run on an
// event loop? It has no non-blocking API, but it needs none after the
// handshake: a tls.Conn whose underlying net.Conn returns a temporary
// error from Read keeps the bytes it has and its state (crypto/tls records
// only permanent errors), and reads on when called again; its Write only
// ever calls the underlying Write, which here appends to a buffer the loop
// writes out. The handshake cannot be resumed that way (a failed handshake
// is final), so it runs on a goroutine of its own, with blocking reads and
// writes (poll(2)), once per connection; the goroutine then hands the
// connection to its loop (posted to it: loop.Loop.Post) and ends, and
// from then on every record is read, decrypted, encrypted and written on
// the loop.
//
// Only ALPN h2 is served (the connection is closed otherwise): the
// question is issue 10's HTTP/2-over-TLS figure; HTTPS with HTTP/1.1 is
// left out.

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/sys/unix"
)

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 10 * time.Second

// tlsIO is the net.Conn beneath a tls.Conn: blocking on the handshake's
// goroutine, then non-blocking on the loop.
type tlsIO struct {
	fd       int
	c        *h2client // on the loop: its readiness flags
	blocking bool
	deadline time.Time // of the handshake
	out      []byte    // ciphertext for the socket (on the loop)
	off      int
}

// errWouldBlock is what Read returns on the loop when the socket has no
// more bytes now: a temporary error, which leaves the tls.Conn intact.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "evproto: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

var errHandshakeTimeout = errors.New("evproto: TLS handshake timed out")

func (t *tlsIO) Read(p []byte) (int, error) {
	if t.blocking {
		return t.blockingIO(p, false)
	}
	c := t.c
	if !c.Rd {
		return 0, errWouldBlock
	}
	n, e := loop.Read(t.fd, p)
	if e == unix.EAGAIN {
		c.Rd = false
		return 0, errWouldBlock
	}
	if e != 0 {
		return 0, e
	}
	if n == 0 {
		return 0, io.EOF
	}
	if n < len(p) && !c.Hup {
		c.Rd = false // drained: the next byte brings a new edge
	}
	return n, nil
}

func (t *tlsIO) Write(p []byte) (int, error) {
	if t.blocking {
		return t.blockingIO(p, true)
	}
	t.out = append(t.out, p...)
	return len(p), nil
}

// blockingIO reads into p, or writes all of p, waiting in poll(2) while
// the socket is not ready, until the handshake's deadline.
func (t *tlsIO) blockingIO(p []byte, write bool) (int, error) {
	done := 0
	for {
		var n int
		var err error
		if write {
			n, err = unix.Write(t.fd, p[done:])
		} else {
			n, err = unix.Read(t.fd, p)
		}
		switch {
		case err == nil && !write && n == 0:
			return 0, io.EOF
		case err == nil && !write:
			return n, nil
		case err == nil:
			if done += n; done == len(p) {
				return done, nil
			}
			continue
		case err != unix.EAGAIN && err != unix.EINTR:
			return done, err
		}
		left := time.Until(t.deadline)
		if left <= 0 {
			return done, errHandshakeTimeout
		}
		ev := int16(unix.POLLIN)
		if write {
			ev = unix.POLLOUT
		}
		fds := []unix.PollFd{{Fd: int32(t.fd), Events: ev}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return done, err
		}
	}
}

func (t *tlsIO) Close() error                     { return nil } // the loop closes the descriptor
func (t *tlsIO) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (t *tlsIO) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (t *tlsIO) SetDeadline(time.Time) error      { return nil }
func (t *tlsIO) SetReadDeadline(time.Time) error  { return nil }
func (t *tlsIO) SetWriteDeadline(time.Time) error { return nil }

// tlsListener accepts connections on -h2-tls-listen and starts their
// handshakes.
type tlsListener struct {
	l   *worker
	lfd int
	cfg *tls.Config
}

func (h tlsListener) Event(loop.Events) {
	for {
		fd, peer, ok := h.l.accept(h.lfd)
		if !ok {
			return
		}
		h.l.accepted++
		t := &tlsIO{fd: fd, blocking: true, deadline: time.Now().Add(handshakeTimeout)}
		go h.l.handshake(t, tls.Server(t, h.cfg), peer)
	}
}

func (tlsListener) Fail() {}

// handshake runs the TLS handshake on its own goroutine, then hands the
// connection to the loop.
func (l *worker) handshake(t *tlsIO, tc *tls.Conn, peer netip.Addr) {
	if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
		unix.Close(t.fd)
		return
	}
	if !l.ev.Post(func() { l.adopt(t, tc, peer) }) {
		unix.Close(t.fd) // the loop has closed
	}
}

// adopt takes a connection whose handshake is done onto the loop.
func (l *worker) adopt(t *tlsIO, tc *tls.Conn, peer netip.Addr) {
	t.blocking = false // ordered after the handshake by Post's lock
	c := l.newH2(t.fd, peer)
	if c == nil {
		return
	}
	c.tc, c.tio = tc, t
	t.c = c
	c.Rd = true // the client's first frames may have come with its Finished
	c.Event(0)
}
