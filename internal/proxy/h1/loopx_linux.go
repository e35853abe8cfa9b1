package h1

// One attempt of a request on a loop: the core's steps (a slot, the queue,
// retries and their backoff), the backend connection, the request sent,
// and the attempt's end; its response is looprelay_linux.go's.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"golang.org/x/sys/unix"
)

// lreq is what a request forwarded on a loop needs beyond its connection:
// the core's attempts and the exchange in progress (424 bytes that an idle
// connection does without). Each loop keeps the spare ones (lworker.reqs).
type lreq struct {
	att proxy.Attempts
	x   lexch
}

// getReq gives lc a request state for the request it forwards.
func (lc *lconn) getReq() {
	if r, ok := lc.w.reqs.Get(); ok {
		lc.r = r
		return
	}
	lc.r = &lreq{}
}

// putReq gives the request state back once the request is over.
func (lc *lconn) putReq() {
	r := lc.r
	if r == nil {
		return
	}
	lc.r = nil
	*r = lreq{} // nothing of the request stays reachable
	lc.w.reqs.Put(r)
}

// maxSpareReqs bounds a loop's spare request states.
const maxSpareReqs = 1024

// lexch is one attempt of a request on a loop: its backend connection and
// the response as it is relayed.
type lexch struct {
	u         *lup
	b         *pool.Backend
	start     int64 // when the attempt began (loop clock)
	upAt      int64 // when its connection was up: response_header counts from then
	connected bool  // the connection is up (connect measured)
	connect   time.Duration
	ooff      int // bytes of the outbound head written
	sent      bool
	gotByte   bool // a response byte came
	gotHead   bool // the final response head went to the client
	rh        edge.ResponseHead
	mode      int
	left      int64 // outFixed: body bytes still to relay
	ck        edge.Chunked
	pipe      *loop.Pipe // outFixed past spliceMin: the rest goes by splice
	tr        []byte     // an HTTP/2 stream's: the chunked body's trailer section so far
}

var (
	errUnexpected  = errors.New("backend switched protocols for a request that did not ask it to")
	errClientGone  = errors.New("the client went away")
	errHeadTooLong = errors.New("response head larger than the backend read buffer")
)

// attempt begins the next attempt: on a backend with a free slot, or in
// the pool's queue; woken: a queue wake-up came.
func (lc *lconn) attempt(woken bool) {
	var b *pool.Backend
	var full bool
	if woken {
		b, full = lc.r.att.Woken()
	} else {
		b, full = lc.r.att.Next()
	}
	if full {
		if lc.wake == nil {
			woke := lc.woke
			lc.wake = func() { lc.w.ev.PostTo(lc, woke) }
		}
		dl, err := lc.r.att.Queue(&lc.waiter, lc.wake)
		if err != nil {
			lc.forwarded(lc.giveUp(err))
			return
		}
		lc.queued = true
		lc.phase = lQueued
		lc.stepBy = dl.UnixNano()
		lc.rearm()
		return
	}
	if b == nil {
		lc.forwarded(lc.r.att.Result())
		return
	}
	lc.exchange(b)
}

// giveUp ends the request's wait in the pool's queue with err, noting a
// wake-up that is on its way all the same.
func (lc *lconn) giveUp(err error) proxy.Result {
	lc.queued = false
	res := lc.r.att.GiveUp(&lc.ctx, err)
	if lc.r.att.WakeComing() {
		lc.stale++
	}
	return res
}

// woke runs on the loop when the pool's queue woke the request.
func (lc *lconn) woke() {
	if lc.stale > 0 {
		lc.stale-- // for a wait given up: the wake-up went on to the next in line
		return
	}
	if lc.closed || !lc.queued {
		return
	}
	lc.queued = false
	lc.stepBy = 0
	lc.attempt(true)
	lc.drive()
}

// exchange begins the attempt on b over an idle connection or a new one.
func (lc *lconn) exchange(b *pool.Backend) {
	x := &lc.r.x
	t := lc.c.req.t
	now := lc.w.ev.Now()
	*x = lexch{b: b, start: now}
	lc.c.req.header = 0
	lc.phase = lExchange
	if !lc.connect() {
		return
	}
	if x.u.connecting {
		if d := t.Timeouts.Connect; d > 0 {
			lc.stepBy = now + int64(d)
		}
	} else {
		lc.connected()
	}
	lc.rearm()
}

// connect gives the attempt a connection to its backend: an idle one, or
// a new one being dialled. False when the dial failed (the attempt is
// done).
func (lc *lconn) connect() bool {
	x := &lc.r.x
	u, err := lc.w.get(x.b, lc.c.req.t)
	if err != nil {
		lc.attemptDone(proxy.Outcome{Class: proxy.ConnectFailure, Err: &proxy.DialError{Err: err}})
		return false
	}
	x.u, u.lc = u, lc
	x.ooff, x.sent, x.gotByte = 0, false, false
	return true
}

// connected notes that the attempt's connection is up: the response head
// is due by response_header from now, as on the goroutine engine (the
// connect has its own timeout).
func (lc *lconn) connected() {
	x := &lc.r.x
	x.connected = true
	x.upAt = lc.w.ev.Now()
	if !x.u.reused {
		x.connect = time.Duration(x.upAt - x.start)
	}
	lc.stepBy = 0
	if d := lc.c.req.t.Timeouts.ResponseHeader; d > 0 {
		lc.stepBy = x.upAt + int64(d)
	}
	lc.rearm()
}

// again replaces a reused connection that turned out closed or stray
// before any response byte, for a replayable request: not an attempt of
// its own, as in the goroutine engine (Send). False when it may not (the
// caller fails the attempt); true, and the caller returns to drive, which
// goes on with the new connection (or with what a failed dial led to).
func (lc *lconn) again(u *lup) bool {
	x := &lc.r.x
	if !u.reused || x.gotByte || (x.ooff > 0 || x.sent) && !lc.c.Replayable() {
		return false // bytes of the request may have reached the backend
	}
	x.u, u.lc = nil, nil
	u.close()
	if lc.connect() && x.u.connecting {
		if d := lc.c.req.t.Timeouts.Connect; d > 0 {
			lc.stepBy = lc.w.ev.Now() + int64(d)
			lc.rearm()
		}
		x.connected = false
	}
	return true
}

// pump moves the exchange on: connect, send the request, read the
// response head, relay the body. It reports whether the phase changed (go
// on driving); false: wait for an event.
func (lc *lconn) pump() bool {
	x := &lc.r.x
	c := lc.c
	q := &c.req
	for {
		u := x.u
		if lc.gone {
			lc.clientGone()
			return true
		}
		if u.connecting {
			return false
		}
		if u.failed && !x.connected {
			x.u, u.lc = nil, nil
			u.close()
			lc.attemptDone(proxy.Outcome{Class: proxy.ConnectFailure, Err: &proxy.DialError{Err: u.err}})
			return true
		}
		if !x.connected {
			lc.connected()
		}
		if !x.sent {
			if x.ooff == 0 && u.reused && !u.silent() {
				if lc.again(u) {
					return true
				}
				return lc.upFailed(errStray)
			}
			head := c.out[:q.outHead]
			n, e := loop.Write(u.fd, head[x.ooff:])
			switch {
			case e == unix.EAGAIN:
				u.Wr = false
				return false
			case e != 0:
				if x.ooff == 0 && lc.again(u) {
					return true
				}
				return lc.upFailed(e)
			}
			if x.ooff += n; x.ooff < len(head) {
				u.Wr = false
				return false
			}
			x.sent = true
		}
		if x.gotHead {
			if x.pipe != nil {
				if lc.splice() {
					return true
				}
				if lc.gone {
					continue
				}
				return false
			}
			// Relay no more while the client has not taken what it got.
			if lc.waiting() && !lc.flush() {
				if lc.gone {
					continue
				}
				return false
			}
			if lc.relay() {
				return true
			}
			if x.pipe != nil {
				continue // the rest goes by splice, not through buf
			}
		} else if u.r < u.wr {
			n, err := edge.ParseResponseHead(u.buf[u.r:u.wr], &x.rh)
			if err != nil {
				return lc.upFailed(err)
			}
			if n > 0 {
				if lc.head(n) {
					return true
				}
				continue
			}
		}
		switch u.fill() {
		case fillWait:
			return false
		case fillFull:
			return lc.upFailed(errHeadTooLong)
		case fillEOF:
			if x.gotHead && u.err == nil && (x.mode == outChunkEncode || x.mode == outRaw && lc.hs != nil) {
				// The backend closed: the end of a body framed by its close
				// (a reset is not: below).
				if lc.hs != nil {
					lc.hs.Data(nil, true)
				} else {
					lc.send(lastChunk, nil)
				}
				x.u, u.lc = nil, nil
				u.close()
				lc.delivered(nil)
				return true
			}
			if !x.gotByte && lc.again(u) {
				return true
			}
			err := error(io.ErrUnexpectedEOF)
			if u.err != nil {
				err = u.err
			}
			return lc.upFailed(err)
		}
		x.gotByte = true
	}
}

// attemptDone accounts for the attempt's outcome and goes on as the core
// decides: another attempt (now or after a backoff), or the answer.
func (lc *lconn) attemptDone(o proxy.Outcome) {
	x := &lc.r.x
	o.Connect, o.Header = x.connect, lc.c.req.header
	lc.stepBy = 0
	again, backoff := lc.r.att.Done(&lc.ctx, x.b, o)
	if !again {
		lc.forwarded(lc.r.att.Result())
		return
	}
	if backoff > 0 {
		lc.phase = lBackoff
		lc.stepBy = lc.w.ev.Now() + int64(backoff)
		lc.rearm()
		return
	}
	lc.attempt(false)
}

// forwarded ends the core's part with res: the response went to the
// client, or sluice answers for the backend.
func (lc *lconn) forwarded(res proxy.Result) {
	c := lc.c
	q := &c.req
	q.rec.Result = res
	lc.stepBy, lc.reqBy = 0, 0
	lc.rearm()
	lc.phase = lAnswered
	if res.Class == proxy.Done {
		q.rec.Status = res.Status
		return
	}
	status, gone, closeConn := proxy.Failed(res, q.t, c.e.o.Logger, bstr(q.id))
	q.rec.Status = status
	if gone {
		q.closeAfter = true
		c.out, lc.off = c.out[:0], 0
		return // a stream's: the client reset it, and endStream resets what is left
	}
	lc.answerFail(status, proxy.StatusText(status), closeConn)
}

// stepExpired handles the phase's own deadline: the queue's timeout, the
// end of a backoff, the connect or response_header timeout.
func (lc *lconn) stepExpired() {
	lc.stepBy = 0
	switch lc.phase {
	case lQueued:
		lc.forwarded(lc.giveUp(pool.ErrQueueTimeout))
	case lBackoff:
		lc.attempt(false)
	case lExchange:
		x := &lc.r.x
		if x.gotHead {
			return
		}
		if u := lc.dropUp(); u != nil {
			if u.connecting {
				lc.attemptDone(proxy.Outcome{Class: proxy.ConnectFailure,
					Err: &proxy.DialError{Err: fmt.Errorf("dial tcp %s: %w", x.b.Host, context.DeadlineExceeded)}})
				return
			}
		}
		lc.attemptDone(proxy.Outcome{Class: proxy.Timeout, Err: proxy.ErrHeaderTimeout})
	}
}

// timeout handles the pool's request timeout (err) in whatever phase the
// request is.
func (lc *lconn) timeout(err error) {
	lc.reqBy = 0
	lc.cut(proxy.Timeout, err)
}

// clientGone ends what the request waits for once its client went away:
// its place in the queue, its backoff, or its exchange (the backend
// connection is closed, as the response has no one to go to).
func (lc *lconn) clientGone() {
	lc.cut(proxy.ClientGone, errClientGone)
	lc.c.req.closeAfter = true
}

// cut ends the request's wait, whatever it is, for a reason of class: the
// queue is left, a backoff ends with the last attempt's outcome, an
// exchange ends (broken off, if its response had begun).
func (lc *lconn) cut(class proxy.Class, err error) {
	switch lc.phase {
	case lQueued:
		lc.forwarded(lc.giveUp(err))
	case lBackoff:
		lc.forwarded(lc.r.att.Result())
	case lExchange:
		if lc.r.x.gotHead {
			lc.bodyFailed(err)
			return
		}
		lc.dropUp()
		lc.attemptDone(proxy.Outcome{Class: class, Err: err})
	}
}

// dropUp closes the attempt's backend connection, if it has one, and
// returns it.
func (lc *lconn) dropUp() *lup {
	u := lc.r.x.u
	if u != nil {
		lc.r.x.u, u.lc = nil, nil
		u.close()
	}
	return u
}

// lctx is a request's context on a loop, for the core's calls that take
// one: its deadline is the pool's request timeout, and it is cancelled
// when the client goes. It has no Done channel: nothing on a loop waits.
type lctx struct{ lc *lconn }

func (x *lctx) Deadline() (time.Time, bool) {
	d := x.lc.c.req.deadline
	return d, !d.IsZero()
}

func (x *lctx) Done() <-chan struct{} { return nil }

func (x *lctx) Err() error {
	if x.lc.gone {
		return context.Canceled
	}
	if d := x.lc.c.req.deadline; !d.IsZero() && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (x *lctx) Value(any) any { return nil }

var _ context.Context = (*lctx)(nil)
