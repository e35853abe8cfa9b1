package h1

// The response of an attempt on a loop: its head, its body relayed as the
// sockets allow (through memory, or by splice for a large fixed-length
// one), and how an attempt whose response began ends.

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
	"golang.org/x/sys/unix"
)

// head handles the response head of n bytes at u.buf[u.r:]: an interim
// one is dropped, a retryable status ends the attempt, and the final head
// goes to the client. It reports whether the attempt ended.
func (lc *lconn) head(n int) bool {
	x := &lc.r.x
	u := x.u
	c := lc.c
	q := &c.req
	rh := &x.rh
	if rh.Status < 200 && rh.Status != 101 {
		u.r += n // interim responses are dropped, as net/http's Transport does
		return false
	}
	q.header = time.Duration(lc.w.ev.Now() - x.upAt)
	x.b.Stats.ObserveLatency(q.header)
	lc.stepBy = 0 // response_header is met
	lc.rearm()
	if rh.Status == 101 {
		return lc.upFailed(fmt.Errorf("%w (%q)", errUnexpected, rh.Upgrade))
	}
	t := q.t
	if canRetry := lc.r.att.CanRetry(); canRetry && slices.Contains(t.Retries.OnStatus, rh.Status) {
		ra, _ := (&rawFields{head: u.buf[u.r : u.r+n], first: rh.First}).Value("Retry-After", 0)
		retryAfter := proxy.ParseRetryAfter(ra)
		if t.RetryOnStatus(rh.Status, retryAfter, c, canRetry) {
			u.r += n
			x.u, u.lc = nil, nil
			switch {
			case rh.Close:
				u.close()
			case edge.NoBody(q.isHead, rh.Status):
				u.release()
			case !rh.Chunked && rh.ContentLength >= 0 && rh.ContentLength <= int64(u.wr-u.r):
				u.r += int(rh.ContentLength)
				u.release()
			default:
				u.close()
			}
			lc.attemptDone(proxy.Outcome{Class: proxy.RetryStatus, Status: rh.Status, RetryAfter: retryAfter})
			return true
		}
	}
	head := u.buf[u.r : u.r+n]
	u.r += n
	x.mode = c.responseMode(rh)
	if c.e.shutting.Load() {
		q.closeAfter = true // once Shutdown has begun, no answer keeps the connection
	}
	if lc.hs != nil {
		lc.hs.Head(rh.Status, c.appendClientFields(c.out[:0], head, rh, x.mode, x.b), x.mode == outNone)
	} else {
		c.out = c.appendResponseHead(c.out[:0], head, rh, x.mode, x.b)
		lc.off = 0
	}
	x.gotHead = true
	switch x.mode {
	case outFixed:
		x.left = rh.ContentLength
	case outChunked, outDechunk:
		x.ck = edge.NewChunked(edge.Limits{MaxHeaderBytes: edge.MaxResponseHeaderBytes, MaxHeaders: 1000})
	}
	return lc.relay()
}

// relay passes on the response body bytes at u.buf[u.r:u.wr]; it reports
// whether the response ended (the attempt is done).
func (lc *lconn) relay() bool {
	if lc.hs != nil {
		return lc.relayStream()
	}
	x := &lc.r.x
	u := x.u
	q := &lc.c.req
	avail := u.buf[u.r:u.wr]
	m := len(avail)
	done := false
	switch x.mode {
	case outNone:
		m, done = 0, true
	case outFixed:
		m = int(min(int64(m), x.left))
		x.left -= int64(m)
		done = x.left == 0
	case outChunked:
		n, d, err := x.ck.Feed(avail)
		if err != nil {
			return lc.bodyFailed(err)
		}
		m, done = n, d
	}
	if m > 0 {
		if x.mode == outChunkEncode {
			// The size line waits in c.out to go with the data.
			lc.c.out = strconv.AppendInt(lc.c.out, int64(m), 16)
			lc.c.out = append(lc.c.out, '\r', '\n')
			lc.send(avail[:m], crlf)
		} else {
			lc.send(avail[:m], nil)
		}
		u.r += m
		q.rec.Bytes += int64(m)
	}
	if u.r == u.wr {
		u.r, u.wr = 0, 0
	}
	if !done {
		if x.mode == outFixed && x.left >= spliceMin && u.r == u.wr && lc.off == len(lc.c.out) && lc.tb == nil {
			// The rest of a large body goes by splice, as on the
			// goroutine engine (copyFixed), once the client took what
			// went before it; the buffer is not needed meanwhile.
			if x.pipe = lc.w.pipes.Get(); x.pipe != nil {
				u.dropBuf()
			}
		}
		return false
	}
	x.u, u.lc = nil, nil
	if x.rh.Close || u.r < u.wr {
		// Bytes past the response's framing are no one's: the
		// connection goes.
		u.close()
	} else {
		u.release()
	}
	lc.delivered(nil)
	return true
}

// splice moves the rest of a fixed-length body from the backend to the
// client through the exchange's pipe, as the two sockets allow: the pipe is
// emptied into the client before it is filled again, so it holds at most
// one fill. It reports whether the response ended (the attempt is done);
// false: wait for an event, or the client is gone (lc.gone).
func (lc *lconn) splice() bool {
	x := &lc.r.x
	u, p := x.u, x.pipe
	q := &lc.c.req
	for {
		if p.N > 0 {
			if !lc.Wr {
				return false
			}
			n, e := p.Drain(lc.fd)
			switch {
			case e == unix.EAGAIN:
				lc.Wr = false
				lc.tooLate()
				return false
			case e != 0:
				lc.gone = true
				q.closeAfter = true
				return false
			}
			q.rec.Bytes += int64(n)
			continue
		}
		if x.left == 0 {
			x.u, u.lc = nil, nil
			if x.rh.Close {
				u.close()
			} else {
				u.release()
			}
			lc.delivered(nil)
			return true
		}
		if !u.Rd {
			return false
		}
		n, e := p.Fill(u.fd, int(min(x.left, 1<<20)))
		switch {
		case e == unix.EAGAIN:
			u.Rd = false
			return false
		case e != 0:
			return lc.bodyFailed(e)
		case n == 0:
			return lc.bodyFailed(io.ErrUnexpectedEOF)
		}
		x.left -= int64(n)
	}
}

// delivered ends an attempt whose response went to the client (whole, or
// broken off by err).
func (lc *lconn) delivered(err error) {
	if p := lc.r.x.pipe; p != nil {
		lc.r.x.pipe = nil
		lc.w.pipes.Put(p)
	}
	o := proxy.Outcome{Class: proxy.Done, Status: lc.r.x.rh.Status, Err: err}
	if err != nil {
		lc.c.req.abort = true
		if lc.hs != nil {
			lc.hs.Reset()
		}
	}
	lc.attemptDone(o)
}

// bodyFailed ends an attempt whose response body broke off after its head
// went to the client: the client's connection ends unfinished.
func (lc *lconn) bodyFailed(err error) bool {
	lc.dropUp()
	lc.delivered(err)
	return true
}

// upFailed ends an attempt whose backend connection failed: before the
// response head, a Reset; after it, the client's connection ends.
func (lc *lconn) upFailed(err error) bool {
	x := &lc.r.x
	if x.gotHead {
		return lc.bodyFailed(err)
	}
	lc.dropUp()
	lc.attemptDone(proxy.Outcome{Class: proxy.Reset, Err: err})
	return true
}
