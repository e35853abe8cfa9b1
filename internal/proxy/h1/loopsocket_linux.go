package h1

// A client connection taken onto a loop for another codec: HTTP/2 (package
// h2) serves its connections on the same loops as HTTP/1.1, over the same
// non-blocking socket and TLS records (looptls_linux.go).

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"sync"

	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/proxyproto"
	"golang.org/x/sys/unix"
)

// ErrWouldBlock is Socket.Read's error when nothing (more) has arrived:
// wait for the socket's next event.
var ErrWouldBlock error = wouldBlock{}

// Socket is a client connection on a loop, past its TLS handshake if it
// has one: reads are non-blocking, and what is written waits in the
// socket's queue until Send writes it out as the socket takes it. Read
// and Close run on the socket's loop; the others may run on any goroutine
// under the caller's own lock, which must also order them with Read over
// TLS (crypto/tls may answer a record it reads).
type Socket struct {
	l  *loop.Loop
	w  *lworker // the loop's part of the engine (its backend connections)
	t  taken
	tc *tls.Conn
	// out[off:] waits for the socket; over TLS the records, in t.tb.
	out    []byte
	off    int
	added  bool // registered on the loop
	closed bool // the descriptor is closed; nothing reads or writes it any more
	// bufp is the pooled buffer out (or, over TLS, the records) was
	// given, kept to give it back without a new pointer.
	bufp *[]byte
	// cs is the TLS state, read once (state): the handshake is over, and
	// it does not change.
	cs *tls.ConnectionState
}

// TakeSocket takes nc, an accepted connection (over TLS made with LoopTLS,
// past its handshake), onto one of the loops; nil when it cannot be (nc
// is untouched, and a goroutine serves it).
func (ls *Loops) TakeSocket(nc net.Conn) *Socket {
	var tcp *net.TCPConn
	if _, ok := nc.(*tls.Conn); !ok {
		if tcp = proxyproto.TCP(nc); tcp == nil {
			return nil
		}
	}
	t, ok := takeSocket(nc, tcp)
	if !ok {
		return nil
	}
	w := ls.pick()
	s := &Socket{l: w.ev, w: w, t: t}
	if t.tb != nil {
		s.tc = t.tb.tc
	}
	return s
}

// Loop is the loop the socket is served on; FD its descriptor there.
func (s *Socket) Loop() *loop.Loop { return s.l }
func (s *Socket) FD() int          { return s.t.fd }

// Add registers the socket with h on its loop (call it there).
func (s *Socket) Add(h loop.Handler) error {
	if err := s.l.Add(s.t.fd, h); err != nil {
		return err
	}
	s.added = true
	return nil
}

// RemoteAddr is the client's address.
func (s *Socket) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(s.t.raddr) }

// ConnectionState is the TLS state; false in the clear.
func (s *Socket) ConnectionState() (tls.ConnectionState, bool) {
	if s.tc == nil {
		return tls.ConnectionState{}, false
	}
	return s.tc.ConnectionState(), true
}

// state is the connection's TLS state (nil: plain), read once for the
// streams the loop forwards. On the loop.
func (s *Socket) state() *tls.ConnectionState {
	if s.cs == nil && s.tc != nil {
		cs := s.tc.ConnectionState()
		s.cs = &cs
	}
	return s.cs
}

// Read reads what the client sent (decrypted over TLS): ErrWouldBlock when
// nothing more has arrived, io.EOF when the client closed.
func (s *Socket) Read(p []byte) (int, error) {
	if s.closed {
		return 0, net.ErrClosed
	}
	if s.tc != nil {
		n, err := s.tc.Read(p)
		if err == io.EOF && n > 0 {
			err = nil // the next read says so again
		}
		return n, err
	}
	n, e := loop.Read(s.t.fd, p)
	switch {
	case e == unix.EAGAIN:
		return 0, ErrWouldBlock
	case e != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", e)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Queue queues p for the client (sealed into records over TLS); it never
// blocks. An error: crypto/tls will write nothing more.
func (s *Socket) Queue(p []byte) error {
	if s.closed {
		return net.ErrClosed
	}
	out, off := s.queue()
	if *out == nil {
		s.bufp = sockBufs.Get().(*[]byte)
		*out = (*s.bufp)[:0]
	} else if *off >= sockBufSize || *off > 0 && *off >= len(*out)/2 {
		// What was written goes: the buffer holds what waits, not all
		// that a slow client was sent.
		n := copy(*out, (*out)[*off:])
		*out, *off = (*out)[:n], 0
	}
	if s.tc != nil {
		_, err := s.tc.Write(p)
		return err
	}
	s.out = append(s.out, p...)
	return nil
}

// queue is where what waits for the socket is: out[off:], or over TLS the
// records in the base beneath crypto/tls.
func (s *Socket) queue() (out *[]byte, off *int) {
	if b := s.t.tb; b != nil {
		return &b.out, &b.off
	}
	return &s.out, &s.off
}

// sockBufs are the buffers of what waits for a Socket: a connection holds
// one only while bytes wait (an idle one holds none).
var sockBufs = sync.Pool{New: func() any { b := make([]byte, 0, sockBufSize); return &b }}

const sockBufSize = 16 << 10

// release gives the queue's buffer back, empty, unless a burst grew it.
func (s *Socket) release() {
	out, off := s.queue()
	if p := s.bufp; p != nil && cap(*out) <= 4*sockBufSize {
		*p = (*out)[:0]
		sockBufs.Put(p)
	}
	s.bufp = nil
	*out, *off = nil, 0
}

// Queued is how many bytes wait for the socket.
func (s *Socket) Queued() int {
	if b := s.t.tb; b != nil {
		return len(b.out) - b.off
	}
	return len(s.out) - s.off
}

// Send writes what is queued as the socket takes it: true when nothing is
// left; false (and nil) when the socket takes no more for now (its next
// writable event says when to call again).
func (s *Socket) Send() (bool, error) {
	if s.closed {
		return false, net.ErrClosed
	}
	out, off := s.queue()
	for *off < len(*out) {
		n, e := loop.Write(s.t.fd, (*out)[*off:])
		if e == unix.EAGAIN {
			return false, nil
		}
		if e != 0 {
			return false, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", e)}
		}
		*off += n
	}
	s.release()
	return true, nil
}

// Close closes the socket (on its loop, once Add was called): over TLS after
// close_notify, if the socket takes it at once and nothing else waits.
// The max_connections slot is freed.
func (s *Socket) Close() {
	if s.closed {
		return
	}
	if s.tc != nil && s.Queued() == 0 {
		s.t.tb.notified = true
		s.tc.CloseWrite()
		s.Send()
	}
	s.closed = true
	if s.added {
		s.l.CloseFD(s.t.fd)
	} else {
		unix.Close(s.t.fd)
	}
	s.t.slot.Close()
	s.release()
}
