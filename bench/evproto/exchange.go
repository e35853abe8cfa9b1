package main

import (
	"strconv"

	"github.com/sluice-lb/sluice/internal/proxy"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/loop"
	"golang.org/x/sys/unix"
)

// Body framings, of the request towards the backend and of the response
// towards the client.
const (
	bodyNone = iota
	bodyFixed
	bodyChunked
	bodyClose // response only: until the backend closes
)

// exchange is one request and its response, from the parsed head to the
// last byte of the response. A loop keeps a free list of them: a request
// allocates nothing.
type exchange struct {
	c    *client
	u    *upconn
	be   int
	head edge.Head
	// ob holds what goes to the backend: the rewritten head, then pieces
	// of the body; ob[ooff:] is not written yet. Until a body byte
	// replaces it, ob[:headLen] is the head, kept for a retry.
	ob        []byte
	ooff      int
	headLen   int
	body      int
	left      int64
	ck        edge.Chunked
	reqDone   bool
	retryable bool
	retried   bool
	isHead    bool

	rh         edge.ResponseHead
	gotByte    bool // a response byte arrived (no retry after that)
	gotHead    bool // the final response head went to the client
	mode       int
	rleft      int64
	rck        edge.Chunked
	respDone   bool
	closeAfter bool // close the client after this response
	upClose    bool // do not reuse the upstream connection

	id  []byte
	idb [64]byte

	// -core (core.go): the request's part in sluice's core
	host, path, query string // as the core sees them (they alias the client's buffer)
	cored             bool   // cr holds a request to account for
	cr                coreReq
	bytes             int64 // body bytes relayed to the client
	failed            int   // the status of the prototype's own answer (fail)
}

func (l *worker) newExchange(c *client) *exchange {
	var x *exchange
	if n := len(l.xs); n > 0 {
		x = l.xs[n-1]
		l.xs = l.xs[:n-1]
	} else {
		x = new(exchange)
	}
	x.c = c
	return x
}

func (l *worker) freeExchange(x *exchange) {
	if x.ob != nil {
		l.outs.Put(x.ob)
	}
	*x = exchange{}
	l.xs = append(l.xs, x)
}

// start begins the exchange of the request whose head, n bytes, is at
// c.in[c.r:]: it rewrites the head for the backend, picks the backend
// (round robin), and takes an idle connection to it or dials one.
func (c *client) start(x *exchange, n int) bool {
	l := c.l
	h := &x.head
	var refusal string
	switch {
	case h.Minor == 0:
		refusal = "evproto: HTTP/1.0 clients are left out of the prototype"
	case h.WebSocket:
		refusal = "evproto: upgrades are left out of the prototype"
	case string(h.Target) == "*":
		refusal = "evproto: OPTIONS * is left out of the prototype"
	}
	if refusal != "" {
		l.freeExchange(x)
		c.refuse(501, refusal)
		return false
	}
	hb := c.in[c.r : c.r+n]
	x.isHead = string(h.Method) == "HEAD"
	switch {
	case h.Chunked:
		x.body = bodyChunked
		x.ck = edge.NewChunked(l.cfg.lim)
	case h.ContentLength > 0:
		x.body, x.left = bodyFixed, h.ContentLength
	}
	switch string(h.Method) {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE":
		x.retryable = x.body == bodyNone
	}
	x.ob = appendOutbound(l.outs.Get()[:0], h, hb, c.peer, x, l.cfg)
	x.headLen = len(x.ob)
	be, refused := -1, 0
	if k := l.cfg.core; k != nil {
		be, refused = k.begin(&x.cr, proxy.HTTP11, x.retryable, x.host, x.path, x.query, headFields{hb, edge.FirstField(hb, h.Lead)}, c.peer)
		x.cored = true
	}
	x.host, x.path, x.query = "", "", ""
	c.r += n
	if !x.moveBody() {
		l.freeExchange(x)
		c.refuse(400, "malformed chunked body")
		return false
	}
	c.releaseIn()
	c.x = x
	c.deadline = l.ev.Now() + l.cfg.timeout
	if x.cored {
		if be < 0 {
			x.fail(refused, "refused by the core")
			return true
		}
		x.be = be
	} else {
		x.be = l.rr % len(l.cfg.backends)
		l.rr++
	}
	u, err := l.getUp(x.be)
	if err != nil {
		x.fail(503, "no connection to the backend: "+err.Error())
		return true
	}
	x.u, u.x = u, x
	return true
}

// moveBody moves what the client sent of the body from c.in to ob;
// false when the chunked framing is malformed.
func (x *exchange) moveBody() bool {
	c := x.c
	avail := c.in[c.r:c.w]
	if room := cap(x.ob) - len(x.ob); len(avail) > room {
		avail = avail[:room]
	}
	var m int
	switch x.body {
	case bodyFixed:
		m = int(min(int64(len(avail)), x.left))
		x.left -= int64(m)
	case bodyChunked:
		n, done, err := x.ck.Feed(avail)
		if err != nil {
			return false
		}
		m = n
		if done {
			x.body = bodyNone
		}
	}
	x.ob = append(x.ob, avail[:m]...)
	c.r += m
	return true
}

func (x *exchange) bodySent() bool {
	return x.body == bodyNone || x.body == bodyFixed && x.left == 0
}

// pumpRequest writes the request to the backend and, when it has a body,
// relays the rest of the body from the client as it comes.
func (x *exchange) pumpRequest() {
	c := x.c
	for {
		u := x.u
		if u == nil || u.connecting {
			return
		}
		if x.ooff < len(x.ob) {
			switch u.send(x.ob, &x.ooff) {
			case ioWait:
				return
			case ioFailed:
				x.upFailed()
				return
			}
			continue
		}
		if x.bodySent() {
			x.reqDone = true
			return
		}
		if c.r == c.w {
			if !c.Rd {
				return
			}
			if c.in == nil {
				c.in = c.l.bufs.Get()
			}
			n, e := loop.Read(c.fd, c.in[c.w:])
			if e == unix.EAGAIN {
				c.Rd = false
				c.releaseIn()
				return
			}
			if e != 0 || n == 0 {
				c.close() // the client left in the middle of its body
				return
			}
			if n < len(c.in)-c.w && !c.Hup {
				c.Rd = false
			}
			c.w += n
		}
		x.ob, x.ooff, x.headLen = x.ob[:0], 0, 0
		c.deadline = c.l.ev.Now() + c.l.cfg.timeout
		if !x.moveBody() {
			c.close()
			return
		}
		c.releaseIn()
	}
}

// upFailed handles a backend connection that failed before the response
// was whole: a request that may be sent again and got no byte back on a
// reused connection goes once more on a new one; else the client gets a
// 502, or, if its response had begun, loses its connection.
func (x *exchange) upFailed() {
	c, l := x.c, x.c.l
	if u := x.u; u != nil {
		u.x = nil
		u.close()
		x.u = nil
		if !x.gotByte && u.reused && x.retryable && !x.retried && x.headLen > 0 {
			x.retried = true
			l.retries++
			if nu, err := l.dial(x.be); err == nil {
				x.u, nu.x = nu, x
				x.ob, x.ooff, x.reqDone = x.ob[:x.headLen], 0, false
				return
			}
		}
	}
	if x.gotHead {
		c.close()
		return
	}
	x.fail(502, "the backend connection failed")
}

// fail answers the client with an error of the prototype's own and ends
// the exchange (and, after the answer, the connection).
func (x *exchange) fail(status int, msg string) {
	x.failed = status
	if x.gotHead {
		x.c.close()
		return
	}
	if x.u != nil {
		x.u.x = nil
		x.u.close()
		x.u = nil
	}
	x.reqDone, x.respDone, x.closeAfter, x.gotHead = true, true, true, true
	var b [256]byte
	o := append(b[:0], "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, " Error\r\nContent-Type: text/plain\r\nConnection: close\r\nX-Request-Id: "...)
	o = append(o, x.id...)
	o = append(o, "\r\nContent-Length: "...)
	o = strconv.AppendInt(o, int64(len(msg)+1), 10)
	o = append(o, "\r\n\r\n"...)
	o = append(o, msg...)
	o = append(o, '\n')
	x.c.send(o)
}

// pumpResponse reads the response from the backend and relays it to the
// client, reading no more while the client has not taken what it got.
func (x *exchange) pumpResponse() {
	c := x.c
	for !x.respDone {
		u := x.u
		if u == nil {
			return
		}
		if u.r < u.w {
			if !x.gotHead {
				if !x.parseHead() {
					if x.respDone || c.closed || x.u != u {
						return
					}
					goto read // the head is not whole yet
				}
			} else {
				x.relay()
			}
			if x.respDone || c.closed {
				return
			}
			continue
		}
		if c.off < len(c.out) && !c.flush() {
			return // the client is slow: leave the rest in the backend's socket
		}
	read:
		if c.closed {
			return
		}
		switch u.fill() {
		case ioWait:
			return
		case ioTooLong:
			x.fail(502, "response head larger than the prototype's buffer")
			return
		case ioFailed:
			if x.gotHead && x.mode == bodyClose {
				x.respDone, x.closeAfter, x.upClose = true, true, true
				return
			}
			x.upFailed()
			return
		}
		x.gotByte = true
	}
}

// parseHead parses the response head at u.in[u.r:u.w] and queues its
// rewritten form for the client; false when it is not whole yet or the
// exchange failed.
func (x *exchange) parseHead() bool {
	u, c := x.u, x.c
	n, err := edge.ParseResponseHead(u.in[u.r:u.w], &x.rh)
	if err != nil {
		x.fail(502, "malformed response head from the backend")
		return false
	}
	if n == 0 {
		return false
	}
	rh := &x.rh
	head := u.in[u.r : u.r+n]
	u.r += n
	if c.out == nil {
		c.out = c.l.outs.Get()[:0]
	}
	if rh.Status < 200 {
		if rh.Status == 101 {
			x.fail(502, "evproto: upgrades are left out of the prototype")
			return false
		}
		// An interim response (100 Continue): relayed, then the final one.
		c.out = appendResponseHead(c.out, head, rh, x.id, bodyNone, false)
		return true
	}
	switch {
	case edge.NoBody(x.isHead, rh.Status):
		x.mode = bodyNone
	case rh.Chunked:
		x.mode = bodyChunked
		x.rck = edge.NewChunked(edge.Limits{MaxHeaderBytes: edge.MaxResponseHeaderBytes, MaxHeaders: 1000})
	case rh.ContentLength >= 0:
		x.mode, x.rleft = bodyFixed, rh.ContentLength
	default:
		x.mode = bodyClose
		x.closeAfter = true
	}
	if rh.Close {
		x.upClose = true
	}
	if x.head.Close || !x.reqDone {
		x.closeAfter = true
	}
	c.out = appendResponseHead(c.out, head, rh, x.id, x.mode, x.closeAfter)
	x.gotHead = true
	if x.cored {
		c.l.cfg.core.header(&x.cr)
	}
	if x.mode == bodyNone || x.mode == bodyFixed && x.rleft == 0 {
		x.respDone = true
	}
	return true
}

// relay passes on the body bytes at u.in[u.r:u.w] that belong to the
// response.
func (x *exchange) relay() {
	u, c := x.u, x.c
	avail := u.in[u.r:u.w]
	m := len(avail)
	switch x.mode {
	case bodyFixed:
		m = int(min(int64(m), x.rleft))
		if x.rleft -= int64(m); x.rleft == 0 {
			x.respDone = true
		}
	case bodyChunked:
		n, done, err := x.rck.Feed(avail)
		if err != nil {
			c.close() // broken framing from the backend: cut the client off
			return
		}
		m = n
		x.respDone = done
	}
	u.r += m
	x.bytes += int64(m)
	c.deadline = c.l.ev.Now() + c.l.cfg.timeout // progress: the one timeout starts again
	if c.off < len(c.out) && len(c.out)+m <= cap(c.out) {
		c.out = append(c.out, avail[:m]...) // with the head, in one write
	} else {
		c.send(avail[:m])
	}
}
