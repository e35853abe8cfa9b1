package nethttp

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/grpcweb"
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
	engine  Engine // nil: every request goes through http.Transport
}

// Engine is the HTTP/1.1 engine's upstream side (package h1's Streams):
// requests of HTTP/2 and HTTP/3 streams whose body is held whole reach the
// HTTP/1.1 backends of the pools it takes over its connections, on the
// handler's goroutine, instead of through http.Transport.
type Engine interface {
	Takes(u *proxy.Upstream) bool
	RoundTrip(ctx context.Context, u *proxy.Upstream, req *http.Request, b *pool.Backend, replay bool, header time.Duration) (*http.Response, error)
}

// UseEngine makes h send the requests e takes through e; it returns h.
// Call it before h serves.
func (h *Handler) UseEngine(e Engine) *Handler {
	h.engine = e
	return h
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
	// web: a gRPC-Web call to a pool with grpc_web, translated to gRPC
	// (grpc is set too).
	web grpcweb.Mode
	// readCut: a timeout cut a read of the client's body short with a read
	// deadline. Over HTTP/1.1 that leaves the connection unfit for another
	// request, so the answer closes it.
	readCut bool
	// held: an HTTP/2 or HTTP/3 request whose body, if any, is read whole
	// (prefetchH2Body): the engine's connections can carry it.
	held  bool
	whole []byte // that body, when it was read whole (nil: none)
	abort bool   // the response was cut short: reset the client connection
	rec   proxy.Record
	// timed: the access log is on, so attempts measure their upstream
	// connect time and time to the response head.
	timed  bool
	timing proxy.ConnTiming

	limited proxy.Limited // a rate limit refused the request (429)

	// Storage of the request's own that would otherwise be allocated apart
	// (this struct is allocated once per request anyway): the pick, the
	// outbound request and its URL, the first attempt's URL, and the values
	// of the header fields sluice sets (see vals).
	pick     pool.PickInfo
	outReq   http.Request
	outURL   url.URL
	firstURL url.URL
	attempts int // outFor calls so far
	valBuf   [8]string
	valUsed  int
}

// vals returns a slice of n strings (len and cap n) for header values:
// from valBuf while it has room, else newly allocated. The cap keeps an
// append to one field's values from writing over the next field's.
func (a *httpAttempt) vals(n int) []string {
	if a.valUsed+n > len(a.valBuf) {
		return make([]string, n)
	}
	v := a.valBuf[a.valUsed : a.valUsed+n : a.valUsed+n]
	a.valUsed += n
	return v
}

// one is a header value list of just v, as http.Header.Set would store it.
// Only for names already canonical (constants): Set's canonicalization is
// then a no-op, so h[name] = a.one(v) is h.Set(name, v).
func (a *httpAttempt) one(v string) []string {
	s := a.vals(1)
	s[0] = v
	return s
}

// cloneHeader is h.Clone() with the values copied into a.vals.
func (a *httpAttempt) cloneHeader(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	nv := 0
	for _, vv := range h {
		nv += len(vv)
	}
	sv := a.vals(nv)
	h2 := make(http.Header, len(h))
	for k, vv := range h {
		if vv == nil {
			// Preserve nil values (as Clone does).
			h2[k] = nil
			continue
		}
		n := copy(sv, vv)
		h2[k] = sv[:n:n]
		sv = sv[n:]
	}
	return h2
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
	rec := &a.rec
	rec.Info = &a.pick
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
			if l.ClientSubject != nil {
				rec.ClientSubject = l.ClientSubject(cs)
			}
		}
		l.StartTrace(rec, stdFields(r.Header))
	}
	rec.Result, rec.Status = a.serve(l, &a.pick)
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
		status, held, whole := prefetchH2Body(r, l.Limits.MaxBodyBytes)
		if status != 0 {
			return proxy.Result{}, a.fail(status, proxy.StatusText(status), true)
		}
		a.held, a.whole = held, whole
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
	if t.GRPCWeb {
		if a.web = grpcweb.Of(r.Header.Get("Content-Type")); a.web != grpcweb.None {
			a.grpc = true
		}
	}

	ctx := r.Context()
	if t.Timeouts.Request > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t.Timeouts.Request, proxy.ErrRequestTimeout)
		defer cancel()
	}
	if a.grpc {
		// The client gives up at its grpc-timeout: so does sluice.
		var cancel context.CancelFunc
		ctx, cancel = proxy.GRPCDeadline(ctx, a.rec.Start, r.Header.Get("Grpc-Timeout"))
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
	out := &a.outReq
	*out = *r
	out.Header = a.cloneHeader(r.Header)
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
	setForwarded(out.Header, &fw, a.one)
	out.Header["X-Request-Id"] = a.one(a.id) // Set, without its allocation
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
		proxy.CapGRPCTimeout(out.Header, a.t.Timeouts.Request)
	}
	if a.web != grpcweb.None {
		a.web.Request(out.Header)
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // do not let Go add its own
	}
	// Opaque makes http.Transport send the path exactly as given.
	a.outURL = url.URL{Scheme: "http", Opaque: path, RawQuery: r.URL.RawQuery}
	out.URL = &a.outURL
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
		if a.web == grpcweb.Text {
			out.ContentLength = -1 // decoded from base64 (outFor)
		}
		// A body is kept for a retry of an idempotent request, and over
		// HTTP/2 to the backends for any request that may be retried
		// after a connect failure: one the backend declined unprocessed
		// after part of its body goes elsewhere.
		rt := &a.t.Retries
		keep := a.idempotent() || a.t.Upstream.HTTP2 && rt.OnConnectFailure && rt.NumRetries > 0
		a.body = &trackedBody{r: body, max: l.Limits.MaxBodyBytes, keep: keep, held: a.held,
			expect: r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Expect"), "100-continue")}
		if a.whole != nil {
			// Read whole already (prefetchH2Body): every attempt sends
			// it from there, none copies it.
			w := a.whole[:len(a.whole):len(a.whole)] // never appended to
			a.body.r, a.body.keep, a.body.kept, a.body.n = http.NoBody, true, w, int64(len(w))
		}
	}
	a.out = out
}

// Replayable: an idempotent request (by method, or because it carries an
// Idempotency-Key) whose body, if any, is still held in the replay buffer.
func (a *httpAttempt) Replayable() bool {
	return a.idempotent() && a.Resendable()
}

// Resendable: the request has no body, or its body is still held in the
// replay buffer.
func (a *httpAttempt) Resendable() bool {
	return a.body == nil || a.body.replayable()
}

func (a *httpAttempt) idempotent() bool {
	return proxy.Idempotent(a.r.Method, stdFields(a.r.Header))
}

// fail answers the client with a status sluice produced itself: a short
// plain-text body and no internals. closeConn ends the connection after it.
func (a *httpAttempt) fail(status int, msg string, closeConn bool) int {
	closeConn = closeConn || a.readCut
	if a.grpc {
		status = a.failGRPC(status, msg)
		a.rateLimitFields()
		if closeConn && a.r.ProtoMajor == 1 {
			a.w.Header().Set("Connection", "close") // gRPC-Web: as below
		}
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
