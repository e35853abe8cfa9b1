package h1

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/rawio"
)

// Streams carries the requests of the net/http codec's HTTP/2 and HTTP/3
// streams to the HTTP/1.1 backends of a pool over the engine's own
// connections (Conns, the ones the engine's requests use) instead of
// http.Transport: on the goroutine that asks, with no reader or writer
// goroutine per connection, the request head and body in one write, and
// the engine's reuse checks (a connection goes back to the pool only after
// exactly one complete response with nothing past it, and is peeked before
// it is used again). A connection is the stream's alone from the request
// to the end of its response. The zero value is ready to use.
//
// It takes requests whose body is held whole (none, or a known length the
// codec has already read) to pools without PROXY headers (Takes); the codec
// sends the others through http.Transport.
type Streams struct{}

// Takes reports whether Streams can carry requests to u's backends:
// HTTP/1.1 without a PROXY header.
func (Streams) Takes(u *proxy.Upstream) bool { return !u.HTTP2 && u.ProxyHeader == 0 }

// streamBufs holds request heads (and held bodies) being written.
var streamBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// errStray: a reused connection was not silent when its request was to be
// sent (nothing was sent); RoundTrip tries another.
var errStray = errors.New("backend connection not silent before the request")

// errStreamUpgrade: the backend switched protocols for a request that did
// not ask (requests of HTTP/2 and HTTP/3 streams cannot).
var errStreamUpgrade = errors.New("backend answered 101 Switching Protocols to a request that did not ask to upgrade")

// RoundTrip sends req to b, a backend of u, and returns the response head, its body to be
// read from resp.Body (which must be closed). req.URL gives the target
// (Opaque and RawQuery), req.Host the Host field, req.Header the other
// fields as they go; a body must have req.ContentLength bytes, which are
// read before anything is sent. ctx (not req's) ends the exchange (the
// body included) when it is done; a timeout at its deadline is
// proxy.ErrRequestTimeout unless ctx has a cause of its own. header, when
// positive, bounds the wait for the response head from the time the
// request is sent (timeouts.response_header): proxy.ErrHeaderTimeout. A
// reused connection that fails before any
// response byte is replaced by a new one, the request sent again, when
// replay is set. Errors dialling are *proxy.DialError. resp.Status is not
// set; resp.Trailer holds the trailers the head announced, with values once
// the body has been read to its end.
func (Streams) RoundTrip(ctx context.Context, u *proxy.Upstream, req *http.Request, b *pool.Backend, replay bool, header time.Duration) (*http.Response, error) {
	p := connsOf(u)
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	msg, err := appendStreamRequest((*bp)[:0], req)
	if err != nil {
		return nil, err
	}
	if n := req.ContentLength; n > 0 {
		at := len(msg)
		msg = append(msg, make([]byte, n)...)
		if _, err := io.ReadFull(req.Body, msg[at:]); err != nil {
			return nil, err
		}
	}
	*bp = msg[:0]
	trace := httptrace.ContextClientTrace(ctx)
	for {
		if trace != nil && trace.GetConn != nil {
			trace.GetConn(b.Host)
		}
		// A reused connection's silence is checked as the request is sent.
		uc, err := p.get(ctx, b, true)
		if err != nil {
			return nil, err
		}
		if trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Reused: uc.reused})
		}
		resp, stale, err := streamExchange(ctx, uc, req, msg, header)
		if stale && (replay || err == errStray) && ctx.Err() == nil {
			continue
		}
		return resp, err
	}
}

// streamExchange writes msg on uc and reads the response head; stale reports a
// reused connection that failed before any byte came back.
func streamExchange(ctx context.Context, uc *upConn, req *http.Request, msg []byte, header time.Duration) (*http.Response, bool, error) {
	dl, _ := ctx.Deadline()
	hdl := dl // the head's deadline
	if header > 0 {
		if h := time.Now().Add(header); dl.IsZero() || h.Before(dl) {
			hdl = h
		}
	}
	uc.nc.SetDeadline(hdl) // and none left from the connection's last exchange
	// The context ends a blocked read or write (the client resetting its
	// stream, a deadline's timer) by moving the deadline to the past.
	stop := afterFunc(ctx, uc.expire) // uc.nc.SetDeadline(time.Unix(1, 0))
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		uc.nc.Close()
		if isTimeout(err) {
			now := time.Now()
			switch cerr := context.Cause(ctx); {
			case cerr != nil:
				err = cerr
			case !dl.IsZero() && !now.Before(dl):
				err = proxy.ErrRequestTimeout
			case hdl != dl && !now.Before(hdl):
				err = proxy.ErrHeaderTimeout
			}
		}
		return nil, false, err
	}
	var err error
	if rc, plain := uc.nc.(*rawio.Conn); plain {
		var stray bool
		uc.msg[0] = msg
		stray, err = uc.send(rc, uc.msg[:])
		uc.msg[0] = nil
		if stray {
			// The backend spoke unasked or closed it: nothing was sent,
			// another connection is tried.
			r, _, _ := fail(nil)
			return r, true, errStray
		}
	} else {
		_, err = uc.nc.Write(msg)
	}
	if err != nil {
		r, _, err := fail(err)
		return r, uc.reused, err
	}
	var rh edge.ResponseHead
	isHead := req.Method == http.MethodHead
	for {
		n := 0
		if uc.w > uc.r {
			var err error
			if n, err = edge.ParseResponseHead(uc.buf[uc.r:uc.w], &rh); err != nil {
				return fail(err)
			}
		}
		if n == 0 {
			if err := uc.fill(edge.MaxResponseHeaderBytes + upBufSize); err != nil {
				stale := uc.reused && uc.w == 0
				r, _, err := fail(err)
				return r, stale, err
			}
			continue
		}
		if rh.Status == http.StatusSwitchingProtocols {
			return fail(errStreamUpgrade)
		}
		if rh.Status < 200 {
			uc.r += n // interim responses are dropped, as http.Transport does
			continue
		}
		// The response and its body in one allocation.
		rb := &respBody{}
		resp, body := &rb.resp, &rb.body
		*resp = http.Response{StatusCode: rh.Status, Proto: protoName(rh.Minor),
			ProtoMajor: 1, ProtoMinor: rh.Minor, Close: rh.Close, Request: req}
		*body = streamBody{uc: uc, stop: stop, keep: !rh.Close, resp: resp}
		resp.Header = streamHeader(uc.buf[uc.r:uc.r+n], rh.First, rb.vals[:])
		uc.r += n
		switch {
		case edge.NoBody(isHead, rh.Status):
			uc.sized(int64(n))
			resp.ContentLength = 0
			if isHead && rh.ContentLength > 0 {
				resp.ContentLength = rh.ContentLength
			}
			resp.Body = http.NoBody
			body.finish()
		case rh.Chunked:
			resp.ContentLength = -1
			body.mode = outChunked
			body.ck = edge.NewChunked(edge.Limits{MaxHeaderBytes: edge.MaxResponseHeaderBytes, MaxHeaders: 1000})
			resp.Trailer = announcedTrailers(resp.Header)
			resp.Body = body
		case rh.ContentLength >= 0:
			uc.sized(int64(n) + rh.ContentLength)
			resp.ContentLength = rh.ContentLength
			body.mode, body.left = outFixed, rh.ContentLength
			resp.Body = body
			if body.left == 0 {
				resp.Body = http.NoBody
				body.finish()
			}
		default:
			resp.ContentLength = -1
			body.mode, body.keep = outRaw, false
			resp.Body = body
		}
		if hdl != dl && resp.Body != http.NoBody && (body.mode != outFixed || int64(uc.w-uc.r) < body.left) {
			// More of the body is to be read, bounded by ctx alone; a
			// stream that ended meanwhile moved the deadline to the past,
			// and still does.
			uc.nc.SetDeadline(dl)
			if ctx.Err() != nil {
				uc.expire()
			}
		}
		return resp, false, nil
	}
}

// afterFunc is context.AfterFunc, without its allocations for a context
// that registers functions itself (the HTTP/2 server's streams).
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if af, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return af.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

// appendStreamRequest appends req's HTTP/1.1 request head to o, as
// http.Transport writes it: the target, Host, the fields (whose names and
// values must be valid), and Content-Length for a body (0 for POST, PUT
// and PATCH without one).
func appendStreamRequest(o []byte, req *http.Request) ([]byte, error) {
	if !httpguts.ValidHostHeader(req.Host) {
		return nil, errors.New("invalid Host " + strconv.Quote(req.Host))
	}
	o = append(o, req.Method...)
	o = append(o, ' ')
	if u := req.URL; len(u.Opaque) > 0 && u.Opaque[0] == '/' && (len(u.Opaque) < 2 || u.Opaque[1] != '/') {
		o = append(o, u.Opaque...)
		if u.RawQuery != "" {
			o = append(o, '?')
			o = append(o, u.RawQuery...)
		}
	} else {
		o = append(o, u.RequestURI()...)
	}
	o = append(o, " HTTP/1.1\r\nHost: "...)
	o = append(o, req.Host...)
	o = append(o, "\r\n"...)
	for name, vv := range req.Header {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, errors.New("invalid header field name " + strconv.Quote(name))
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, errors.New("invalid header field value for " + strconv.Quote(name))
			}
			o = append(o, name...)
			o = append(o, ": "...)
			o = append(o, v...)
			o = append(o, "\r\n"...)
		}
	}
	switch {
	case req.ContentLength > 0:
		o = append(o, "Content-Length: "...)
		o = strconv.AppendInt(o, req.ContentLength, 10)
		o = append(o, "\r\n"...)
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		o = append(o, "Content-Length: 0\r\n"...)
	}
	return append(o, "\r\n"...), nil
}

// respBody is a response with its body (see streamExchange).
type respBody struct {
	resp http.Response
	body streamBody
	vals [8]string // the header's values, when there are no more
}

// protoName is "HTTP/1." + strconv.Itoa(minor), without allocating for the
// two versions there are.
func protoName(minor int) string {
	switch minor {
	case 1:
		return "HTTP/1.1"
	case 0:
		return "HTTP/1.0"
	}
	return "HTTP/1." + strconv.Itoa(minor)
}

// streamHeader returns the fields of a response head (from first) as an
// http.Header, with two allocations for the names and values (one string
// and one slice) besides the map; the slice is vbuf when the values fit.
func streamHeader(head []byte, first int, vbuf []string) http.Header {
	n := 0
	for range edge.Fields(head, first) {
		n++
	}
	h := make(http.Header, n)
	if n == 0 {
		return h
	}
	s := string(head)
	var vals []string
	if n <= len(vbuf) {
		vals = vbuf[:n]
	} else {
		vals = make([]string, n)
	}
	i := 0
	for f := range edge.Fields(head, first) {
		name := sub(s, head, f.Name)
		if !canonicalName(f.Name) {
			name = http.CanonicalHeaderKey(name)
		}
		vals[i] = sub(s, head, f.Value)
		if vv, ok := h[name]; ok {
			h[name] = append(vv, vals[i])
		} else {
			h[name] = vals[i : i+1 : i+1]
		}
		i++
	}
	return h
}

// sub is the substring of s (a copy of head) where part lies in head.
func sub(s string, head, part []byte) string {
	if len(part) == 0 {
		return ""
	}
	at := cap(head) - cap(part)
	return s[at : at+len(part)]
}

// canonicalName reports whether a field name (valid token characters) is
// in the form http.CanonicalHeaderKey gives it.
func canonicalName(b []byte) bool {
	upper := true
	for _, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z', !upper && 'A' <= c && c <= 'Z':
			return false
		}
		upper = c == '-'
	}
	return true
}

// announcedTrailers is the trailer fields that a chunked response's Trailer
// field announces (their values come at the end of the body), as
// http.Transport gives them; the Trailer field itself goes.
func announcedTrailers(h http.Header) http.Header {
	vv, ok := h["Trailer"]
	if !ok {
		return nil
	}
	delete(h, "Trailer")
	var t http.Header
	for _, v := range vv {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name == "" {
				continue
			}
			name = http.CanonicalHeaderKey(name)
			switch name {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				continue
			}
			if t == nil {
				t = http.Header{}
			}
			t[name] = nil
		}
	}
	return t
}
