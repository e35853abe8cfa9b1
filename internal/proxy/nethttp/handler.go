package nethttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/route"
)

// Guard is what the edge guard beneath net/http tells the handler about a
// connection (see package edge).
type Guard interface {
	// RejectToken is the Host of the synthetic request that stands for a
	// refused one ("" when nothing was refused).
	RejectToken() string
	// Rejection is the status and reason for the refused request.
	Rejection() (status int, reason string, ok bool)
}

type guardKey struct{}

// WithGuard returns a connection context carrying g (http.Server.ConnContext).
func WithGuard(ctx context.Context, g Guard) context.Context {
	return context.WithValue(ctx, guardKey{}, g)
}

func guardFrom(ctx context.Context) Guard {
	g, _ := ctx.Value(guardKey{}).(Guard)
	return g
}

// Handler is the net/http codec: an http.Handler that runs the core for
// every request of one listener. net/http parses and frames both ways; this
// codec closes the gaps it leaves for an edge proxy (the edge guard beneath
// it refuses ambiguous requests; responses with a status outside 100–599
// are refused here).
type Handler struct {
	cur     *atomic.Pointer[proxy.Listener]
	ids     *proxy.RequestIDs
	logger  *slog.Logger
	tunnels *proxy.Tunnels
}

// NewHandler returns the handler for the listener whose current view cur
// holds.
func NewHandler(cur *atomic.Pointer[proxy.Listener], ids *proxy.RequestIDs, logger *slog.Logger, tunnels *proxy.Tunnels) *Handler {
	return &Handler{cur: cur, ids: ids, logger: logger, tunnels: tunnels}
}

// httpAttempt is the per-request state of the net/http codec.
type httpAttempt struct {
	h      *Handler
	w      http.ResponseWriter
	r      *http.Request
	out    *http.Request
	t      *proxy.Target
	id     string
	body   *trackedBody
	info   *pool.PickInfo
	tls    bool
	upType string // "websocket" when the client asked to upgrade
	grpc   bool   // a gRPC call: sluice's own failures are gRPC statuses
	abort  bool   // the response was cut short: reset the client connection
	rec    proxy.Record
	// timed: the access log is on, so attempts measure their upstream
	// connect time and time to the response head.
	timed  bool
	timing proxy.ConnTiming

	limited proxy.Limited // a rate limit refused the request (429)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l := h.cur.Load()
	a := &httpAttempt{h: h, w: w, r: r}
	a.rec.Start = time.Now()
	if id := r.Header.Get("X-Request-Id"); proxy.ValidRequestID(id) {
		a.id = id
	} else {
		a.id = h.ids.Next()
	}
	var info pool.PickInfo
	rec := &a.rec
	rec.Info = &info
	switch {
	case r.ProtoMajor >= 3:
		rec.Version = proxy.HTTP3
	case r.ProtoMajor == 2:
		rec.Version = proxy.HTTP2
	case r.ProtoMinor == 0:
		rec.Version = proxy.HTTP10
	}
	a.timed = l.Access != nil
	if l.Verbose() {
		_, path, query := proxy.SplitTarget(r.RequestURI)
		rec.Method, rec.Host, rec.Path, rec.Query = r.Method, r.Host, path, query
		rec.UserAgent, rec.ID, rec.Client = r.UserAgent(), a.id, r.RemoteAddr
		if cs := tlsState(r); cs != nil {
			rec.TLSVersion = cs.Version
		}
		l.StartTrace(rec, stdFields(r.Header))
	}
	rec.Result, rec.Status = a.serve(l, &info)
	if a.body != nil {
		rec.BytesIn += a.body.sent()
	}
	l.Finish(rec)
	if a.abort {
		// The backend's response broke off after its header was sent, or
		// the client is gone: the client must see a broken response, never
		// a short "complete" one or an empty 200 from net/http.
		panic(http.ErrAbortHandler)
	}
}

// serve routes, checks and forwards one request; it returns the core's
// result and the status the client got.
func (a *httpAttempt) serve(l *proxy.Listener, info *pool.PickInfo) (proxy.Result, int) {
	r := a.r
	if g := guardFrom(r.Context()); g != nil {
		if tok := g.RejectToken(); tok != "" && r.Host == tok {
			status, reason, _ := g.Rejection()
			return proxy.Result{}, a.fail(status, reason, true)
		}
	}
	if upgradeType(r.Header) == "websocket" {
		// The only upgrade passed on. The guard stops checking this
		// connection after an upgrade request, so any answer but a 101 must
		// close it (fail and deliver do).
		a.upType = "websocket"
	}
	a.grpc = isGRPC(r)
	switch r.Method {
	case http.MethodConnect, http.MethodTrace:
		return proxy.Result{}, a.fail(http.StatusMethodNotAllowed, "method not allowed", true)
	}
	if l.ACME != nil {
		if ka, ok := challenge(l, r); ok {
			return proxy.Result{}, a.answerChallenge(ka)
		}
	}
	if r.ProtoMajor >= 2 {
		if status, reason := checkH2(l, r); status != 0 {
			return proxy.Result{}, a.fail(status, reason, true)
		}
		if status := prefetchH2Body(r, l.Limits.MaxBodyBytes); status != 0 {
			return proxy.Result{}, a.fail(status, proxy.StatusText(status), true)
		}
	}
	if max := l.Limits.MaxBodyBytes; max > 0 && r.ContentLength > max {
		return proxy.Result{}, a.fail(http.StatusRequestEntityTooLarge, "request body too large", true)
	}
	peer := netip.Addr{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peer = ap.Addr().Unmap()
	}
	// The path as the client escaped it: r.URL's decoded and re-escaped
	// forms lose escapes of reserved characters ("%2F") when the path also
	// holds a character Go prefers escaped.
	_, escaped, _ := proxy.SplitTarget(r.RequestURI)
	path := route.NormalizePath(escaped)
	t, lim := l.Resolve(r.Context(), &a.rec, r.Host, path, r.URL.RawQuery, stdFields(r.Header), peer)
	if lim.Refused() {
		a.limited = lim
		return proxy.Result{}, a.fail(http.StatusTooManyRequests, proxy.StatusText(http.StatusTooManyRequests), false)
	}
	if t == nil {
		return proxy.Result{}, a.fail(http.StatusNotFound, "no route for this request", false)
	}
	a.t = t
	a.info = info

	ctx := r.Context()
	if t.Timeouts.Request > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t.Timeouts.Request, proxy.ErrRequestTimeout)
		defer cancel()
	}
	if a.grpc {
		// The client gives up at its grpc-timeout: so does sluice.
		var cancel context.CancelFunc
		ctx, cancel = grpcDeadline(ctx, r.Header.Get("Grpc-Timeout"))
		defer cancel()
	}
	a.tls = l.TLS
	a.buildOutbound(l, peer, path)
	res := proxy.Forward(ctx, &a.rec, a)
	if res.Class == proxy.Done {
		return res, res.Status
	}
	status, gone, closeConn := proxy.Failed(res, t, a.h.logger, a.id)
	if gone {
		// Nobody to answer; and net/http must not answer for us (it would
		// send an empty 200 when the handler writes nothing).
		a.abort = true
		return res, status
	}
	return res, a.fail(status, proxy.StatusText(status), closeConn)
}

// buildOutbound prepares the request sent to backends: the client's
// request with hop-by-hop fields removed first and sluice's own fields set
// after, the normalised path, and the body wrapped to learn whether any of it
// was sent.
func (a *httpAttempt) buildOutbound(l *proxy.Listener, peer netip.Addr, path string) {
	r := a.r
	out := new(http.Request)
	*out = *r
	out.Header = r.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	removeHopHeaders(out.Header)
	if a.upType == "websocket" {
		// The only upgrade passed on; h2c and others are dropped.
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", r.Header.Get("Upgrade"))
	}
	if te := r.Header.Get("Te"); strings.EqualFold(strings.TrimSpace(te), "trailers") {
		out.Header.Set("Te", "trailers") // gRPC needs it end to end
	}
	fw := l.NewForwarding(peer, r.Host, stdFields(out.Header))
	if cs := tlsState(r); cs != nil && l.ClientCert != nil {
		fw.ClientCert = l.ClientCert(cs)
	}
	setForwarded(out.Header, &fw)
	out.Header.Set("X-Request-Id", a.id)
	if tr := &a.rec.Trace; tr.On() {
		// sluice's span is the backend's parent.
		for name := range out.Header {
			if tr.Replaces(name) {
				delete(out.Header, name)
			}
		}
		out.Header.Set("Traceparent", tr.Parent())
		if st := tr.State(); st != "" {
			out.Header.Set("Tracestate", st)
		}
	}
	if a.grpc {
		capGRPCTimeout(out.Header, a.t.Timeouts.Request)
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // do not let Go add its own
	}
	// Opaque makes http.Transport send the path exactly as given.
	out.URL = &url.URL{Scheme: "http", Opaque: path, RawQuery: r.URL.RawQuery}
	out.RequestURI = ""
	out.Close = false
	out.Trailer = r.Trailer
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		out.Body = nil
		out.ContentLength = 0
	} else {
		body := r.Body
		if r.ProtoMajor >= 2 && r.ContentLength > 0 {
			body = &endCheckedBody{r: body, left: r.ContentLength}
		}
		out.Body = nil // each attempt reads it through its own (outFor)
		a.body = &trackedBody{r: body, max: l.Limits.MaxBodyBytes, keep: a.idempotent(),
			expect: r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Expect"), "100-continue")}
	}
	a.out = out
}

// outFor returns the request of one attempt on b, with a URL and a body of
// its own: the Transport may still read the previous attempt's after
// RoundTrip returned.
func (a *httpAttempt) outFor(ctx context.Context, b *pool.Backend, body *attemptBody) *http.Request {
	out := a.out.WithContext(ctx)
	u := *a.out.URL
	u.Scheme, u.Host = b.URL.Scheme, b.Host
	out.URL = &u
	if body != nil {
		out.Body = body
	}
	return out
}

// Replayable: an idempotent request (by method, or because it carries an
// Idempotency-Key) whose body, if any, is still held in the replay buffer.
func (a *httpAttempt) Replayable() bool {
	return a.idempotent() && (a.body == nil || a.body.replayable())
}

func (a *httpAttempt) idempotent() bool {
	return proxy.Idempotent(a.r.Method, stdFields(a.r.Header))
}

// Send is one attempt on b through the pool's http.Transport.
func (a *httpAttempt) Send(ctx context.Context, b *pool.Backend, canRetry bool) (o proxy.Outcome) {
	if a.timed {
		defer a.timing.Fill(&o)
	}
	tr := roundTripper(a.t.Upstream)
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var timer *time.Timer
	if d := a.t.Timeouts.ResponseHeader; d > 0 {
		timer = time.AfterFunc(d, func() { cancel(proxy.ErrHeaderTimeout) })
	}
	if a.body != nil {
		// http.Transport waits for its body writer, which may be blocked
		// reading a stalled client: a timeout must unblock that read too.
		// The callback runs on its own goroutine; Send waits for it if it
		// started, so it never touches the ResponseWriter after the
		// handler has returned (x/net's HTTP/2 writer is gone by then).
		ran := make(chan struct{})
		stop := context.AfterFunc(actx, func() {
			defer close(ran)
			if c := context.Cause(actx); c == proxy.ErrHeaderTimeout || c == proxy.ErrRequestTimeout {
				http.NewResponseController(a.w).SetReadDeadline(time.Now())
			}
		})
		defer func() {
			if !stop() {
				<-ran
			}
		}()
	}
	start := time.Now()
	rctx := actx
	if a.t.Upstream.ProxyHeader != 0 {
		rctx = withClient(rctx, a.r)
	}
	var body *attemptBody
	if a.body != nil {
		body = a.body.attempt() // from the body's first byte
	}
	gate := body.continueGate()
	if gate != nil {
		rctx = gate.trace(rctx)
	}
	if a.timed {
		rctx = a.timing.Trace(rctx)
	}
	resp, err := tr.RoundTrip(a.outFor(rctx, b, body))
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

// classify turns a RoundTrip error into an proxy.Outcome.
func (a *httpAttempt) classify(err error, actx context.Context) proxy.Outcome {
	// sluice's own timeouts first: they may also have broken the body read.
	if cause := context.Cause(actx); cause == proxy.ErrHeaderTimeout || cause == proxy.ErrRequestTimeout {
		return proxy.Outcome{Class: proxy.Timeout, Err: cause}
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
	hdr.Set("X-Request-Id", a.id)
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
	case rerr != nil && a.grpc && a.r.ProtoMajor >= 2:
		o.Err = rerr
		grpcBroken(hdr, resp.Trailer, rerr)
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

// copyBody copies src to w, flushing after every write when flush is set
// (streams, server-sent events). It reports read and write errors apart.
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
			if f != nil {
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

// fail answers the client with a status sluice produced itself: a short
// plain-text body and no internals. closeConn ends the connection after it.
func (a *httpAttempt) fail(status int, msg string, closeConn bool) int {
	if a.grpc {
		status = a.failGRPC(status, msg)
		a.rateLimitFields()
		a.w.WriteHeader(http.StatusOK)
		return status
	}
	hdr := a.w.Header()
	clear(hdr)
	a.rateLimitFields()
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Request-Id", a.id)
	if status == http.StatusServiceUnavailable && a.t != nil {
		hdr.Set("Retry-After", a.t.RetryAfter)
	}
	a.altSvc(hdr)
	if (closeConn || a.upType != "") && a.r.ProtoMajor == 1 {
		// HTTP/2 has no such field: a refused stream ends alone, and the
		// connection's other streams go on.
		hdr.Set("Connection", "close")
	}
	a.w.WriteHeader(status)
	n, _ := io.WriteString(a.w, msg+"\n")
	a.rec.Bytes = int64(n)
	return status
}

// rateLimitFields sets the fields of a rate limit's 429, when that is the
// answer.
func (a *httpAttempt) rateLimitFields() {
	if a.limited.Refused() {
		hdr := a.w.Header()
		a.limited.EachField(func(name string, value []byte) { hdr.Set(name, string(value)) })
	}
}
