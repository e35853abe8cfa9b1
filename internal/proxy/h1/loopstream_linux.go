package h1

// HTTP/2 streams forwarded on a loop, with no goroutine: the request of a
// stream that the loop can forward as it forwards HTTP/1.1 (no body, a
// pool of plain HTTP/1.1 backends named by address) is served by the loop
// that reads its connection (package h2 on a Socket). h2 gives the
// request as the HTTP/1.1 head of its checked fields; the engine's own
// request path (edge.ParseRequestHead, begin, resolve, buildOutbound) and
// the loop's attempts (loopx_linux.go, over the loop's backend
// connections) forward it as they forward an HTTP/1.1 request, so the
// limits, routing, forwarding fields, retries and timeouts are one code;
// the response goes to the stream (StreamOut), which frames it.
//
// The request is an lconn of its own (hs set, no socket): one request, at
// whose end it is over. Its client side is the stream's: the response
// head as fields, the body de-chunked (trailers as trailers) or as it
// comes until the backend closes, and back-pressure from the stream's
// flow-control windows and the connection's socket (Held, Resume).

import (
	"errors"
	"strconv"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
)

// StreamOut is where the response of a stream forwarded on a loop goes
// (package h2's stream). The loop calls it, with none of the caller's
// locks held; its last call is Head with end, Data with end, Trailers or
// Reset.
type StreamOut interface {
	// Head sends the response head: its status and fields, one
	// "Name: value\r\n" line each; end: no body follows.
	Head(status int, fields []byte, end bool)
	// Data sends body bytes (copied before it returns); end: the last.
	Data(p []byte, end bool)
	// Trailers ends the body with trailer fields (as Head's).
	Trailers(fields []byte)
	// Held reports whether what was sent waits for the client (its
	// flow-control windows, or the connection's socket): send no more
	// until Resume.
	Held() bool
	// Reset ends the stream with an error: the response broke off.
	Reset()
}

// LoopStream is a stream's request being forwarded on its loop.
type LoopStream interface {
	// Cancel ends it: the client reset the stream, or its connection
	// ended. From any goroutine.
	Cancel()
	// Resume goes on once what was sent no longer waits (Held turned
	// false). On the loop, with none of the stream's locks held.
	Resume()
}

// ForwardStream forwards on sk's loop the request of an HTTP/2 stream
// without a body, given as the HTTP/1.1 head of its fields, when the loop
// can forward it itself; its response goes to out. False: nothing was
// done, and the stream is to be served as the loop does not serve it (a
// worker). Call it on sk's loop. It leaves to the caller what a worker
// answers differently: CONNECT and TRACE, gRPC, Expect, a content-length,
// a missing :authority.
func (e *Engine) ForwardStream(sk *Socket, head []byte, out StreamOut) (LoopStream, bool) {
	l := e.o.View.Load()
	if sk.w == nil || l.SharedLimits() || e.shutting.Load() {
		return nil, false
	}
	sc := &streamConn{c: h1conn{e: e, ctx: e.ctx, raddr: sk.t.raddr, peer: sk.t.raddr.Addr(), h2: true, sp: &sk.w.spares}}
	c := &sc.c
	if cs := sk.state(); cs != nil {
		c.nc = sk.tc // its client certificate (clientCert)
		c.tlsDone, c.tlsVer = true, cs.Version
	}
	c.acquire()
	if len(head) > len(c.buf) {
		c.release()
		return nil, false
	}
	c.w = copy(c.buf, head)
	q := &c.req
	n, err := edge.ParseRequestHead(c.buf[:c.w], e.lim, &q.head)
	h := &q.head
	if err != nil || n != c.w || h.Minor != 1 || h.AbsoluteForm || h.Chunked || h.ContentLength > 0 ||
		edge.CheckOriginForm(bstr(h.Method), bstr(h.Target)) != nil || !sk.w.servesRoute(l, c, sk, n) {
		// The worker answers the refusal (431, 414, 400, 421) as it
		// answers HTTP/2 requests, or forwards what the loop does not.
		c.r = c.w
		c.release()
		return nil, false
	}
	q.hlen = n
	sc.lc = lconn{c: c, w: sk.w, fd: -1, slot: noSlot{}, hs: out, sv: l}
	lc := &sc.lc
	lc.ctx.lc = lc
	// It starts at the end of the loop's wake-up (Flush), once the
	// caller's locks are let go: its answer may come at once.
	sk.w.ev.Defer(lc)
	return lc, true
}

// streamConn is a stream's request on a loop: one allocation.
type streamConn struct {
	c  h1conn
	lc lconn
}

// Flush starts a stream's request (ForwardStream deferred it to the end of
// the loop's wake-up); a stream the client reset meanwhile is counted as
// gone.
func (lc *lconn) Flush() {
	l := lc.sv
	lc.sv = nil
	if lc.closed {
		return
	}
	if lc.gone {
		c := lc.c
		c.beginIn(l)
		c.consumeHead()
		lc.forwarded(proxy.Result{Outcome: proxy.Outcome{Class: proxy.ClientGone, Err: errClientGone}})
		lc.drive()
		return
	}
	lc.startStream(l)
}

// servesRoute reports whether the loop forwards the request whose head
// of n bytes is at c.buf, under l: the certificate covers its authority
// (else 421), it is not an ACME challenge (the worker answers those), and
// the route it takes leads to a pool the loop serves. Nothing is counted:
// the rate limits are resolve's.
func (w *lworker) servesRoute(l *proxy.Listener, c *h1conn, sk *Socket, n int) bool {
	h := &c.req.head
	host := bstr(h.Host)
	if cs := sk.state(); l.Covers != nil && cs != nil && !l.Covers(cs, host) {
		return false
	}
	hb := c.buf[:n]
	// The request's own (begin sets it again): a local would escape to
	// the heap through Lookup's interface, one allocation per stream.
	raw := &c.req.raw
	*raw = rawFields{head: hb, first: edge.FirstField(hb, h.Lead)}
	_, escaped, _ := proxy.SplitTarget(bstr(h.Target))
	path := route.NormalizePath(escaped)
	if l.ACME != nil {
		if _, ok := proxy.ChallengeToken(path); ok {
			return false
		}
	}
	idx, _ := l.Routes.Lookup(host, path, raw)
	return idx < 0 || idx >= len(l.Targets) || w.serves(l.Targets[idx])
}

// startStream serves the stream's request: lconn.start's path, under the
// view servesRoute checked.
func (lc *lconn) startStream(l *proxy.Listener) {
	c := lc.c
	q := &c.req
	c.beginIn(l)
	c.consumeHead()
	lc.phase = lExchange
	if status := c.resolve(&lc.ctx); status != 0 {
		lc.answerFail(status, refusal(status), false)
		lc.drive()
		return
	}
	if !lc.w.serves(q.t) {
		// The pool's members changed since servesRoute: a backend by
		// host name, which the loop does not dial.
		lc.forwarded(proxy.Result{Outcome: proxy.Outcome{Class: proxy.Reset, Err: errNotOnLoop}})
		lc.drive()
		return
	}
	lc.forward()
	lc.drive()
}

// errNotOnLoop: the pool of a stream's request changed between the
// loop's check and the request's routing, to one the loop does not serve.
var errNotOnLoop = errors.New("the pool's backends changed to one the event loop does not dial (a host name)")

// answerFail queues an answer sluice makes itself (fail's) with status,
// to the client's connection or to the stream.
func (lc *lconn) answerFail(status int, msg string, closeConn bool) {
	c := lc.c
	if lc.hs == nil {
		lc.answer(status, c.failAnswer(status, msg, closeConn))
		return
	}
	q := &c.req
	o := c.appendFailFields(c.out[:0], status)
	o = append(o, "Content-Length: "...)
	o = strconv.AppendInt(o, int64(len(msg)+1), 10)
	o = append(o, "\r\n"...)
	fields := len(o)
	if !q.isHead {
		o = append(o, msg...)
		o = append(o, '\n')
		q.rec.Bytes = int64(len(msg) + 1)
	}
	lc.hs.Head(status, o[:fields], q.isHead)
	if !q.isHead {
		lc.hs.Data(o[fields:], true)
	}
	c.out = o[:0]
	q.rec.Status = status
	lc.phase = lAnswered
}

// relayStream passes on to the stream the response body bytes at
// u.buf[u.r:u.wr]: a chunked body's content (its trailers as trailers),
// a fixed-length body, or one that ends with the backend's connection.
// It reports whether the response ended (the attempt is done).
func (lc *lconn) relayStream() bool {
	x := &lc.r.x
	u := x.u
	q := &lc.c.req
	done := false
	switch x.mode {
	case outNone:
		done = true
	case outFixed:
		m := int(min(int64(u.wr-u.r), x.left))
		x.left -= int64(m)
		done = x.left == 0
		if m > 0 || done {
			lc.hs.Data(u.buf[u.r:u.r+m], done)
			u.r += m
			q.rec.Bytes += int64(m)
		}
	case outRaw:
		if m := u.wr - u.r; m > 0 {
			lc.hs.Data(u.buf[u.r:u.wr], false)
			u.r = u.wr
			q.rec.Bytes += int64(m)
		}
	case outDechunk:
		// Framing bytes one at a time, data in runs (as copyChunked).
		for u.r < u.wr && !done {
			if left := x.ck.DataLeft(); left > 0 {
				k := int(min(left, int64(u.wr-u.r)))
				lc.hs.Data(u.buf[u.r:u.r+k], false)
				x.ck.Skip(k)
				u.r += k
				q.rec.Bytes += int64(k)
				continue
			}
			trailer := x.ck.InTrailer()
			_, d, err := x.ck.Feed(u.buf[u.r : u.r+1])
			if err != nil {
				return lc.bodyFailed(err)
			}
			if trailer {
				x.tr = append(x.tr, u.buf[u.r])
			}
			u.r++
			done = d
		}
		if done {
			// The section ends with its empty line; what is before it
			// are the trailer fields, checked as the parser checks a
			// head's.
			if n := len(x.tr) - 2; n > 0 {
				lc.hs.Trailers(x.tr[:n])
			} else {
				lc.hs.Data(nil, true)
			}
		}
	}
	if u.r == u.wr {
		u.r, u.wr = 0, 0
	}
	if !done {
		return false
	}
	x.u, u.lc = nil, nil
	if x.rh.Close || u.r < u.wr {
		u.close() // bytes past the response's framing are no one's
	} else {
		u.release()
	}
	lc.delivered(nil)
	return true
}

// endStream ends a stream's request once it is over: its buffers go back.
// A response not ended by then (a panic on the loop) is reset.
func (lc *lconn) endStream() {
	c := lc.c
	lc.hs.Reset() // nothing, when the response ended
	c.r = c.w
	c.release()
}

// Cancel ends the request: its client reset the stream or left.
func (lc *lconn) Cancel() {
	lc.w.ev.PostTo(lc, lc.cancelled)
}

func (lc *lconn) cancelled() {
	if lc.closed {
		return
	}
	lc.gone = true
	if lc.sv != nil {
		return // not started yet: Flush sees gone
	}
	lc.drive()
}

// Resume goes on relaying the response once the stream took what waited.
func (lc *lconn) Resume() {
	if !lc.closed {
		lc.drive()
	}
}
