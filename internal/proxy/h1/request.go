package h1

import (
	"context"
	"crypto/tls"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/grpcweb"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
)

// h1req is the state of the request in progress; reset for each.
type h1req struct {
	rec      proxy.Record // what the core counts and logs
	deadline time.Time    // the pool's request timeout (zero: none)
	head     edge.Head
	hlen     int // head bytes at buf[r:]
	raw      rawFields
	l        *proxy.Listener
	t        *proxy.Target
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
	fw          proxy.Forwarding

	body    h1body
	outHead int           // length of the outbound head in out
	header  time.Duration // the attempt's time to the response head
	// tunnelIn is the bytes a WebSocket client sent through its tunnel.
	tunnelIn int64

	closeAfter bool // close the connection after this exchange
	abort      bool // the response broke off: close without finishing it

	limited proxy.Limited // a rate limit refused the request (429)
}

// handle serves the request whose head is at buf[r:]; it reports whether
// the connection may carry another.
func (c *h1conn) handle() bool {
	if !c.begin() {
		return false // the connection was HTTP/2's, and is over
	}
	c.req.rec.Status = c.serveRequest(&c.req.rec.Result)
	return c.end()
}

// begin readies the request state for the head at buf[r:]: what the
// proxy reads from its fields, its routing strings, its record and span.
// It reports false when the request switched the connection to HTTP/2
// (Upgrade: h2c), which then belongs to the HTTP/2 server. It does no I/O
// on the client connection otherwise, so that the event loops run it too.
func (c *h1conn) begin() bool { return c.beginIn(c.e.o.View.Load()) }

// beginIn is begin under the listener's view l.
func (c *h1conn) beginIn(l *proxy.Listener) bool {
	q := &c.req
	if q.body.hp != nil {
		bodyBufs.Put(q.body.hp) // the previous request's body buffer
	}
	// Cleared in place: a composite literal with fields would be built on
	// the stack first (1.4 KiB), which alone takes the goroutine's stack
	// past 4 KiB (TestServingGoroutineStack).
	head, hlen := q.head, q.hlen
	*q = h1req{}
	q.head, q.hlen = head, hlen
	q.rec.Start = time.Now()
	q.l = l
	hb := c.buf[c.r : c.r+q.hlen]
	q.raw = rawFields{head: hb, first: edge.FirstField(hb, q.head.Lead)}
	if to := c.e.o.Timeouts.Write; to > 0 && c.nc != nil { // on a loop, its timer
		c.nc.SetWriteDeadline(q.rec.Start.Add(to))
	}
	c.scanFields()
	q.closeAfter = q.head.Close
	q.isHead = string(q.head.Method) == "HEAD"
	q.idempotent = proxy.Idempotent(bstr(q.head.Method), &q.raw)
	q.websocket = q.head.WebSocket
	q.body.init(&q.head)
	if q.hasConn && c.upgradeH2C() {
		return false
	}

	q.host = bstr(q.head.Host)
	authority, escaped, query := proxy.SplitTarget(bstr(q.head.Target))
	if q.head.AbsoluteForm {
		q.host = authority
	}
	q.query = query
	q.path = route.NormalizePath(escaped)
	q.rec.Info = &q.info
	if q.head.Minor == 0 {
		q.rec.Version = proxy.HTTP10
	} else if c.h2 {
		q.rec.Version = proxy.HTTP2 // a stream's request, in HTTP/1.1 form
	}
	if l.Verbose() {
		// Copies: the strings of the head alias the read buffer.
		r := &q.rec
		r.Method, r.Host, r.Path, r.Query = string(q.head.Method), strings.Clone(q.host), strings.Clone(escaped), strings.Clone(query)
		r.UserAgent = strings.Clone(q.raw.Get("User-Agent"))
		l.StartTrace(r, hopless{q})
	}
	return true
}

// end finishes the request once it was answered and reports whether the
// connection may carry another.
func (c *h1conn) end() bool {
	q := &c.req
	c.finish()
	if q.body.unsent() && !q.abort {
		// The client may be sending the body it was never asked for: read
		// it away for a moment so that closing does not reset the answer.
		c.linger()
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
	var sawTE, sawID, sawExpect bool
	for f := range edge.Fields(q.raw.head, q.raw.first) {
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
				if proxy.ValidRequestID(bstr(f.Value)) {
					q.id = append(q.idb[:0], f.Value...)
				}
			}
		}
	}
	if q.hasConn {
		q.conn.collect(&q.raw)
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
func (c *h1conn) serveRequest(res *proxy.Result) int {
	q := &c.req
	l := q.l
	if string(q.head.Target) == "*" {
		// OPTIONS * asks about the server, not a resource; answered here,
		// as net/http does for the net/http codec.
		return c.answerOptions()
	}
	if l.ACME != nil {
		if ka, ok := c.challenge(); ok {
			return c.answerChallenge(ka)
		}
	}
	if q.expectOther {
		return c.fail(417, "expectation failed: only Expect: 100-continue is supported", true)
	}
	if max := l.Limits.MaxBodyBytes; max > 0 && q.head.ContentLength > max {
		return c.fail(413, "request body too large", true)
	}
	if status := c.resolve(c.ctx); status != 0 {
		return c.fail(status, refusal(status), false)
	}
	return c.forward(res)
}

// refusal is the answer's text for a status of resolve.
func refusal(status int) string {
	if status == 404 {
		return "no route for this request"
	}
	return proxy.StatusText(status)
}

// resolve routes the request (the listener's and the route's rate limits,
// the route, the pool) into q.t; it returns the status that refuses it
// instead (429 or 404), or 0.
func (c *h1conn) resolve(ctx context.Context) int {
	q := &c.req
	t, lim := q.l.Resolve(ctx, &q.rec, q.host, q.path, q.query, &q.raw, c.peer)
	if lim.Refused() {
		q.limited = lim
		return 429
	}
	if t == nil {
		return 404
	}
	q.t = t
	return 0
}

// forward forwards the routed request to its pool and returns the status
// the client got.
func (c *h1conn) forward(res *proxy.Result) int {
	q := &c.req
	t := q.t
	ctx := c.ctx
	if t.Timeouts.Request > 0 {
		// The deadline holds from here on: in the queue for a slot, while
		// connecting, and on the sockets (see exchange).
		q.deadline = q.rec.Start.Add(t.Timeouts.Request)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, q.deadline, proxy.ErrRequestTimeout)
		defer cancel()
	}
	c.buildOutbound()
	c.consumeHead()
	*res = proxy.Forward(ctx, &q.rec, c)
	if res.Class == proxy.Done {
		return res.Status
	}
	status, gone, closeConn := proxy.Failed(*res, t, c.e.o.Logger, bstr(q.id))
	if gone {
		q.closeAfter = true
		return status
	}
	return c.fail(status, proxy.StatusText(status), closeConn)
}

// Replayable implements Attempt: an idempotent request whose body, if any,
// is held whole.
func (c *h1conn) Replayable() bool {
	q := &c.req
	return q.idempotent && q.body.replayable()
}

// Resendable implements Attempt: the body, if any, is held whole.
func (c *h1conn) Resendable() bool { return c.req.body.replayable() }

// buildOutbound writes the head sent to backends into out: the request
// line with the normalised path, the client's fields less hop-by-hop ones
// (and those its Connection names) and the forwarding fields as the core
// decides them (proxy.Forwarding), which the net/http codec applies too.
func (c *h1conn) buildOutbound() {
	q := &c.req
	q.fw = q.l.NewForwarding(c.peer, q.host, hopless{q})
	if q.l.ClientCert != nil {
		q.fw.ClientCert = c.clientCert()
	}
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
	for f := range edge.Fields(q.raw.head, q.raw.first) {
		n := f.Name
		if proxy.IsHop(bstr(n)) || q.namedInConnection(bstr(n)) || q.fw.Drops(bstr(n)) ||
			q.rec.Trace.Replaces(bstr(n)) || equalFoldName(n, "host") || equalFoldName(n, "x-request-id") {
			continue
		}
		o = append(o, n...)
		o = append(o, ": "...)
		o = append(o, f.Value...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Forwarded-For: "...)
	o = q.fw.AppendFor(o, hopless{q})
	o = append(o, "\r\n"...)
	if !q.fw.KeepProto {
		o = append(o, "X-Forwarded-Proto: "...)
		o = append(o, q.fw.Proto...)
		o = append(o, "\r\n"...)
	}
	if !q.fw.KeepHost && q.fw.Host != "" {
		o = append(o, "X-Forwarded-Host: "...)
		o = append(o, q.fw.Host...)
		o = append(o, "\r\n"...)
	}
	if q.fw.ClientCert != "" {
		o = append(o, "X-Forwarded-Client-Cert: "...)
		o = append(o, q.fw.ClientCert...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n"...)
	if tr := &q.rec.Trace; tr.On() {
		// sluice's span is the backend's parent.
		o = append(o, "Traceparent: "...)
		o = append(o, tr.Parent()...)
		o = append(o, "\r\n"...)
		if st := tr.State(); st != "" {
			o = append(o, "Tracestate: "...)
			o = append(o, st...)
			o = append(o, "\r\n"...)
		}
	}
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
	if !closeConn && !c.req.websocket && !c.discardBody() {
		closeConn = true
	}
	if _, err := c.rw.Write(c.failAnswer(status, msg, closeConn)); err != nil {
		c.req.closeAfter = true
	}
	return status
}

// failAnswer writes fail's answer into c.out and returns it; the
// connection closes after it when closeConn, or once Shutdown has begun.
func (c *h1conn) failAnswer(status int, msg string, closeConn bool) []byte {
	q := &c.req
	if web := c.grpcWeb(); web != grpcweb.None {
		// A gRPC-Web call, as the net/http codec answers gRPC calls: a
		// trailers-only response (200, grpc-status and grpc-message in the
		// header), which gRPC-Web clients read as the call's status.
		o := append(c.out[:0], "HTTP/1.1 200 OK\r\nContent-Type: "...)
		o = append(o, web.Answer(q.raw.Get("Accept")).ContentType()...)
		o = append(o, "\r\nGrpc-Status: "...)
		o = strconv.AppendInt(o, int64(proxy.GRPCStatus(status)), 10)
		o = append(o, "\r\nGrpc-Message: "...)
		o = append(o, proxy.GRPCEncode(msg)...)
		o = append(o, "\r\nX-Request-Id: "...)
		o = append(o, q.id...)
		o = append(o, "\r\n"...)
		c.out = c.appendFailEnd(o, 0, closeConn)
		return c.out
	}
	o := c.out[:0]
	o = append(o, "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, ' ')
	o = append(o, proxy.ReasonPhrase(status)...)
	o = append(o, "\r\n"...)
	o = c.appendFailFields(o, status)
	o = c.appendFailEnd(o, len(msg)+1, closeConn)
	if !q.isHead {
		o = append(o, msg...)
		o = append(o, '\n')
		q.rec.Bytes = int64(len(msg) + 1)
	}
	c.out = o
	return o
}

// appendFailEnd ends the head of fail's answer, whose body is n bytes:
// the connection closes after it when closeConn, after an upgrade request,
// or once Shutdown has begun (no answer keeps the connection then, as in
// net/http).
func (c *h1conn) appendFailEnd(o []byte, n int, closeConn bool) []byte {
	q := &c.req
	if closeConn || q.websocket || c.e.shutting.Load() {
		o = append(o, "Connection: close\r\n"...)
		q.closeAfter = true
	} else if q.head.Minor == 0 {
		o = append(o, "Connection: keep-alive\r\n"...)
	}
	o = append(o, "Content-Length: "...)
	o = strconv.AppendInt(o, int64(n), 10)
	return append(o, "\r\n\r\n"...)
}

// grpcWeb is how the request speaks gRPC-Web, when its pool has grpc_web
// (None before routing, or to another pool).
func (c *h1conn) grpcWeb() grpcweb.Mode {
	q := &c.req
	if q.t == nil || !q.t.GRPCWeb {
		return grpcweb.None
	}
	return grpcweb.Of(q.raw.Get("Content-Type"))
}

// appendFailFields appends the fields of an answer sluice makes itself
// (fail's), a "Name: value\r\n" line each, but its framing and Connection
// fields: also the fields of an HTTP/2 stream's such answer
// (loopstream_linux.go).
func (c *h1conn) appendFailFields(o []byte, status int) []byte {
	q := &c.req
	o = append(o, "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n"...)
	if status == 503 && q.t != nil {
		o = append(o, "Retry-After: "...)
		o = append(o, q.t.RetryAfter...)
		o = append(o, "\r\n"...)
	}
	if q.l.AltSvc != "" {
		o = append(o, "Alt-Svc: "...)
		o = append(o, q.l.AltSvc...)
		o = append(o, "\r\n"...)
	}
	if status == 429 && q.limited.Refused() {
		q.limited.EachField(func(name string, value []byte) {
			o = append(o, name...)
			o = append(o, ": "...)
			o = append(o, value...)
			o = append(o, "\r\n"...)
		})
	}
	return o
}

// challenge returns the key authorization when the request asks for an
// ACME HTTP-01 challenge of this sluice (GET or HEAD of its token).
func (c *h1conn) challenge() (string, bool) {
	q := &c.req
	if m := bstr(q.head.Method); m != "GET" && m != "HEAD" {
		return "", false
	}
	tok, ok := proxy.ChallengeToken(q.path)
	if !ok {
		return "", false
	}
	return q.l.ACME.KeyAuthorization(tok)
}

// answerChallenge answers an ACME HTTP-01 challenge with its key
// authorization (RFC 8555 §8.3), before any route or backend.
func (c *h1conn) answerChallenge(keyAuth string) int {
	q := &c.req
	closeConn := q.closeAfter || !c.discardBody()
	o := append(c.out[:0], "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "...)
	o = strconv.AppendInt(o, int64(len(keyAuth)), 10)
	o = append(o, "\r\nX-Request-Id: "...)
	o = append(o, q.id...)
	o = q.appendHeadEnd(append(o, "\r\n"...), false, closeConn)
	if !q.isHead {
		o = append(o, keyAuth...)
		q.rec.Bytes = int64(len(keyAuth))
	}
	c.out = o
	if _, err := c.rw.Write(o); err != nil || closeConn {
		q.closeAfter = true
	}
	return 200
}

// answerOptions answers "OPTIONS *" with 200 and no body.
func (c *h1conn) answerOptions() int {
	q := &c.req
	closeConn := q.closeAfter || !c.discardBody() || c.e.shutting.Load()
	o := append(c.out[:0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: "...)
	o = append(o, q.id...)
	o = q.appendHeadEnd(append(o, "\r\n"...), false, closeConn)
	c.out = o
	if _, err := c.rw.Write(o); err != nil || closeConn {
		q.closeAfter = true
	}
	return 200
}

// finish hands the request to the core's counters and access log.
func (c *h1conn) finish() {
	q := &c.req
	r := &q.rec
	r.BytesIn = q.body.sent() + q.tunnelIn
	if q.l.Access != nil {
		r.ID = string(q.id)
		r.Client = c.remoteAddr()
		r.TLSVersion = c.tlsVersion()
		if q.l.ClientSubject != nil {
			r.ClientSubject = c.clientSubject()
		}
	}
	q.l.Finish(r)
}

// clientCert is the X-Forwarded-Client-Cert value for the connection's
// verified client certificate, worked out once per connection.
func (c *h1conn) clientCert() string {
	if !c.xfccDone {
		c.xfccDone = true
		if tc, ok := c.nc.(*tls.Conn); ok {
			cs := tc.ConnectionState()
			c.xfcc = c.req.l.ClientCert(&cs)
		}
	}
	return c.xfcc
}

// clientSubject is the subject of the connection's verified client
// certificate (mTLS listeners with the access log on): worked out per
// request rather than kept, so that idle connections stay small.
func (c *h1conn) clientSubject() string {
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		return c.req.l.ClientSubject(&cs)
	}
	return ""
}

// tlsVersion is the connection's TLS version (0: plain), read once per
// connection.
func (c *h1conn) tlsVersion() uint16 {
	if !c.tlsDone {
		c.tlsDone = true
		if tc, ok := c.nc.(*tls.Conn); ok {
			c.tlsVer = tc.ConnectionState().Version
		}
	}
	return c.tlsVer
}

// hopless is the request's fields as a backend sees them before sluice
// adds its own: those a Connection field names are left out (the fixed
// hop-by-hop fields are not asked for).
type hopless struct{ q *h1req }

func (h hopless) Get(name string) string {
	v, _ := h.Value(name, 0)
	return v
}

func (h hopless) Value(name string, i int) (string, bool) {
	if h.q.namedInConnection(name) {
		return "", false
	}
	return h.q.raw.Value(name, i)
}
