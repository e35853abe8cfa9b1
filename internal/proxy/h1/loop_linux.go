package h1

// The engine on event loops (`engine: loop`): the design issue 15 chose by
// measurement (bench/evproto, docs/benchmarks.md). A connection is served
// on one of the process's event loops (internal/loop) with no goroutine of
// its own: requests are parsed, routed and forwarded on the loop, over
// backend connections that loop owns, and the response is relayed as the
// sockets allow. The request path is the engine's own: the same h1conn and
// request state, begin, resolve, buildOutbound, responseMode,
// appendResponseHead, failAnswer and end, and the core's steps
// (proxy.Attempts) instead of proxy.Forward.
//
// The loop serves the common exchange: an HTTP/1.1 request without a body
// to a plain HTTP/1.1 backend, answered with no body, a Content-Length
// one, a chunked one or one that ends with the connection. Anything else is
// handed over, at the point the loop reached, to a goroutine that serves
// the connection as the goroutine engine does from then on (handOver): a
// request with a body or Expect, an upgrade, HTTP/1.0, OPTIONS *, an ACME
// challenge, a listener whose rate limits ask a shared store, and a pool
// that speaks HTTP/2, TLS or the PROXY protocol to its backends or names
// a backend by host name. So every feature of the engine works on a loop
// listener, and the ones the loop serves itself cost no goroutine wake-up.

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"golang.org/x/sys/unix"
)

// Phases of a connection on a loop.
const (
	lIdle     = iota // waiting for (the rest of) a request head
	lQueued          // waiting for a slot in the pool's queue
	lBackoff         // waiting out the backoff before the next attempt
	lExchange        // an attempt on a backend connection
	lAnswered        // the answer is queued: writing it out
	lLinger          // refused: reading what the client still sends, then close
)

// lconn is a client connection served on a loop.
type lconn struct {
	c    *h1conn
	w    *lworker
	fd   int
	slot io.Closer // the accepted connection's max_connections slot
	tb   *tlsBase  // beneath the connection's TLS (nil: plain)
	loop.Ready
	phase  int
	closed bool
	gone   bool // the client's socket failed or closed both ways
	// late: timeouts.write passed with the answer not begun; the first
	// write the socket does not take whole then ends the connection.
	late bool
	off  int // c.out[off:] waits for the client's socket (see pending)
	// timer is the connection's one timer, set to the earliest of the
	// deadlines below (nanoseconds on the loop's clock; 0: none): the
	// loop's (Loop.Arm) from the first deadline to the close.
	timer   *loop.Timer
	headBy  int64 // the head (or the first byte of the next one) by then
	writeBy int64 // the answer written by then (timeouts.write)
	reqBy   int64 // the pool's request timeout
	stepBy  int64 // the phase's own: connect, response head, queue, backoff
	waitAt  int64 // when the wait for the next request began (0: not waiting)
	ctx     lctx
	waiter  pool.Waiter
	queued  bool   // waiter is in the pool's queue
	stale   int    // wake-ups still to come for waits given up (Attempts.WakeComing)
	wake    func() // posts the queue's wake-up to the loop (made once)
	// r is the request forwarded on the loop, from its first attempt to
	// its end (nil otherwise: an idle connection does not hold one).
	r *lreq
	// hs is where the response goes when lc is an HTTP/2 stream's request
	// (loopstream_linux.go), which has no socket (fd -1) of its own; sv is
	// the listener's view it was checked under, until it starts.
	hs StreamOut
	sv *proxy.Listener
}

// adopt registers the connection on its loop (posted by take).
func (lc *lconn) adopt() {
	c := lc.c
	if lc.closed {
		// Engine.Close posted its abort between Serve's count of the
		// connection and this post: the abort closed the socket (a
		// descriptor number another connection may hold by now) and
		// counted the connection out.
		return
	}
	lc.Wr = true
	if err := lc.w.ev.Add(lc.fd, lc); err != nil {
		unix.Close(lc.fd)
		lc.slot.Close()
		c.e.forget(c)
		c.lc.Store(nil)
		c.e.wg.Done()
		return
	}
	if !c.until.IsZero() {
		lc.headBy = c.until.UnixNano()
	}
	lc.waitAt = lc.w.ev.Now()
	lc.rearm()
	// The client may have sent its request with the handshake's last ACK:
	// the first read does not wait for an event.
	lc.Rd = true
	lc.drive()
}

// Event is the client socket's readiness.
func (lc *lconn) Event(ev loop.Events) {
	lc.Note(ev)
	if ev&(loop.Hup|loop.Err) != 0 {
		lc.gone = true
	}
	lc.drive()
}

// Fail closes the connection after a panic on the loop.
func (lc *lconn) Fail() { lc.abort() }

// drive moves the connection on as far as its sockets allow.
func (lc *lconn) drive() {
	for !lc.closed {
		// c.out holds the answer once one is queued; before, it holds the
		// request's outbound head (and pump writes the answer as it goes).
		if (lc.phase == lAnswered || lc.phase == lLinger) && lc.waiting() && !lc.flush() {
			return
		}
		switch lc.phase {
		case lIdle:
			if !lc.readHead() {
				return
			}
		case lAnswered:
			// Written out.
			if !lc.endRequest() {
				return
			}
		case lExchange:
			if !lc.pump() {
				return
			}
		case lLinger:
			lc.linger()
			return
		default:
			if lc.gone {
				lc.clientGone()
				continue
			}
			return
		}
	}
}

// readHead reads and parses the next request head and starts the request;
// false when it needs more bytes (or the connection ended).
func (lc *lconn) readHead() bool {
	c := lc.c
	for {
		if c.r < c.w {
			if lc.waitAt != 0 {
				// The first byte of a request: read_header counts from here
				// (from the accept for the first one).
				if to := c.e.o.Timeouts.ReadHeader; to > 0 && (c.served.Load() || lc.headBy == 0) {
					lc.headBy = lc.w.ev.Now() + int64(to)
				} else if c.served.Load() {
					lc.headBy = 0
				}
				lc.waitAt = 0
				lc.rearm()
			}
			if !c.state.CompareAndSwap(connIdle, connActive) && c.state.Load() != connActive {
				lc.close() // Shutdown closed it
				return false
			}
			n, err := edge.ParseRequestHead(c.buf[c.r:c.w], c.e.lim, &c.req.head)
			if err != nil {
				var ee *edge.Error
				errors.As(err, &ee)
				lc.refuse(ee.Status, ee.Reason)
				return true
			}
			if n > 0 {
				c.req.hlen = n
				c.acquire()
				c.again = c.served.Load()
				c.served.Store(true)
				lc.start()
				return true
			}
			if c.w == len(c.buf) && !c.grow() {
				lc.refuse(431, "request header too large")
				return true
			}
		}
		if lc.tb != nil && lc.tb.off < len(lc.tb.out) {
			// Records crypto/tls made in answer to the client's (a
			// KeyUpdate) wait for its socket: read nothing more until it
			// takes them, so that a client that does not read cannot
			// make them pile up. The socket's next room brings an event.
			if e := lc.flushTLS(); e != 0 {
				if e != unix.EAGAIN {
					lc.close()
				}
				return false
			}
		}
		if !lc.Rd {
			if c.r == c.w {
				c.release() // an idle connection holds no buffer
			}
			return false
		}
		c.acquireIn()
		if c.r == c.w {
			c.r, c.w = 0, 0
		}
		n, e := lc.read(c.buf[c.w:])
		if e == unix.EAGAIN {
			lc.Rd = false
			continue
		}
		if e != 0 || n == 0 {
			lc.close()
			return false
		}
		if lc.drained(n, len(c.buf)-c.w) {
			lc.Rd = false // the next byte brings a new edge
		}
		c.w += n
	}
}

// start serves the request whose head was parsed: on the loop, or handed
// over where the loop does not serve it.
func (lc *lconn) start() {
	c := lc.c
	q := &c.req
	hb := c.buf[c.r : c.r+q.hlen]
	if raw := (rawFields{head: hb, first: edge.FirstField(hb, q.head.Lead)}); q.head.Minor == 0 || raw.Get("Upgrade") != "" {
		lc.handOver(fromBegin)
		return
	}
	c.begin()
	l := q.l
	if q.body.kind != bodyNone || q.expect || q.expectOther || string(q.head.Target) == "*" ||
		l.ACME != nil && c.isChallenge() || l.SharedLimits() {
		lc.handOver(fromRoute)
		return
	}
	if to := c.e.o.Timeouts.Write; to > 0 {
		lc.writeBy = q.rec.Start.UnixNano() + int64(to)
	}
	lc.headBy = 0
	lc.rearm()
	c.consumeHead()
	if status := c.resolve(&lc.ctx); status != 0 {
		lc.answerFail(status, refusal(status), false)
		return
	}
	if !lc.w.serves(q.t) {
		lc.handOver(fromForward)
		return
	}
	lc.forward()
}

// forward forwards the routed request on the loop: the pool's request
// timeout from its start, the outbound head, the core's first attempt.
func (lc *lconn) forward() {
	c := lc.c
	q := &c.req
	if d := q.t.Timeouts.Request; d > 0 {
		q.deadline = q.rec.Start.Add(d)
		lc.reqBy = q.deadline.UnixNano()
		lc.rearm()
	}
	c.buildOutbound()
	lc.getReq()
	lc.r.att.Start(&q.rec, c)
	lc.attempt(false)
}

// isChallenge reports an ACME HTTP-01 challenge request.
func (c *h1conn) isChallenge() bool {
	_, ok := c.challenge()
	return ok
}

// answer queues an answer sluice made itself (o, in c.out) with status,
// and ends the request once it is written.
func (lc *lconn) answer(status int, o []byte) {
	c := lc.c
	c.out = o
	lc.off = 0
	c.req.rec.Status = status
	lc.phase = lAnswered
}

// refuse answers a request the engine will not serve, then lingers and
// closes, as h1conn.refuse does.
func (lc *lconn) refuse(status int, reason string) {
	c := lc.c
	c.acquire()
	q := &c.req
	*q = h1req{l: c.e.o.View.Load()}
	q.rec.Start = time.Now()
	q.id = c.e.o.IDs.AppendNext(q.idb[:0])
	c.out = c.failAnswer(status, reason, true)
	q.rec.Status = status
	c.finish()
	lc.off = 0
	q.closeAfter = true
	lc.phase = lLinger
	lc.headBy = lc.w.ev.Now() + int64(lingerTime)
	lc.rearm()
}

// linger writes the refusal out, half-closes and reads what the client
// still sends for lingerTime (or 256 KiB), so that its unread bytes do not
// make the kernel reset the connection before the answer is read.
func (lc *lconn) linger() {
	c := lc.c
	if lc.waiting() {
		return // flush waits for the socket
	}
	if lc.off > 0 {
		if b := lc.tb; b != nil && !lc.gone {
			// close_notify before the write side closes (best effort: the
			// refusal is out, the socket takes a short record).
			lc.notify()
			loop.Write(lc.fd, b.out[b.off:])
			lc.giveBack()
		}
		unix.Shutdown(lc.fd, unix.SHUT_WR)
		lc.off = 0
		c.out = c.out[:0]
		c.r, c.w = 0, 0
	}
	for lc.Rd {
		n, e := loop.Read(lc.fd, c.buf)
		if e == unix.EAGAIN {
			lc.Rd = false
			return
		}
		c.w += n
		if e != 0 || n == 0 || c.w > 256<<10 {
			lc.close()
			return
		}
		if n < len(c.buf) && !lc.Hup {
			lc.Rd = false
		}
	}
}

// endRequest ends the request whose answer was written out: the core's
// counters and access log, then the next request or the connection's end.
// It reports whether to go on driving.
func (lc *lconn) endRequest() bool {
	c := lc.c
	q := &c.req
	c.finish()
	lc.putReq()
	lc.writeBy, lc.reqBy, lc.stepBy, lc.late = 0, 0, 0, false
	if lc.hs != nil {
		lc.close() // a stream's one request
		return false
	}
	if q.abort || q.closeAfter || lc.gone {
		lc.close()
		return false
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	c.releaseOut()
	c.out, lc.off = nil, 0
	lc.phase = lIdle
	if c.r == c.w && c.e.shutting.Load() && !lc.pull() && lc.gone {
		lc.close() // the read found the end, or a bad record
		return false
	}
	if c.r < c.w {
		// Pipelined: served, even once Shutdown has begun; read_header
		// counts from now.
		lc.waitAt = lc.w.ev.Now()
		return true
	}
	if !c.state.CompareAndSwap(connActive, connIdle) {
		lc.close()
		return false
	}
	if c.e.shutting.Load() && !lc.readable() && c.state.CompareAndSwap(connIdle, connClosed) {
		lc.close()
		return false
	}
	lc.headBy = 0
	if d := c.e.o.Timeouts.Idle; d > 0 {
		lc.headBy = lc.w.ev.Now() + int64(d)
	}
	lc.waitAt = lc.w.ev.Now()
	lc.rearm()
	return true
}

// rearm sets the timer to the earliest deadline.
func (lc *lconn) rearm() {
	at := int64(0)
	for _, d := range [...]int64{lc.headBy, lc.writeBy, lc.reqBy, lc.stepBy} {
		if d != 0 && (at == 0 || d < at) {
			at = d
		}
	}
	if at == 0 {
		if lc.timer != nil {
			lc.timer.Stop()
		}
		return
	}
	lc.w.ev.Arm(&lc.timer, lc, at)
}

// Expire handles the deadline that passed.
func (lc *lconn) Expire(now int64) {
	if lc.closed {
		return
	}
	c := lc.c
	switch {
	case lc.writeBy != 0 && now >= lc.writeBy:
		lc.writeBy = 0
		if lc.pending() || lc.phase == lExchange && lc.r.x.gotHead {
			lc.abort() // the answer was not written within timeouts.write
			return
		}
		lc.late = true // and the first write of the answer fails, as past a deadline
	case lc.phase == lIdle && lc.headBy != 0 && now >= lc.headBy:
		if c.r < c.w && !c.e.shutting.Load() {
			lc.refuse(408, "request header timeout")
			lc.drive()
			return
		}
		lc.close()
		return
	case lc.phase == lLinger && now >= lc.headBy:
		lc.close()
		return
	case lc.reqBy != 0 && now >= lc.reqBy:
		lc.timeout(proxy.ErrRequestTimeout)
		lc.drive()
		return
	case lc.stepBy != 0 && now >= lc.stepBy:
		lc.stepExpired()
		lc.drive()
		return
	}
	lc.rearm()
}

// abort closes the connection at once, ending what is in progress.
func (lc *lconn) abort() {
	if lc.closed {
		return
	}
	inRequest := lc.phase != lIdle && lc.phase != lLinger
	if lc.phase == lExchange || lc.phase == lQueued || lc.phase == lBackoff {
		lc.gone = true
		lc.clientGone()
	}
	if inRequest {
		lc.c.req.abort = true
		lc.c.finish() // counted and logged, as every request is
	}
	lc.close()
}

// close closes the connection: the exchange's backend connection, if one
// is in use, and the socket.
func (lc *lconn) close() {
	if lc.closed {
		return
	}
	lc.closed = true
	lc.w.ev.Disarm(&lc.timer)
	if r := lc.r; r != nil {
		if u := r.x.u; u != nil {
			r.x.u = nil
			u.lc = nil
			u.close()
		}
		if p := r.x.pipe; p != nil {
			r.x.pipe = nil
			lc.w.pipes.Put(p) // closed, unless empty
		}
		if lc.queued {
			lc.giveUp(context.Canceled)
		}
		lc.putReq()
	}
	if lc.hs != nil {
		lc.endStream()
		return
	}
	lc.closeTLS()
	lc.w.ev.CloseFD(lc.fd)
	lc.slot.Close()
	lc.finishClosed()
}

// finishClosed ends the connection's bookkeeping once its socket is
// closed.
func (lc *lconn) finishClosed() {
	c := lc.c
	c.state.Store(connClosed)
	c.r = c.w
	c.release()
	c.e.forget(c) // first: Close no longer finds it
	c.lc.Store(nil)
	c.e.wg.Done()
}

// fail closes a connection the loop could not hand over.
func (lc *lconn) fail(err error) {
	lc.c.e.o.Logger.Error("engine: a loop could not hand a connection over; it was closed", "error", err)
	lc.closed = false
	lc.close()
}

// closeIfIdle and closeNow are Shutdown's and Close's, run on the loop.
func (lc *lconn) closeIfIdle(fresh bool) {
	c := lc.c
	if lc.closed || !fresh && !c.served.Load() || lc.phase != lIdle || c.r < c.w {
		return
	}
	if lc.pull() {
		lc.drive() // a request crypto/tls had read ahead: served
		return
	}
	if lc.gone {
		lc.close() // the read found the end, or a bad record
		return
	}
	if lc.readable() {
		return
	}
	if c.state.CompareAndSwap(connIdle, connClosed) {
		lc.close()
	}
}

// post runs fn on the connection's loop (Shutdown's and Close's work).
func (lc *lconn) post(fn func()) { lc.w.ev.PostTo(lc, fn) }
