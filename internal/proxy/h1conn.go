package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/accesslog"
	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/route"
)

// Connection states, for graceful shutdown.
const (
	connIdle   int32 = iota // between requests: Shutdown may close it
	connActive              // a request is on its way
	connClosed
)

// h1conn is one client connection of the engine and the request on it.
type h1conn struct {
	e     *Engine
	nc    net.Conn
	tcp   *net.TCPConn
	peer  netip.Addr
	ctx   context.Context
	state atomic.Int32

	bp   *[]byte // the pooled read buffer (nil while idle)
	buf  []byte
	r, w int // unread bytes are buf[r:w]
	ob   *[]byte
	out  []byte // heads being written

	// idle holds the first bytes of a request that arrive while the
	// connection holds no read buffer (see readIdle).
	idle [512]byte

	bodyc    chan bodyResult // the streaming body writer's result
	iov      [3][]byte       // for vectored writes without allocating
	respConn connTokens      // of the response being relayed
	// stopping is set while endStream stops the body writer.
	stopping atomic.Bool
	req      h1req
}

// h1req is the state of the request in progress; reset for each.
type h1req struct {
	start    time.Time
	deadline time.Time // the pool's request timeout (zero: none)
	head     edge.Head
	hlen     int // head bytes at buf[r:]
	raw      rawFields
	l        *Listener
	t        *Target
	info     pool.PickInfo
	id       []byte
	idb      [64]byte
	host     string // for routing and the outbound Host
	path     string // normalised
	query    string

	isHead     bool
	idempotent bool
	expect     bool // Expect: 100-continue
	// expectOther: an Expect sluice cannot meet (417, as net/http).
	expectOther bool
	te          bool // TE: trailers
	websocket   bool
	hasConn     bool // the head has a Connection field
	conn        connTokens
	keepXFP     bool // a trusted peer's X-Forwarded-Proto stays
	keepXFH     bool

	body    h1body
	outHead int // length of the outbound head in out

	status     int
	bytes      int64
	closeAfter bool // close the connection after this exchange
	abort      bool // the response broke off: close without finishing it

	// For the access log only (copied when it is on).
	logMethod, logHost, logPath, logUA string
}

func newH1Conn(e *Engine, nc net.Conn) *h1conn {
	c := &h1conn{e: e, nc: nc, ctx: context.Background()}
	c.tcp, _ = nc.(*net.TCPConn)
	switch a := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		c.peer = a.AddrPort().Addr().Unmap()
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			c.peer = ap.Addr().Unmap()
		}
	}
	return c
}

// closeIfIdle closes c when it waits for a request (Shutdown).
func (c *h1conn) closeIfIdle() {
	if c.state.CompareAndSwap(connIdle, connClosed) {
		c.nc.Close()
	}
}

func (c *h1conn) serve() {
	defer func() {
		if v := recover(); v != nil {
			c.e.o.Logger.Error("engine: panic serving a connection; it was closed", "panic", v, "client", c.peer.String())
		}
		c.state.Store(connClosed)
		c.nc.Close()
		c.release()
		c.e.forget(c)
	}()
	for first := true; ; first = false {
		if !c.readHead(first) {
			return
		}
		if !c.handle() || c.e.shutting.Load() {
			return
		}
		if !c.state.CompareAndSwap(connActive, connIdle) {
			return
		}
	}
}

// acquire takes the read and write buffers for a request.
func (c *h1conn) acquire() {
	if c.bp == nil {
		c.bp = readBufs.Get().(*[]byte)
		c.buf = *c.bp
	}
	if c.ob == nil {
		c.ob = readBufs.Get().(*[]byte)
		c.out = (*c.ob)[:0]
	}
}

// release gives the buffers back while the connection has nothing
// buffered.
func (c *h1conn) release() {
	if c.bp != nil && c.r == c.w {
		if cap(c.buf) == readBufSize {
			*c.bp = c.buf[:readBufSize]
			readBufs.Put(c.bp)
		}
		c.bp, c.buf, c.r, c.w = nil, nil, 0, 0
	}
	if c.ob != nil {
		if cap(c.out) == readBufSize {
			*c.ob = c.out[:readBufSize]
			readBufs.Put(c.ob)
		}
		c.ob, c.out = nil, nil
	}
}

// readHead reads and parses the next request head into c.req. It answers
// refused heads and head timeouts itself and reports whether a request is
// ready.
func (c *h1conn) readHead(first bool) bool {
	to := &c.e.o.Timeouts
	var headDeadline time.Time
	if first && to.ReadHeader > 0 {
		headDeadline = time.Now().Add(to.ReadHeader)
	}
	idleDeadline := time.Time{}
	if !first && to.Idle > 0 {
		idleDeadline = time.Now().Add(to.Idle)
	}
	for {
		if c.r < c.w {
			if !c.state.CompareAndSwap(connIdle, connActive) && c.state.Load() != connActive {
				return false // Shutdown closed it
			}
			if headDeadline.IsZero() && to.ReadHeader > 0 {
				headDeadline = time.Now().Add(to.ReadHeader)
			}
			n, err := edge.ParseRequestHead(c.buf[c.r:c.w], c.e.lim, &c.req.head)
			if err != nil {
				var ee *edge.Error
				errors.As(err, &ee)
				c.refuse(ee.Status, ee.Reason)
				return false
			}
			if n > 0 {
				c.req.hlen = n
				return true
			}
			if !c.grow() {
				c.refuse(431, "request header too large")
				return false
			}
		}
		// Wait for bytes: the idle timeout until the first one, then
		// read_header from the first one.
		if c.r == c.w && !first {
			if c.readIdle(idleDeadline) {
				continue
			}
			return false
		}
		c.acquire()
		if c.w == len(c.buf) {
			if !c.grow() {
				c.refuse(431, "request header too large")
				return false
			}
		}
		c.nc.SetReadDeadline(headDeadline)
		n, err := c.nc.Read(c.buf[c.w:])
		c.w += n
		if n > 0 {
			continue
		}
		if err != nil {
			if isTimeout(err) && c.r < c.w && !c.e.shutting.Load() {
				c.refuse(408, "request header timeout")
			}
			return false
		}
	}
}

// readIdle waits for the first bytes of the next request with no buffer
// of the pool held: they arrive in c.idle and are copied to a read buffer
// taken then. An idle keep-alive connection so costs its goroutine and
// this struct, not buffers.
func (c *h1conn) readIdle(deadline time.Time) bool {
	c.release()
	c.nc.SetReadDeadline(deadline)
	n, _ := c.nc.Read(c.idle[:])
	if n == 0 {
		return false
	}
	c.acquire()
	c.r, c.w = 0, copy(c.buf, c.idle[:n])
	return true
}

// grow makes room for more of a head: it moves the unread bytes to the
// front, or takes a bigger buffer, up to what the limits allow.
func (c *h1conn) grow() bool {
	if c.r > 0 {
		copy(c.buf, c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
		return true
	}
	max := c.e.o.Limits.MaxHeaderBytes
	if max <= 0 {
		max = edge.DefaultMaxHeaderBytes
	}
	max += 64 + 2 // lead bytes and the final CRLF
	if len(c.buf) >= max {
		return false
	}
	nb := make([]byte, min(4*len(c.buf), max))
	copy(nb, c.buf[:c.w])
	if cap(c.buf) == readBufSize {
		*c.bp = c.buf[:readBufSize]
		readBufs.Put(c.bp)
	}
	c.bp = &nb
	c.buf = nb
	return true
}

// refuse answers a request the engine will not serve and closes the
// connection, lingering so the client reads the answer.
func (c *h1conn) refuse(status int, reason string) {
	c.acquire()
	c.req = h1req{start: time.Now(), l: c.e.o.View.Load()}
	c.req.id = c.e.o.IDs.AppendNext(c.req.idb[:0])
	c.fail(status, reason, true)
	c.req.l.account(nil, nil, status, time.Since(c.req.start))
	c.linger()
}

// linger half-closes the connection and reads what the client still sends
// for a short while, so that its unread bytes do not make the kernel reset
// the connection before the client has read the answer.
func (c *h1conn) linger() {
	if c.tcp == nil || c.tcp.CloseWrite() != nil {
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	c.acquire()
	for total := 0; total < 256<<10; {
		n, err := c.nc.Read(c.buf)
		total += n
		if err != nil {
			return
		}
	}
}

const lingerTime = 500 * time.Millisecond

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// handle serves the request whose head is at buf[r:]; it reports whether
// the connection may carry another.
func (c *h1conn) handle() bool {
	q := &c.req
	if q.body.hp != nil {
		bodyBufs.Put(q.body.hp) // the previous request's body buffer
	}
	head := q.head
	*q = h1req{start: time.Now(), head: head, hlen: q.hlen}
	q.l = c.e.o.View.Load()
	l := q.l
	hb := c.buf[c.r : c.r+q.hlen]
	q.raw = rawFields{head: hb, first: edge.FirstField(hb, q.head.Lead)}
	if to := c.e.o.Timeouts.Write; to > 0 {
		c.nc.SetWriteDeadline(q.start.Add(to))
	}
	c.scanFields()
	q.closeAfter = q.head.Close
	q.isHead = string(q.head.Method) == "HEAD"
	q.idempotent = q.idempotent || idempotent(bstr(q.head.Method))
	q.websocket = q.head.WebSocket
	q.body.init(&q.head)

	q.host = bstr(q.head.Host)
	authority, escaped, query := splitTarget(bstr(q.head.Target))
	if q.head.AbsoluteForm {
		q.host = authority
	}
	q.query = query
	q.path = route.NormalizePath(escaped)
	if c.e.o.Access != nil {
		q.logMethod, q.logHost, q.logPath = string(q.head.Method), strings.Clone(q.host), strings.Clone(escaped)
		q.logUA, _ = q.raw.Value("User-Agent", 0)
		q.logUA = strings.Clone(q.logUA)
	}

	var res Result
	status := c.serveRequest(&res)
	d := time.Since(q.start)
	l.account(res.Backend, q.t, status, d)
	if c.e.o.Access != nil {
		c.logAccess(res, status, d)
	}
	if q.abort || q.closeAfter {
		return false
	}
	if !q.body.consumed && !c.discardBody() {
		return false
	}
	// The next request, if pipelined, follows the body.
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	return true
}

// scanFields reads what the proxy needs from the head's fields in one pass.
func (c *h1conn) scanFields() {
	q := &c.req
	trusted := isTrusted(c.peer, q.l.Trusted)
	var sawXFP, sawXFH, sawTE, sawID, sawExpect bool
	for p := q.raw.first; ; {
		f, next, ok := edge.NextField(q.raw.head, p)
		if !ok {
			break
		}
		p = next
		n := f.Name
		switch len(n) {
		case 2:
			if equalFoldName(n, "te") && !sawTE { // the first, as Header.Get
				sawTE = true
				q.te = edge.EqualFold(f.Value, "trailers")
			}
		case 6:
			// The first Expect field only, as net/http: 100-continue
			// among its tokens, else anything but empty is unmet (417).
			if equalFoldName(n, "expect") && !sawExpect {
				sawExpect = true
				if edge.HasToken(f.Value, "100-continue") {
					q.expect = true
				} else if len(f.Value) > 0 {
					q.expectOther = true
				}
			}
		case 10:
			if equalFoldName(n, "connection") {
				q.hasConn = true
			}
		case 12:
			if equalFoldName(n, "x-request-id") && !sawID {
				sawID = true
				if validRequestID(bstr(f.Value)) {
					q.id = append(q.idb[:0], f.Value...)
				}
			}
		case 15:
			if equalFoldName(n, "idempotency-key") && len(f.Value) > 0 {
				q.idempotent = true
			}
		}
	}
	if q.hasConn {
		q.conn.collect(&q.raw)
	}
	// As out.Get() after removeHopHeaders in the net/http codec: a trusted
	// peer's first X-Forwarded-Proto/-Host value stays when not empty.
	if trusted {
		for i := 0; ; i++ {
			v, ok := q.raw.Value("X-Forwarded-Proto", i)
			if !ok || sawXFP {
				break
			}
			sawXFP = true
			q.keepXFP = v != "" && !q.namedInConnection("x-forwarded-proto")
		}
		for i := 0; ; i++ {
			v, ok := q.raw.Value("X-Forwarded-Host", i)
			if !ok || sawXFH {
				break
			}
			sawXFH = true
			q.keepXFH = v != "" && !q.namedInConnection("x-forwarded-host")
		}
	}
	if q.id == nil {
		q.id = c.e.o.IDs.AppendNext(q.idb[:0])
	}
}

// namedInConnection reports whether a Connection field of the request
// names the field name (which makes it hop-by-hop).
func (q *h1req) namedInConnection(name string) bool { return q.hasConn && q.conn.has(name) }

// serveRequest routes and forwards the request and returns the status the
// client got.
func (c *h1conn) serveRequest(res *Result) int {
	q := &c.req
	l := q.l
	if string(q.head.Target) == "*" {
		// OPTIONS * asks about the server, not a resource; answered here,
		// as net/http does for the net/http codec.
		return c.answerOptions()
	}
	if q.expectOther {
		return c.fail(417, "expectation failed: only Expect: 100-continue is supported", true)
	}
	if max := l.Limits.MaxBodyBytes; max > 0 && q.head.ContentLength > max {
		return c.fail(413, "request body too large", true)
	}
	t := l.resolve(q.host, q.path, q.query, &q.raw, c.peer, &q.info)
	if t == nil {
		return c.fail(404, "no route for this request", false)
	}
	q.t = t
	if t.Timeouts.Request > 0 {
		q.deadline = q.start.Add(t.Timeouts.Request)
	}
	c.buildOutbound()
	c.consumeHead()
	*res = Forward(c.ctx, t, &q.info, c)
	if res.Class == Done {
		return res.Status
	}
	status := StatusFor(*res)
	if status == 499 {
		q.closeAfter = true
		return status
	}
	if res.Class != ClientError && res.Err != nil {
		backend := ""
		if res.Backend != nil {
			backend = res.Backend.Address
		}
		c.e.o.Logger.Debug("request failed", "pool", t.Pool.Name, "backend", backend, "status", status,
			"tries", res.Tries, "error", res.Err, "request_id", string(q.id))
	}
	return c.fail(status, statusText(status), res.Class == ClientError)
}

// Replayable implements Attempt: an idempotent request whose body, if any,
// is held whole.
func (c *h1conn) Replayable() bool {
	q := &c.req
	return q.idempotent && q.body.replayable()
}

// hopField reports whether a field is hop-by-hop (RFC 9110 §7.6.1): the
// fixed list of hopHeaders, by length first.
func hopField(n []byte) bool {
	switch len(n) {
	case 2:
		return equalFoldName(n, "te")
	case 7:
		return equalFoldName(n, "trailer") || equalFoldName(n, "upgrade")
	case 10:
		return equalFoldName(n, "connection") || equalFoldName(n, "keep-alive")
	case 16:
		return equalFoldName(n, "proxy-connection")
	case 17:
		return equalFoldName(n, "transfer-encoding")
	case 18:
		return equalFoldName(n, "proxy-authenticate")
	case 19:
		return equalFoldName(n, "proxy-authorization")
	}
	return false
}

// buildOutbound writes the head sent to backends into out: the request
// line with the normalised path, the client's fields less hop-by-hop ones
// (and those its Connection names) and the forwarding fields sluice sets,
// as the net/http codec's buildOutbound and setForwarded do.
func (c *h1conn) buildOutbound() {
	q := &c.req
	trusted := isTrusted(c.peer, q.l.Trusted)
	o := c.out[:0]
	o = append(o, q.head.Method...)
	o = append(o, ' ')
	o = append(o, q.path...)
	if q.query != "" {
		o = append(o, '?')
		o = append(o, q.query...)
	}
	o = append(o, " HTTP/1.1\r\n"...)
	hostAt := -1
	if q.host != "" {
		o = append(o, "Host: "...)
		o = append(o, q.host...)
		o = append(o, "\r\n"...)
	} else {
		hostAt = len(o) // HTTP/1.0 without Host: the backend's, at Send
	}
	for p := q.raw.first; ; {
		f, next, ok := edge.NextField(q.raw.head, p)
		if !ok {
			break
		}
		p = next
		n := f.Name
		if hopField(n) || q.namedInConnection(bstr(n)) {
			continue
		}
		switch len(n) {
		case 4:
			if equalFoldName(n, "host") {
				continue
			}
		case 9:
			if !trusted && equalFoldName(n, "forwarded") || !trusted && equalFoldName(n, "x-real-ip") {
				continue
			}
		case 12:
			if equalFoldName(n, "x-request-id") {
				continue
			}
		case 15:
			if equalFoldName(n, "x-forwarded-for") {
				continue // below
			}
		case 16:
			if equalFoldName(n, "x-forwarded-host") && !q.keepXFH {
				continue
			}
		case 17:
			if equalFoldName(n, "x-forwarded-proto") && !q.keepXFP {
				continue
			}
		}
		o = append(o, n...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
	// A trusted peer's X-Forwarded-For values, joined, then the peer.
	o = append(o, "X-Forwarded-For: "...)
	if trusted && !q.namedInConnection("x-forwarded-for") {
		for i := 0; ; i++ {
			v, ok := q.raw.Value("X-Forwarded-For", i)
			if !ok {
				break
			}
			o = append(o, v...)
			o = append(o, ", "...)
		}
	}
	o = c.peer.AppendTo(o)
	o = append(o, "\r\n"...)
	if !q.keepXFP {
		if q.l.TLS {
			o = append(o, "X-Forwarded-Proto: https\r\n"...)
		} else {
			o = append(o, "X-Forwarded-Proto: http\r\n"...)
		}
	}
	if !q.keepXFH && q.host != "" {
		o = append(o, "X-Forwarded-Host: "...)
		o = append(o, q.host...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n"...)
	if q.te {
		o = append(o, "Te: trailers\r\n"...)
	}
	if q.websocket {
		up, _ := q.raw.Value("Upgrade", 0)
		o = append(o, "Connection: Upgrade\r\nUpgrade: "...)
		o = append(o, up...)
		o = append(o, "\r\n"...)
	}
	if q.head.Chunked {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	o = append(o, "\r\n"...)
	c.out = o
	q.outHead = len(o)
	q.body.hostAt = hostAt
}

// fail answers the client with a status sluice produced itself, as the
// net/http codec's fail does. closeConn ends the connection after it.
func (c *h1conn) fail(status int, msg string, closeConn bool) int {
	q := &c.req
	if !closeConn && !q.websocket && !c.discardBody() {
		closeConn = true
	}
	if q.websocket {
		closeConn = true
	}
	o := c.out[:0]
	o = append(o, "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, ' ')
	o = append(o, reasonPhrase(status)...)
	o = append(o, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: "...)
	o = append(o, q.id...)
	if status == 503 && q.t != nil {
		o = append(o, "\r\nRetry-After: "...)
		o = append(o, q.t.RetryAfter...)
	}
	if closeConn {
		o = append(o, "\r\nConnection: close"...)
	} else if q.head.Minor == 0 {
		o = append(o, "\r\nConnection: keep-alive"...)
	}
	o = append(o, "\r\nContent-Length: "...)
	o = strconv.AppendInt(o, int64(len(msg)+1), 10)
	o = append(o, "\r\n\r\n"...)
	if !q.isHead {
		o = append(o, msg...)
		o = append(o, '\n')
		q.bytes = int64(len(msg) + 1)
	}
	c.out = o
	if _, err := c.nc.Write(o); err != nil {
		closeConn = true
	}
	if closeConn {
		q.closeAfter = true
	}
	return status
}

// answerOptions answers "OPTIONS *" with 200 and no body.
func (c *h1conn) answerOptions() int {
	q := &c.req
	closeConn := q.closeAfter || !c.discardBody()
	o := append(c.out[:0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: "...)
	o = append(o, q.id...)
	if closeConn {
		o = append(o, "\r\nConnection: close"...)
	} else if q.head.Minor == 0 {
		o = append(o, "\r\nConnection: keep-alive"...)
	}
	o = append(o, "\r\n\r\n"...)
	c.out = o
	if _, err := c.nc.Write(o); err != nil || closeConn {
		q.closeAfter = true
	}
	return 200
}

// reasonPhrase is the reason phrase for a status sluice sends itself.
func reasonPhrase(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 413:
		return "Request Entity Too Large"
	case 414:
		return "Request-URI Too Long"
	case 417:
		return "Expectation Failed"
	case 431:
		return "Request Header Fields Too Large"
	case 499:
		return "Client Closed Request"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// logAccess hands one entry to the access log.
func (c *h1conn) logAccess(res Result, status int, d time.Duration) {
	q := &c.req
	e := accesslog.Entry{Time: q.start, Listener: q.l.Name, Method: q.logMethod, Host: q.logHost,
		Path: q.logPath, UserAgent: q.logUA, RequestID: string(q.id), Client: c.nc.RemoteAddr().String(),
		Status: status, Duration: d, Bytes: q.bytes, Tries: res.Tries}
	if res.Backend != nil {
		e.Backend = res.Backend.Address
	}
	if q.t != nil {
		e.Pool = q.t.Pool.Name
	}
	if q.info.ClientIP.IsValid() {
		e.Client = q.info.ClientIP.String()
	}
	c.e.o.Access.Log(&e)
}
