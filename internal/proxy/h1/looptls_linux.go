package h1

// TLS on the loops: the records of an HTTP/1.1 connection over TLS are
// read and written on its loop; the handshake stays on the goroutine that
// the listener's front runs it on (internal/server, front.go), once per
// connection.
//
// Why this works with crypto/tls, which has no non-blocking API: after the
// handshake it needs none. A tls.Conn whose underlying Read returns an
// error that says Temporary() keeps what it has read and its state, and
// reads on when called again (crypto/tls records only the other errors:
// conn.go, readRecordOrCCS); its Write only calls the underlying Write,
// which on a loop appends the records to a buffer that the loop writes out
// as the socket takes them. TestLoopTLSWouldBlockKeepsTheRecord pins the
// first of these, which leans on net.Error.Temporary (deprecated in Go,
// still what crypto/tls checks).

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"time"

	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/proxyproto"
	"github.com/sluice-lb/sluice/internal/rawio"
	"golang.org/x/sys/unix"
)

// LoopTLS returns the connection to run crypto/tls over on a listener whose
// HTTP/1.1 connections the loops serve: nc (the accepted socket, with raw
// reads and writes) until a loop takes the connection after its handshake.
func LoopTLS(nc net.Conn) net.Conn { return &tlsBase{Conn: nc, fd: -1} }

// tlsBase is the connection beneath a tls.Conn that a loop may take over.
// While a goroutine serves it (the handshake, a connection handed over),
// reads and writes are the wrapped connection's; on a loop (fd ≥ 0), a
// read is one non-blocking read of the socket and a write queues the
// records in out. The mode changes only while nothing reads or writes.
type tlsBase struct {
	net.Conn
	tc  *tls.Conn // the TLS connection over it (set by take)
	fd  int
	out []byte // records for the client, on a loop: out[off:] wait for the socket
	off int
	// The records read from the socket on a loop, followed by their
	// lengths: hn bytes of a record's header are in hdr, or left bytes of
	// its body are still to come. Either way crypto/tls holds part of a
	// record (see partial).
	hdr  [5]byte
	hn   int
	left int
	// notified: close_notify went out (or was queued).
	notified bool
}

// NetConn is the wrapped connection (readable peeks at its socket).
func (b *tlsBase) NetConn() net.Conn { return b.Conn }

// wouldBlock is a loop's read of a socket with nothing to read: temporary,
// so crypto/tls keeps its state and the record it has begun.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// WouldBlock tells it from a socket's own errors, some of which say
// Timeout too (ETIMEDOUT).
func (wouldBlock) WouldBlock() bool { return true }

func (b *tlsBase) Read(p []byte) (int, error) {
	if b.fd < 0 {
		// Followed from the first byte: the handshake's last read may
		// hold the beginning of the first request's record.
		n, err := b.Conn.Read(p)
		b.follow(p[:n])
		return n, err
	}
	n, e := loop.Read(b.fd, p)
	switch {
	case e == unix.EAGAIN:
		return 0, wouldBlock{}
	case e != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", e)}
	case n == 0:
		return 0, io.EOF
	}
	b.follow(p[:n])
	return n, nil
}

// follow follows the record lengths through p, the next bytes read.
func (b *tlsBase) follow(p []byte) {
	for len(p) > 0 {
		if b.left > 0 {
			k := min(b.left, len(p))
			b.left -= k
			p = p[k:]
			continue
		}
		k := copy(b.hdr[b.hn:], p)
		b.hn += k
		p = p[k:]
		if b.hn == len(b.hdr) {
			b.left, b.hn = int(b.hdr[3])<<8|int(b.hdr[4]), 0
		}
	}
}

// partial reports whether crypto/tls holds part of a record: its rest is
// on its way.
func (b *tlsBase) partial() bool { return b.hn > 0 || b.left > 0 }

func (b *tlsBase) Write(p []byte) (int, error) {
	if b.fd < 0 {
		if b.off < len(b.out) {
			// Records a loop queued before it handed the connection over.
			n, err := b.Conn.Write(b.out[b.off:])
			b.off += n
			if err != nil {
				return 0, err
			}
			b.out, b.off = nil, 0
		}
		return b.Conn.Write(p)
	}
	b.out = append(b.out, p...)
	return len(p), nil
}

// takeTLS readies a TLS connection past its handshake for a loop: its
// base (which take switches to the loop by setting its fd), the socket
// beneath (to duplicate) and the accepted connection (for its slot). nil
// when nc is not one a loop can take: TLS not made over LoopTLS, or no TCP
// socket beneath.
func takeTLS(nc net.Conn) (*tlsBase, *net.TCPConn, net.Conn) {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil, nil, nil
	}
	b, ok := tc.NetConn().(*tlsBase)
	if !ok || b.fd >= 0 {
		return nil, nil, nil
	}
	tcp := proxyproto.TCP(b.Conn)
	if tcp == nil {
		return nil, nil, nil
	}
	b.tc = tc
	// The accepted connection, beneath the raw reads and writes: it holds
	// the max_connections slot (another connection beneath is kept whole:
	// closing it frees what it holds).
	acc := b.Conn
	if r, ok := acc.(*rawio.Conn); ok {
		acc = r.NetConn()
	}
	return b, tcp, acc
}

// read reads what the client sent into p: decrypted, over TLS. EAGAIN: the
// socket had nothing (more); (0, 0): the client closed.
func (lc *lconn) read(p []byte) (int, unix.Errno) {
	b := lc.tb
	if b == nil {
		return loop.Read(lc.fd, p)
	}
	n, err := b.tc.Read(p)
	if len(b.out) > b.off {
		lc.flushTLS() // an answer to a post-handshake message (KeyUpdate), or an alert
	}
	_, again := err.(wouldBlock)
	switch {
	case err == nil && n > 0, again && n > 0, err == io.EOF && n > 0:
		return n, 0 // an empty socket or the end: the next read says so again
	case err == nil, again:
		return 0, unix.EAGAIN
	case err == io.EOF:
		return 0, 0
	}
	// A bad record (crypto/tls sent its alert and writes nothing more) or
	// the socket's error: the connection ends, and what came with the
	// error is not served.
	lc.gone = true
	return 0, unix.EIO
}

// drained reports whether a read that filled n of the room bytes
// emptied the socket: for a plain socket, one that did not fill the room
// did (the next byte brings a new edge); over TLS only EAGAIN says so, as
// crypto/tls returns a record at a time.
func (lc *lconn) drained(n, room int) bool {
	return lc.tb == nil && n < room && !lc.Hup
}

// encrypt seals the answer's bytes not yet taken (c.out[off:]) into records
// queued for the client: on TLS, "taken" means sealed.
func (lc *lconn) encrypt() {
	c := lc.c
	if lc.off < len(c.out) {
		lc.borrow()
		if _, err := lc.tb.tc.Write(c.out[lc.off:]); err != nil {
			// crypto/tls writes nothing after a fatal alert: the answer is lost.
			lc.gone = true
			c.req.closeAfter, c.req.abort = true, true
		}
		lc.off = len(c.out)
	}
}

// borrow gives the connection's records the loop's spare buffer when they
// have none: an idle connection holds no buffer for them (flushTLS gives
// it back once the records are out).
func (lc *lconn) borrow() {
	if b := lc.tb; b.out == nil {
		b.out, lc.w.tlsOut = lc.w.tlsOut[:0], nil
	}
}

// flushTLS writes the queued records as the socket takes them: 0 when none
// is left, EAGAIN when the socket takes no more for now, another error
// when it failed (the client is gone and the records dropped).
func (lc *lconn) flushTLS() unix.Errno {
	b := lc.tb
	for b.off < len(b.out) {
		if !lc.Wr {
			return unix.EAGAIN
		}
		n, e := loop.Write(lc.fd, b.out[b.off:])
		if e == unix.EAGAIN {
			lc.Wr = false
			return e
		}
		if e != 0 {
			lc.gone = true
			if lc.c.exch != nil { // an idle connection (a KeyUpdate's answer) has no request
				lc.c.req.closeAfter = true
			}
			b.out, b.off = b.out[:0], 0
			return e
		}
		b.off += n
	}
	lc.giveBack()
	return 0
}

// giveBack gives the records' buffer back to the loop, empty (what a large
// answer grew is not kept).
func (lc *lconn) giveBack() {
	b := lc.tb
	if lc.w.tlsOut == nil && cap(b.out) <= 64<<10 {
		lc.w.tlsOut = b.out[:0]
	}
	b.out, b.off = nil, 0
}

// waiting reports whether bytes of the answer wait for the client's
// socket: c.out[off:], and over TLS the sealed records.
func (lc *lconn) waiting() bool {
	if lc.hs != nil {
		return lc.hs.Held() // the stream's windows, its connection's socket
	}
	return lc.off < len(lc.c.out) || lc.tb != nil && lc.tb.off < len(lc.tb.out)
}

// closeTLS ends TLS before the socket closes: close_notify, if the socket
// takes it at once, after an answer written whole. A connection cut off
// (an answer broken off or not written out, the client gone) gets none, so
// that its client does not take what it got for the whole answer.
func (lc *lconn) closeTLS() {
	b := lc.tb
	if b == nil {
		return
	}
	c := lc.c
	cut := lc.gone || c.exch != nil && c.req.abort // no request state: idle
	if !cut && b.off == len(b.out) && lc.off == len(c.out) {
		lc.notify()
		loop.Write(lc.fd, b.out[b.off:])
	}
	lc.giveBack()
}

// notify queues close_notify, once.
func (lc *lconn) notify() {
	if b := lc.tb; !b.notified {
		b.notified = true
		lc.borrow()
		b.tc.CloseWrite()
	}
}

// closedConn stands beneath a tls.Conn on a loop for the socket the loop
// took over: its addresses, and nothing to read or write (the loop does
// that). Keeping the accepted connection instead would keep its closed
// netFD for the life of the connection.
type closedConn struct{ local, remote net.Addr }

func (closedConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (closedConn) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (closedConn) Close() error                     { return nil }
func (a closedConn) LocalAddr() net.Addr            { return a.local }
func (a closedConn) RemoteAddr() net.Addr           { return a.remote }
func (closedConn) SetDeadline(time.Time) error      { return nil }
func (closedConn) SetReadDeadline(time.Time) error  { return nil }
func (closedConn) SetWriteDeadline(time.Time) error { return nil }
