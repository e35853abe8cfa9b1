package main

// The streams of the prototype's HTTP/2 connections (h2.go): a request's
// checks and the head its backend gets, its exchange on a backend connection
// of the loop's, the response's HEADERS and DATA within the flow-control
// windows, and its end.

import (
	"strconv"
	"strings"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2stream is one request and its response.
type h2stream struct {
	c        *h2client
	id       uint32
	u        *upconn
	be       int
	ob       []byte // the HTTP/1.1 head for the backend; ob[ooff:] is unwritten
	ooff     int
	retry    bool // may go once more on a new connection (bodiless, idempotent)
	retried  bool
	gotByte  bool
	isHead   bool
	rh       edge.ResponseHead
	mode     int
	rleft    int64
	headSent bool
	respDone bool
	upClose  bool
	ended    bool // END_STREAM sent
	sendWin  int64
	pend     []byte // response body waiting for window
	idv      []byte
	idb      [64]byte
	// -core (core.go)
	cored  bool
	cr     coreReq
	bytes  int64
	status int // the prototype's own answer (fail)
}

// start checks the request's fields, writes its HTTP/1.1 head for the
// backend and sends it on a connection of the loop's.
func (c *h2client) start(id uint32) {
	l := c.l
	var method, path, authority, scheme, host string
	regular, cookies := false, 0
	for _, f := range c.fields {
		if strings.HasPrefix(f.Name, ":") {
			var dst *string
			switch f.Name {
			case ":method":
				dst = &method
			case ":path":
				dst = &path
			case ":authority":
				dst = &authority
			case ":scheme":
				dst = &scheme
			}
			if regular || dst == nil || *dst != "" {
				c.rst(id, http2.ErrCodeProtocol)
				return
			}
			*dst = f.Value
			continue
		}
		regular = true
		if !validLowerName(f.Name) || !httpguts.ValidHeaderFieldValue(f.Value) {
			c.rst(id, http2.ErrCodeProtocol)
			return
		}
		switch f.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			c.rst(id, http2.ErrCodeProtocol)
			return
		case "te":
			if f.Value != "trailers" {
				c.rst(id, http2.ErrCodeProtocol)
				return
			}
		case "host":
			if host != "" {
				c.rst(id, http2.ErrCodeProtocol)
				return
			}
			host = f.Value
		case "cookie":
			cookies++
		}
	}
	if method == "CONNECT" {
		c.answer(id, 501)
		return
	}
	if method == "" || path == "" || path[0] != '/' || scheme != "http" && scheme != "https" ||
		authority != "" && host != "" && authority != host {
		c.rst(id, http2.ErrCodeProtocol)
		return
	}
	if authority == "" {
		authority = host
	}
	if authority == "" || strings.IndexByte(authority, '@') >= 0 || !httpguts.ValidHostHeader(authority) {
		c.rst(id, http2.ErrCodeProtocol)
		return
	}
	st := l.newStream()
	st.c, st.id, st.sendWin = c, id, c.initWin
	st.isHead = method == "HEAD"
	switch method {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE":
		st.retry = true
	}
	for _, f := range c.fields {
		if f.Name == "x-request-id" && proxy.ValidRequestID(f.Value) {
			st.idv = append(st.idb[:0], f.Value...)
			break
		}
	}
	if st.idv == nil {
		st.idv = l.cfg.ids.AppendNext(st.idb[:0])
	}
	_, escaped, query := proxy.SplitTarget(path)
	npath := route.NormalizePath(escaped)
	be, refused := -1, 0
	if k := l.cfg.core; k != nil {
		be, refused = k.begin(&st.cr, proxy.HTTP2, st.retry, authority, npath, query, h2Fields(c.fields), c.peer)
		st.cored = true
	}
	o := l.outs.Get()[:0]
	o = append(o, method...)
	o = append(o, ' ')
	o = append(o, npath...)
	if query != "" {
		o = append(o, '?')
		o = append(o, query...)
	}
	o = append(o, " HTTP/1.1\r\nHost: "...)
	o = append(o, authority...)
	o = append(o, "\r\n"...)
	for _, f := range c.fields {
		n := f.Name
		if n[0] == ':' || n == "host" || n == "x-request-id" || n == "cookie" && cookies > 1 ||
			proxy.IsHop(n) || dropsForwarding([]byte(n)) {
			continue
		}
		o = append(o, n...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
	if cookies > 1 { // one field, as HTTP/1.1 wants (RFC 9113 §8.2.3)
		o = append(o, "cookie: "...)
		sep := false
		for _, f := range c.fields {
			if f.Name == "cookie" {
				if sep {
					o = append(o, "; "...)
				}
				o, sep = append(o, f.Value...), true
			}
		}
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Forwarded-For: "...)
	o = c.peer.AppendTo(o)
	o = append(o, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "...)
	o = append(o, authority...)
	o = append(o, "\r\nX-Request-Id: "...)
	o = append(o, st.idv...)
	o = append(o, "\r\n\r\n"...)
	st.ob = o
	c.streams[id] = st
	if st.cored {
		if be < 0 {
			st.fail(refused)
			return
		}
		st.be = be
	} else {
		st.be = l.rr % len(l.cfg.backends)
		l.rr++
	}
	u, err := l.getUp(st.be)
	if err != nil {
		st.fail(503)
		return
	}
	st.u, u.s = u, st
	st.pump()
}

// validLowerName reports whether s is a field name as HTTP/2 carries it:
// a token in lower case.
func validLowerName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'A' <= b && b <= 'Z' || !httpguts.IsTokenRune(rune(b)) {
			return false
		}
	}
	return true
}

func (l *worker) newStream() *h2stream {
	if n := len(l.sts); n > 0 {
		st := l.sts[n-1]
		l.sts = l.sts[:n-1]
		return st
	}
	return new(h2stream)
}

// pump writes the request to the backend and reads and relays its
// response, as far as the sockets and the windows allow.
func (st *h2stream) pump() {
	for !st.respDone {
		u := st.u
		if u == nil || u.connecting {
			return
		}
		if st.ooff < len(st.ob) {
			switch u.send(st.ob, &st.ooff) {
			case ioWait:
				return
			case ioFailed:
				st.upFailed()
			}
			continue
		}
		if u.r < u.w {
			if !st.headSent {
				if !st.parseHead() {
					if st.respDone || st.u != u {
						continue
					}
					if !st.readUp() {
						return
					}
				}
			} else {
				st.relay()
			}
			continue
		}
		if len(st.pend) > 0 {
			return // the window is shut: read no more until it opens
		}
		if !st.readUp() {
			return
		}
	}
	st.tryEnd()
}

// readUp reads from the backend; false when nothing more can be read now.
func (st *h2stream) readUp() bool {
	switch st.u.fill() {
	case ioWait:
		return false
	case ioTooLong:
		st.fail(502) // a head larger than the buffer
		return false
	case ioFailed:
		if st.headSent && st.mode == bodyClose {
			st.respDone, st.upClose = true, true
			return true
		}
		st.upFailed()
		return true
	}
	st.gotByte = true
	return true
}

// parseHead parses the response head and queues its HEADERS; false when
// the head is not whole yet or the stream failed.
func (st *h2stream) parseHead() bool {
	u, c := st.u, st.c
	n, err := edge.ParseResponseHead(u.in[u.r:u.w], &st.rh)
	if err != nil {
		st.fail(502)
		return false
	}
	if n == 0 {
		return false
	}
	rh := &st.rh
	head := u.in[u.r : u.r+n]
	u.r += n
	if rh.Status < 200 {
		if rh.Status == 101 {
			st.fail(502)
			return false
		}
		return true // an interim response: dropped, the final one follows
	}
	switch {
	case edge.NoBody(st.isHead, rh.Status):
		st.mode = bodyNone
	case rh.Chunked:
		st.fail(502) // chunked responses are left out of the prototype
		return false
	case rh.ContentLength >= 0:
		st.mode, st.rleft = bodyFixed, rh.ContentLength
	default:
		st.mode = bodyClose
		st.upClose = true
	}
	if rh.Close {
		st.upClose = true
	}
	st.respDone = st.mode == bodyNone || st.mode == bodyFixed && st.rleft == 0
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusString(rh.Status)})
	var cn connNames
	cn.collect(head, rh.First)
	var lb [64]byte
	for f := range edge.Fields(head, rh.First) {
		name := bstr(f.Name)
		if len(f.Name) > len(lb) || proxy.IsHop(name) || cn.names(f.Name) ||
			len(name) == 12 && edge.EqualFold(f.Name, "x-request-id") ||
			st.mode != bodyFixed && len(name) == 14 && edge.EqualFold(f.Name, "content-length") {
			continue
		}
		for i, b := range f.Name {
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			lb[i] = b
		}
		c.enc.WriteField(hpack.HeaderField{Name: c.interned(lb[:len(f.Name)]), Value: c.interned(f.Value)})
	}
	// The request ID differs per request: never indexed, so the encoder
	// keeps no reference to the stream's buffer.
	c.enc.WriteField(hpack.HeaderField{Name: "x-request-id", Value: bstr(st.idv), Sensitive: true})
	c.writeHeaders(st.id, c.hbuf.Bytes(), st.respDone)
	st.headSent = true
	if st.cored {
		c.l.cfg.core.header(&st.cr)
	}
	st.ended = st.respDone
	return true
}

// interned returns b as a string, the same one each time (up to 4,096
// distinct strings per connection, then it starts again).
func (c *h2client) interned(b []byte) string {
	if s, ok := c.intern[bstr(b)]; ok {
		return s
	}
	if len(c.intern) >= 4096 {
		clear(c.intern)
	}
	s := string(b)
	c.intern[s] = s
	return s
}

// statusStrings holds the :status values, made once before any loop
// runs (the loops only read it).
var statusStrings = func() (s [600]string) {
	for i := 100; i < len(s); i++ {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func statusString(code int) string {
	if code < 100 || code >= len(statusStrings) {
		return strconv.Itoa(code)
	}
	return statusStrings[code]
}

// relay sends the body bytes at u.in[u.r:u.w] that belong to the response.
func (st *h2stream) relay() {
	u := st.u
	avail := u.in[u.r:u.w]
	m := len(avail)
	if st.mode == bodyFixed {
		m = int(min(int64(m), st.rleft))
		if st.rleft -= int64(m); st.rleft == 0 {
			st.respDone = true
		}
	}
	u.r += m
	st.bytes += int64(m)
	st.send(avail[:m])
}

// send queues body bytes as DATA frames as far as the windows allow; the
// rest waits in st.pend.
func (st *h2stream) send(p []byte) {
	c := st.c
	if len(st.pend) > 0 {
		st.pend = append(st.pend, p...)
		return
	}
	for len(p) > 0 {
		n := int(min(int64(len(p)), int64(c.maxFrame), st.sendWin, c.sendWin))
		if n <= 0 {
			st.pend = append(st.pend, p...)
			return
		}
		end := n == len(p) && st.respDone
		var fl http2.Flags
		if end {
			fl = http2.FlagDataEndStream
			st.ended = true
		}
		c.out = appendFrameHeader(c.out, n, http2.FrameData, fl, st.id)
		c.out = append(c.out, p[:n]...)
		st.sendWin -= int64(n)
		c.sendWin -= int64(n)
		p = p[n:]
	}
}

// pushPending sends what streams hold for want of window, and moves them
// on.
func (c *h2client) pushPending() {
	for _, st := range c.streams {
		if len(st.pend) == 0 {
			continue
		}
		p := st.pend
		st.pend = nil
		st.send(p)
		if len(st.pend) == 0 {
			st.pump()
		}
	}
}

// tryEnd ends a stream whose response was read whole, once its body is
// sent.
func (st *h2stream) tryEnd() {
	if !st.respDone || len(st.pend) > 0 {
		return
	}
	if !st.ended {
		st.c.out = appendFrameHeader(st.c.out, 0, http2.FrameData, http2.FlagDataEndStream, st.id)
		st.ended = true
	}
	st.end(true)
}

// end ends the stream: its backend connection goes back to the idle stack
// when the response ended cleanly, else it is closed.
func (st *h2stream) end(clean bool) {
	c, l := st.c, st.c.l
	if st.cored {
		l.cfg.core.finish(&st.cr, answered(st.status, st.headSent, &st.rh), st.bytes)
	}
	if u := st.u; u != nil {
		u.s, st.u = nil, nil
		u.release(clean && !st.upClose && st.ooff == len(st.ob))
	}
	delete(c.streams, st.id)
	if st.ob != nil {
		l.outs.Put(st.ob)
	}
	*st = h2stream{}
	l.sts = append(l.sts, st)
}

// upFailed handles a backend connection that failed before the response
// was whole: a bodiless idempotent request that got no byte back on a
// reused connection goes once more on a new one; else the client gets a
// 502, or a reset if its response had begun.
func (st *h2stream) upFailed() {
	c, l := st.c, st.c.l
	if u := st.u; u != nil {
		u.s, st.u = nil, nil
		u.close()
		if !st.gotByte && u.reused && st.retry && !st.retried {
			st.retried = true
			l.retries++
			if nu, err := l.dial(st.be); err == nil {
				st.u, nu.s, st.ooff = nu, st, 0
				return
			}
		}
	}
	if st.headSent {
		c.rst(st.id, http2.ErrCodeInternal)
		st.end(false)
		return
	}
	st.fail(502)
}

// fail answers the stream with an error status of the prototype's own.
func (st *h2stream) fail(status int) {
	c, id := st.c, st.id
	st.upClose, st.status = true, status
	st.end(false)
	c.answer(id, status)
}
