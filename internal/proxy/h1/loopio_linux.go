package h1

// The client's socket on a loop: what waits for it is written as it
// takes it (flush, send, over TLS through looptls_linux.go), and what it
// may still have sent is looked for before Shutdown closes it (readable,
// pull).

import (
	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/sys/unix"
)

// readable reports whether bytes from the client wait in the kernel, or
// over TLS part of a record in crypto/tls (the rest is on its way). Records
// crypto/tls read ahead whole are not in either: pull takes them first.
func (lc *lconn) readable() bool {
	n, _ := loop.Peek(lc.fd)
	return n > 0 || lc.tb != nil && lc.tb.partial()
}

// pull reads into c.buf what crypto/tls may have read ahead of the last
// request (whole records it returns a read at a time), before Shutdown
// decides that the connection has nothing more to serve; true when a read
// brought bytes. Only over TLS, and only while no read has found the
// socket empty since (lc.Rd).
func (lc *lconn) pull() bool {
	c := lc.c
	if lc.tb == nil || !lc.Rd {
		return false
	}
	c.acquireIn()
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	got := false
	for lc.Rd && c.w < len(c.buf) {
		n, e := lc.read(c.buf[c.w:])
		if e == unix.EAGAIN {
			lc.Rd = false
			break
		}
		if e != 0 || n == 0 {
			break // the next read finds the end again
		}
		c.w += n
		got = true
	}
	if !got && c.r == c.w {
		c.release()
	}
	return got
}

// flush writes what waits for the client; true when all is written.
func (lc *lconn) flush() bool {
	c := lc.c
	if lc.hs != nil {
		return !lc.hs.Held() // the stream writes as the client takes it: Resume
	}
	if lc.waiting() && lc.tooLate() {
		return lc.phase != lExchange
	}
	if lc.tb != nil {
		lc.encrypt()
		switch lc.flushTLS() {
		case 0:
			return true
		case unix.EAGAIN:
			if lc.tooLate() {
				return lc.phase != lExchange
			}
			return false
		}
		return lc.phase != lExchange
	}
	for lc.off < len(c.out) {
		if !lc.Wr {
			return false
		}
		n, e := loop.Write(lc.fd, c.out[lc.off:])
		if e == unix.EAGAIN {
			lc.Wr = false
			if lc.tooLate() {
				return lc.phase != lExchange
			}
			return false
		}
		if e != 0 {
			lc.gone = true
			c.req.closeAfter = true
			lc.off = len(c.out)
			return lc.phase != lExchange
		}
		lc.off += n
	}
	return true
}

// tooLate ends a connection that writes its answer once timeouts.write
// has passed: as the goroutine engine's write deadline fails the write.
func (lc *lconn) tooLate() bool {
	if lc.late {
		lc.gone = true
		lc.c.req.closeAfter = true
		lc.c.req.abort = true
		lc.off = len(lc.c.out)
		if lc.tb != nil {
			lc.tb.out, lc.tb.off = lc.tb.out[:0], 0
		}
	}
	return lc.late
}

// send queues b, then tail, for the client after what waits, writing
// what the socket takes at once, in one system call: so a response's body
// goes with its head, and is copied into c.out only when the client does
// not take it (then relay reads no more until it has).
func (lc *lconn) send(b, tail []byte) {
	c := lc.c
	if lc.tooLate() {
		return
	}
	if lc.tb != nil {
		// Over TLS, what waits and b and tail go in one record where they
		// fit: copied together, then sealed.
		if lc.off == len(c.out) {
			c.out, lc.off = c.out[:0], 0
		}
		c.out = append(append(c.out, b...), tail...)
		lc.encrypt()
		c.out, lc.off = c.out[:0], 0 // sealed: c.out holds nothing of a long body
		lc.flushTLS()
		return
	}
	for lc.Wr && len(b)+len(tail) > 0 {
		n, e := loop.Writev(lc.fd, c.out[lc.off:], b, tail)
		if e == unix.EAGAIN {
			lc.Wr = false
			if lc.tooLate() {
				return
			}
			break
		}
		if e != 0 {
			lc.gone = true
			c.req.closeAfter = true
			lc.off = len(c.out)
			return
		}
		k := min(n, len(c.out)-lc.off)
		lc.off += k
		n -= k
		k = min(n, len(b))
		b = b[k:]
		tail = tail[n-k:]
	}
	if lc.off == len(c.out) {
		c.out, lc.off = c.out[:0], 0
	}
	c.out = append(c.out, b...)
	c.out = append(c.out, tail...)
}

// pending reports whether bytes of the answer wait for the client's
// socket (before the answer, c.out holds the request's outbound head).
func (lc *lconn) pending() bool {
	switch lc.phase {
	case lAnswered, lLinger:
	case lExchange:
		if !lc.r.x.gotHead {
			return false
		}
	default:
		return false
	}
	return lc.waiting()
}
