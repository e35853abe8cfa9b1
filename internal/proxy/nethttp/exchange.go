package nethttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/grpcweb"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// outFor returns the request of one attempt on b, with a URL and a body of
// its own: the Transport may still read the previous attempt's after
// RoundTrip returned.
func (a *httpAttempt) outFor(ctx context.Context, b *pool.Backend, body *attemptBody) *http.Request {
	out := a.out.WithContext(ctx)
	// The first attempt's URL is kept in a; a later one gets its own.
	u := &a.firstURL
	if a.attempts > 0 {
		u = new(url.URL)
	}
	a.attempts++
	*u = *a.out.URL
	u.Scheme, u.Host = b.URL.Scheme, b.Host
	out.URL = u
	if body != nil {
		out.Body = body
		if a.web == grpcweb.Text {
			r, _ := a.web.Body(body, -1)
			out.Body = &decodedBody{r: r, c: body, b: a.body}
		}
	}
	return out
}

// decodedBody is a request body decoded on its way (gRPC-Web text): its
// reads' error is the client's body error (bodyErr), and its close the
// body's beneath. The Transport reads it on its own goroutine, maybe after
// RoundTrip returned: the error goes to the trackedBody, under its lock.
type decodedBody struct {
	r io.Reader
	c io.Closer
	b *trackedBody
}

func (d *decodedBody) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.b.fail(err)
	}
	return n, err
}

func (d *decodedBody) Close() error { return d.c.Close() }

// Held implements h2client.Held.
func (d *decodedBody) Held() bool { return d.b.held }

// Send is one attempt on b, over the engine's connections or through the
// pool's http.Transport.
func (a *httpAttempt) Send(ctx context.Context, b *pool.Backend, canRetry bool) (o proxy.Outcome) {
	if a.timed {
		defer a.timing.Fill(&o)
	}
	if a.viaEngine() {
		return a.sendEngine(ctx, b, canRetry)
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var timer *time.Timer
	if d := a.t.Timeouts.ResponseHeader; d > 0 {
		timer = time.AfterFunc(d, func() { cancel(proxy.ErrHeaderTimeout) })
	}
	if a.body != nil {
		defer a.unblockBodyOnTimeout(actx)()
	}
	start := time.Now()
	body := a.attemptBody()
	rctx, gate := a.traced(actx, body)
	resp, err := roundTripper(a.t.Upstream).RoundTrip(a.outFor(rctx, b, body))
	if err == nil && a.timed {
		a.timing.Headed()
	}
	if gate != nil {
		gate.shut() // a final answer came first: the body stays with the client
	}
	if timer != nil && !timer.Stop() && err == nil {
		// The timer fired just as the header arrived: the context is
		// cancelled, so the body would break off mid-way. Count it as the
		// timeout it is, before anything reaches the client.
		resp.Body.Close()
		return proxy.Outcome{Class: proxy.Timeout, Err: proxy.ErrHeaderTimeout}
	}
	if err != nil {
		return a.classify(err, actx)
	}
	return a.answer(resp, b, start, canRetry)
}

// sendEngine is Send over the engine's connections. The engine bounds the
// wait for the response head itself (a read deadline), so the attempt
// needs no context or timer of its own: the request's context ends it.
func (a *httpAttempt) sendEngine(ctx context.Context, b *pool.Backend, canRetry bool) proxy.Outcome {
	start := time.Now()
	body := a.attemptBody()
	rctx, gate := a.traced(ctx, body)
	rctx = keepAfterFunc(rctx, ctx)
	if body != nil {
		a.out.Body = body // read whole before RoundTrip returns
	}
	resp, err := a.h.engine.RoundTrip(rctx, a.t.Upstream, a.out, b, a.Replayable(), a.t.Timeouts.ResponseHeader)
	if err == nil && a.timed {
		a.timing.Headed()
	}
	if gate != nil {
		gate.shut()
	}
	if err != nil {
		return a.classify(err, nil)
	}
	return a.answer(resp, b, start, canRetry)
}

// afterFuncer is a context that runs functions when it is done without a
// goroutine per function (the HTTP/2 server's streams; context.AfterFunc
// uses it).
type afterFuncer interface {
	AfterFunc(func()) func() bool
}

// withAfterFunc is a context with values over an afterFuncer that is
// still one: context.AfterFunc on a value context over a parent that is
// not a cancelCtx starts a goroutine per call.
type withAfterFunc struct {
	context.Context
	af afterFuncer
}

func (c withAfterFunc) AfterFunc(f func()) func() bool { return c.af.AfterFunc(f) }

// keepAfterFunc returns rctx, a context with values over ctx, as an
// afterFuncer when ctx is one.
func keepAfterFunc(rctx, ctx context.Context) context.Context {
	if af, ok := ctx.(afterFuncer); ok && rctx != ctx {
		return withAfterFunc{rctx, af}
	}
	return rctx
}

// attemptBody is the body of the next attempt, from the body's first byte,
// or nil.
func (a *httpAttempt) attemptBody() *attemptBody {
	if a.body == nil {
		return nil
	}
	return a.body.attempt()
}

// traced is ctx with what an attempt's round trip reports to: the client
// (for a PROXY header), the body's 100-continue gate, the timing.
func (a *httpAttempt) traced(ctx context.Context, body *attemptBody) (context.Context, *continueGate) {
	if a.t.Upstream.ProxyHeader != 0 {
		ctx = withClient(ctx, a.r)
	}
	gate := body.continueGate()
	if gate != nil {
		ctx = gate.trace(ctx)
	}
	if a.timed {
		ctx = a.timing.Trace(ctx)
	}
	return ctx, gate
}

// answer handles the response of an attempt that began at start: a retry
// on its status, an upgrade, or its delivery to the client.
func (a *httpAttempt) answer(resp *http.Response, b *pool.Backend, start time.Time, canRetry bool) proxy.Outcome {
	if resp.StatusCode < 100 || resp.StatusCode > 599 {
		// net/http reads any three digits; a status outside 100–599 cannot
		// be relayed (net/http's server would refuse to write it) and says
		// the backend is not speaking HTTP as asked.
		resp.Body.Close()
		return proxy.Outcome{Class: proxy.Reset, Err: fmt.Errorf("backend answered with status %d, outside 100-599", resp.StatusCode)}
	}
	b.Stats.ObserveLatency(time.Since(start))
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return a.tunnel(resp, b)
	}
	retryAfter := proxy.ParseRetryAfter(resp.Header.Get("Retry-After"))
	if a.t.RetryOnStatus(resp.StatusCode, retryAfter, a, canRetry) {
		io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
		return proxy.Outcome{Class: proxy.RetryStatus, Status: resp.StatusCode, RetryAfter: retryAfter}
	}
	return a.deliver(resp, b)
}

// viaEngine reports whether out goes to its backend over the HTTP/1.1
// engine's connections (Engine) rather than http.Transport: a request of an
// HTTP/2 or HTTP/3 stream whose body is held whole, without trailers, to a
// pool that the engine takes.
func (a *httpAttempt) viaEngine() bool {
	return a.held && a.h.engine != nil && len(a.out.Trailer) == 0 && a.h.engine.Takes(a.t.Upstream)
}

// unblockBodyOnTimeout makes sluice's timeouts (actx's causes) end a read
// of the client's body: http.Transport waits for its body writer, which may
// be blocked reading a stalled client. The returned stop waits for the
// callback if it started, so that it never touches the ResponseWriter
// after the handler has returned (x/net's HTTP/2 writer is gone by then).
func (a *httpAttempt) unblockBodyOnTimeout(actx context.Context) (stop func()) {
	ran := make(chan struct{})
	cancel := context.AfterFunc(actx, func() {
		defer close(ran)
		// Only while the client's body is unread: once it is read to its
		// end there is no read to unblock, and over HTTP/1.1 the deadline
		// would break net/http's background read of the connection (its
		// context cancelled: the next request on it is lost).
		if c := context.Cause(actx); (c == proxy.ErrHeaderTimeout || c == proxy.ErrRequestTimeout) && !a.body.readAll() {
			http.NewResponseController(a.w).SetReadDeadline(time.Now())
			a.readCut = true // read by fail, after stop has waited for this
		}
	})
	return func() {
		if !cancel() {
			<-ran
		}
	}
}

// classify turns a RoundTrip error into an proxy.Outcome. actx is the
// attempt's context through http.Transport (nil for the engine, which
// returns sluice's timeouts as its errors).
func (a *httpAttempt) classify(err error, actx context.Context) proxy.Outcome {
	// sluice's own timeouts first: they may also have broken the body read.
	if err == proxy.ErrHeaderTimeout || err == proxy.ErrRequestTimeout {
		return proxy.Outcome{Class: proxy.Timeout, Err: err}
	}
	if actx != nil {
		if cause := context.Cause(actx); cause == proxy.ErrHeaderTimeout || cause == proxy.ErrRequestTimeout {
			return proxy.Outcome{Class: proxy.Timeout, Err: cause}
		}
	}
	if berr := a.bodyErr(); berr != nil {
		var ee interface{ StatusCode() int }
		var ne net.Error
		switch {
		case errors.Is(berr, proxy.ErrBodyTooLarge):
			return proxy.Outcome{Class: proxy.ClientError, Status: http.StatusRequestEntityTooLarge, Err: berr}
		case errors.As(berr, &ne) && ne.Timeout():
			// The client sent its body too slowly (timeouts.read).
			return proxy.Outcome{Class: proxy.ClientError, Status: http.StatusRequestTimeout, Err: berr}
		case errors.As(berr, &ee):
			return proxy.Outcome{Class: proxy.ClientError, Status: ee.StatusCode(), Err: berr}
		}
		if g := guardFrom(a.r.Context()); g != nil {
			if s, _, ok := g.Rejection(); ok {
				return proxy.Outcome{Class: proxy.ClientError, Status: s, Err: berr}
			}
		}
		if errors.Is(berr, io.ErrUnexpectedEOF) || a.r.Context().Err() != nil {
			return proxy.Outcome{Class: proxy.ClientGone, Err: berr}
		}
		return proxy.Outcome{Class: proxy.ClientError, Status: http.StatusBadRequest, Err: berr}
	}
	if a.r.Context().Err() != nil {
		return proxy.Outcome{Class: proxy.ClientGone, Err: err}
	}
	var de *proxy.DialError
	if errors.As(err, &de) {
		return proxy.Outcome{Class: proxy.ConnectFailure, Err: err}
	}
	if a.grpc && actx != nil && proxy.AtDeadline(actx) {
		return proxy.Outcome{Class: proxy.Timeout, Err: err} // the backend ended the call at its deadline
	}
	return proxy.Outcome{Class: proxy.Reset, Err: err}
}

// bodyErr is the error reading the client's body, if any.
func (a *httpAttempt) bodyErr() error {
	if a.body == nil {
		return nil
	}
	return a.body.readErr()
}

// deliver streams the backend's response to the client.
func (a *httpAttempt) deliver(resp *http.Response, b *pool.Backend) proxy.Outcome {
	defer resp.Body.Close()
	if a.web != grpcweb.None {
		resp = a.web.Response(resp, a.r.Header.Get("Content-Type"), a.r.Header.Get("Accept"))
	}
	if a.upType != "" {
		// The guard stopped parsing after the upgrade request; since no
		// upgrade happened, this connection must not be reused.
		a.w.Header().Set("Connection", "close")
	}
	removeHopHeaders(resp.Header)
	a.t.TakeLoadHeader(b, resp.Header)
	hdr := a.w.Header()
	for k, vv := range resp.Header {
		hdr[k] = vv
	}
	var announced []string
	if n := len(resp.Trailer); n > 0 {
		announced = make([]string, 0, n)
		for k := range resp.Trailer {
			announced = append(announced, k)
		}
		hdr["Trailer"] = announced
		// Trailers need a chunked body towards an HTTP/1.1 client; an
		// HTTP/2 backend may send Content-Length beside them.
		delete(hdr, "Content-Length")
	}
	hdr["X-Request-Id"] = a.one(a.id) // Set, without its allocation
	a.altSvc(hdr)
	if st := a.t.Sticky; st != nil && a.info.Preferred != b {
		if v := st.CookieValue(a.t.Pool, b, a.tls); v != "" {
			hdr.Add("Set-Cookie", v)
		}
	}
	a.w.WriteHeader(resp.StatusCode)
	flush := resp.ContentLength == -1 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	n, rerr, werr := copyBody(a.w, resp.Body, flush)
	a.rec.Bytes = n
	o := proxy.Outcome{Class: proxy.Done, Status: resp.StatusCode}
	switch {
	case werr != nil:
		o.Err = werr // the client went away; nothing more to do
	case rerr == nil && a.web != grpcweb.None && grpcweb.Broken(resp.Body) != nil:
		o.Err = grpcweb.Broken(resp.Body) // the client got the break's status in the trailers' frame
	case rerr != nil && a.grpc && a.web == grpcweb.None && a.r.ProtoMajor >= 2:
		o.Err = rerr
		grpcBroken(hdr, resp, rerr)
	case rerr != nil:
		o.Err = rerr
		a.abort = true
	default:
		// Trailers known when the header went out were announced; any the
		// backend added later go out with net/http's TrailerPrefix.
		for k, vv := range resp.Trailer {
			if slices.Contains(announced, k) {
				hdr[k] = vv
			} else {
				hdr[http.TrailerPrefix+k] = vv
			}
		}
	}
	return o
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies src to w, flushing when flush is set (streams,
// server-sent events) before a read that may wait: not after the last
// bytes (the handler's return sends them with the end of the stream), nor
// while src has more already buffered (see buffered). It reports read and
// write errors apart.
func copyBody(w http.ResponseWriter, src io.Reader, flush bool) (n int64, rerr, werr error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	f, _ := w.(http.Flusher)
	if !flush {
		f = nil
	}
	for {
		nr, err := src.Read(buf)
		if nr > 0 {
			nw, ew := w.Write(buf[:nr])
			n += int64(nw)
			if ew != nil {
				return n, nil, ew
			}
			if f != nil && err == nil && !buffered(src) {
				f.Flush()
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// buffered reports whether src can return more bytes without waiting for
// its backend (h1's response bodies say so; others are asked to flush).
func buffered(src io.Reader) bool {
	b, ok := src.(interface{ Buffered() bool })
	return ok && b.Buffered()
}
