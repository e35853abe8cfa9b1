package h1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/grpcweb"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxy/h2client"
	"github.com/sluice-lb/sluice/internal/rawio"
)

// sendH2 is one attempt on b for a pool with upstream_http2: the request
// the engine parsed goes to the backend over HTTP/2 (package h2client) and
// the answer comes back to the client in HTTP/1.1 framing. It is the
// engine's one path through net/http types; a pool that speaks HTTP/1.1 to
// its backends never takes it.
//
// An HTTP/2 stream cannot leak into another: the response-safety contract
// holds by construction here. What needs care is the client connection:
// the HTTP/2 transport reads the request body on a goroutine of its own,
// so the exchange ends only once that body is closed, and a streamed body
// closes the client connection after it.
func (c *h1conn) sendH2(ctx context.Context, b *pool.Backend, canRetry bool) (o proxy.Outcome) {
	var timing proxy.ConnTiming
	defer timing.Fill(&o)
	q := &c.req
	t := q.t
	body, err := c.h2Body()
	if err != nil {
		return clientErr(err)
	}
	req := c.h2Request(ctx, b, body)
	web, reqCT := grpcweb.None, ""
	if t.GRPCWeb {
		reqCT = req.Header.Get("Content-Type")
		web = grpcweb.Of(reqCT)
	}
	if web != grpcweb.None {
		web.Request(req.Header)
		if web == grpcweb.Text && req.Body != http.NoBody {
			body.r, body.length = web.Body(body.r, body.length)
			req.ContentLength = -1
		}
		// The client gives up at its grpc-timeout, from the request's start:
		// so does sluice, and the backend gets no more than sluice waits.
		proxy.CapGRPCTimeout(req.Header, t.Timeouts.Request)
		var stop context.CancelFunc
		ctx, stop = proxy.GRPCDeadline(ctx, q.rec.Start, req.Header.Get("Grpc-Timeout"))
		defer stop()
		req = req.WithContext(ctx)
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var timer *time.Timer
	if d := t.Timeouts.ResponseHeader; d > 0 {
		timer = time.AfterFunc(d, func() { cancel(proxy.ErrHeaderTimeout) })
	}
	start := time.Now()
	resp, err := h2client.Of(t.Upstream).RoundTrip(req.WithContext(timing.Trace(actx)))
	if err == nil {
		timing.Headed()
	}
	if timer != nil && !timer.Stop() && err == nil {
		resp.Body.Close()
		err = proxy.ErrHeaderTimeout
	}
	if err != nil {
		body.wait()
		o := c.h2Outcome(err, actx, body)
		if o.Class == proxy.Reset && web != grpcweb.None && proxy.AtDeadline(actx) {
			o.Class = proxy.Timeout // the backend ended the call at its deadline
		}
		return o
	}
	defer body.wait()
	defer resp.Body.Close()
	b.Stats.ObserveLatency(time.Since(start))
	if resp.StatusCode < 200 || resp.StatusCode > 599 {
		return proxy.Outcome{Class: proxy.Reset, Err: errors.New("backend answered an HTTP/2 request with status " + strconv.Itoa(resp.StatusCode))}
	}
	ra := proxy.ParseRetryAfter(resp.Header.Get("Retry-After"))
	if canRetry && slices.Contains(t.Retries.OnStatus, resp.StatusCode) && t.RetryOnStatus(resp.StatusCode, ra, c, canRetry) {
		io.CopyN(io.Discard, resp.Body, 4<<10)
		return proxy.Outcome{Class: proxy.RetryStatus, Status: resp.StatusCode, RetryAfter: ra}
	}
	if web != grpcweb.None {
		resp = web.Response(resp, reqCT, req.Header.Get("Accept"))
	}
	o = c.deliverH2(resp, b)
	if err := grpcweb.Broken(resp.Body); err != nil && o.Err == nil {
		o.Err = err // the client got the break's status in the trailers' frame
	}
	return o
}

// h2Outcome classifies a failed HTTP/2 round trip.
func (c *h1conn) h2Outcome(err error, actx context.Context, body *h2body) proxy.Outcome {
	if cause := context.Cause(actx); cause == proxy.ErrHeaderTimeout || cause == proxy.ErrRequestTimeout || errors.Is(err, proxy.ErrHeaderTimeout) {
		if cause == nil {
			cause = err
		}
		return proxy.Outcome{Class: proxy.Timeout, Err: cause}
	}
	if err := body.readErr(); err != nil {
		return clientErr(err)
	}
	var de *proxy.DialError
	if errors.As(err, &de) {
		return proxy.Outcome{Class: proxy.ConnectFailure, Err: err}
	}
	return proxy.Outcome{Class: proxy.Reset, Err: err}
}

// h2Request builds the request for the backend from the outbound head the
// engine wrote (forwarding fields included, hop-by-hop ones gone).
func (c *h1conn) h2Request(ctx context.Context, b *pool.Backend, body *h2body) *http.Request {
	q := &c.req
	head := c.out[:q.outHead]
	h := make(http.Header, 16)
	host := q.host
	for f := range edge.Fields(head, edge.FirstField(head, 0)) {
		name := http.CanonicalHeaderKey(bstr(f.Name))
		switch name {
		case "Host":
			continue
		case "Connection", "Upgrade", "Transfer-Encoding", "Keep-Alive", "Proxy-Connection":
			continue // connection-specific: no place in HTTP/2
		case "Te":
			if !edge.EqualFold(f.Value, "trailers") {
				continue
			}
		}
		h[name] = append(h[name], string(f.Value))
	}
	if host == "" {
		host = b.Host // HTTP/1.0 without Host, as on the HTTP/1.1 path
	}
	u := &url.URL{Scheme: b.URL.Scheme, Host: b.Host, Opaque: q.path, RawQuery: q.query}
	req := &http.Request{Method: string(q.head.Method), URL: u, Host: host, Header: h,
		Proto: "HTTP/2.0", ProtoMajor: 2, Body: body, ContentLength: body.length}
	if body.length == 0 {
		req.Body = http.NoBody
		body.closeNow()
	}
	return req.WithContext(ctx)
}

// h2body is the request body on its way to an HTTP/2 backend: what the
// engine holds, then (streaming) the rest from the client, decoded when
// chunked. The transport reads it on its own goroutine; wait returns once
// it has closed it, after which the engine may use its buffers again.
type h2body struct {
	r      io.Reader
	length int64 // -1: unknown
	held   bool  // r reads from memory only: the body is held whole
	mu     sync.Mutex
	err    error // a read error of the client's side, under mu
	once   sync.Once
	done   chan struct{}
}

func (b *h2body) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		// A read the HTTP/2 client abandoned may end after the attempt.
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *h2body) Close() error { b.closeNow(); return nil }

// readErr is the first read error of the client's side (nil: none).
func (b *h2body) readErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Held implements h2client.Held.
func (b *h2body) Held() bool { return b.held }

func (b *h2body) closeNow() { b.once.Do(func() { close(b.done) }) }

// wait returns once the transport closed the body (it always does, maybe
// after RoundTrip returned).
func (b *h2body) wait() { <-b.done }

// h2Body prepares the request body for sendH2.
func (c *h1conn) h2Body() (*h2body, error) {
	q := &c.req
	bd := &q.body
	b := &h2body{done: make(chan struct{}), length: 0, r: bytes.NewReader(nil), held: true}
	if bd.kind == bodyNone {
		return b, nil
	}
	if bd.deferred && !bd.sent100 {
		// HTTP/2 to the backend: the client is asked for its body at once,
		// and it is read as one sent unasked is: whole when it fits
		// proxy.ReplayMax, so that a stream the backend refuses can go to
		// another (Resendable).
		c.continue100()
		bd.deferred, bd.streaming = false, false
		var err error
		if bd.kind == bodyFixed {
			err = c.prepareFixed()
		} else {
			err = c.prepareChunked()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, err
		}
	}
	held := bytes.NewReader(bd.held)
	switch {
	case bd.kind == bodyFixed && bd.complete:
		b.r, b.length = held, bd.length
	case bd.kind == bodyFixed:
		b.r, b.length, b.held = io.MultiReader(held, io.LimitReader(c.nc, bd.left)), bd.length, false
		q.closeAfter = true // the transport may stop reading it half way
	case bd.complete: // chunked, held whole with its framing
		b.r, b.length = httputil.NewChunkedReader(held), -1
	default:
		// The chunked decoder reads ahead of the body's end: the client
		// connection carries nothing after it.
		max := q.l.Limits.MaxBodyBytes
		r := httputil.NewChunkedReader(io.MultiReader(held, c.nc))
		if max > 0 {
			r = &limitedBody{r: r, left: max}
		}
		b.r, b.length, b.held = r, -1, false
		q.closeAfter = true
	}
	bd.consumed = bd.complete
	return b, nil
}

// limitedBody fails a body that goes past max_body_bytes.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if l.left -= int64(n); l.left < 0 {
		return n, proxy.ErrBodyTooLarge
	}
	return n, err
}

// deliverH2 writes an HTTP/2 backend's response to the client in HTTP/1.1
// framing: Content-Length when the backend gave one and no trailers come,
// else chunked (with the trailers) for an HTTP/1.1 client, or until close
// for an HTTP/1.0 one.
func (c *h1conn) deliverH2(resp *http.Response, b *pool.Backend) proxy.Outcome {
	q := &c.req
	noBody := edge.NoBody(q.isHead, resp.StatusCode)
	chunked, untilClose := false, false
	switch {
	case noBody:
	case resp.ContentLength >= 0 && len(resp.Trailer) == 0:
	case q.head.Minor == 1:
		chunked = true
	default:
		untilClose, q.closeAfter = true, true
	}
	if q.websocket || c.e.shutting.Load() || q.body.running {
		q.closeAfter = true
	}
	q.t.TakeLoadHeader(b, resp.Header)
	o := append(c.out[:0], "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(resp.StatusCode), 10)
	o = append(o, ' ')
	o = append(o, http.StatusText(resp.StatusCode)...)
	o = append(o, "\r\n"...)
	for k, vv := range resp.Header {
		if proxy.IsHop(k) || k == "X-Request-Id" || (chunked || untilClose) && k == "Content-Length" {
			continue
		}
		for _, v := range vv {
			o = appendField(o, k, v)
		}
	}
	if !noBody && !chunked && !untilClose && resp.Header.Get("Content-Length") == "" {
		o = appendField(o, "Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	o = append(o, "X-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n"...)
	if st := q.t.Sticky; st != nil && q.info.Preferred != b {
		if v := st.CookieValue(q.t.Pool, b, q.l.TLS); v != "" {
			o = appendField(o, "Set-Cookie", v)
		}
	}
	o = q.appendHeadEnd(o, chunked, q.closeAfter)
	c.out = o
	res := proxy.Outcome{Class: proxy.Done, Status: resp.StatusCode}
	if _, err := c.nc.Write(o); err != nil {
		res.Err, q.closeAfter = err, true
		return res
	}
	if noBody {
		return res
	}
	rerr, werr := c.copyH2Body(resp, chunked)
	switch {
	case werr != nil:
		res.Err, q.closeAfter = werr, true
	case rerr != nil:
		res.Err, q.abort = rerr, true
	}
	return res
}

// copyH2Body copies the response body to the client, chunk-encoded with
// the trailers after it when chunked.
func (c *h1conn) copyH2Body(resp *http.Response, chunked bool) (rerr, werr error) {
	q := &c.req
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var size [20]byte
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if chunked {
				h := strconv.AppendInt(size[:0], int64(n), 16)
				h = append(h, '\r', '\n')
				c.iov[0], c.iov[1], c.iov[2] = h, buf[:n], crlf
				_, werr = rawio.WriteBuffers(c.nc, c.iov[:3])
				c.iov[0], c.iov[1], c.iov[2] = nil, nil, nil
			} else {
				_, werr = c.nc.Write(buf[:n])
			}
			if werr != nil {
				return nil, werr
			}
			q.rec.Bytes += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err, nil
		}
	}
	if !chunked {
		return nil, nil
	}
	t := append(c.out[:0], "0\r\n"...)
	for k, vv := range resp.Trailer {
		for _, v := range vv {
			t = appendField(t, k, v)
		}
	}
	t = append(t, "\r\n"...)
	c.out = t
	_, werr = c.nc.Write(t)
	return nil, werr
}

// appendField appends "name: value\r\n".
func appendField(o []byte, name, value string) []byte {
	o = append(o, name...)
	o = append(o, ": "...)
	o = append(o, value...)
	return append(o, "\r\n"...)
}
