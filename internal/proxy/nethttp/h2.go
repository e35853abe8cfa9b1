package nethttp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/grpcweb"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// HTTP/2 requests reach this codec through golang.org/x/net/http2's
// server, which already refuses what RFC 9113 §8.2 calls malformed:
// connection-specific fields (connection, keep-alive, proxy-connection,
// transfer-encoding, upgrade; te other than "trailers"), upper-case field
// names, CR, LF or NUL in names or values, pseudo-header fields after
// regular ones or repeated, and a content-length that disagrees with the
// DATA received (a stream error: nothing is forwarded). The HTTP/1.1 edge
// guard does not see these requests, so checkH2 applies here what it would
// apply: the listener's limits, the target's syntax, and one authority.

// checkH2 returns the status and reason for an HTTP/2 (or later) request
// that sluice refuses before any backend sees it, or 0.
func checkH2(l *proxy.Listener, r *http.Request) (int, string) {
	lim := l.Limits
	if max := lim.MaxURIBytes; max > 0 && len(r.RequestURI) > max {
		return http.StatusRequestURITooLong, "request target too long"
	}
	if max := lim.MaxHeaders; max > 0 {
		n := 0
		for _, vv := range r.Header {
			n += len(vv)
		}
		if n > max {
			return http.StatusRequestHeaderFieldsTooLarge, "too many header fields"
		}
	}
	if err := edge.CheckOriginForm(r.Method, r.RequestURI); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	// One content-length, and the one x/net framed the body by: a field
	// it ignored (no DATA at all) must not reach a backend either.
	if cls := r.Header["Content-Length"]; len(cls) > 0 {
		n, err := strconv.ParseInt(cls[0], 10, 64)
		if len(cls) > 1 || err != nil || n < 0 || n != r.ContentLength {
			return http.StatusBadRequest, "content-length does not match the request's data"
		}
	}
	// A host field beside :authority must name the same authority (RFC
	// 9113 §8.3.1); the backend gets Host equal to :authority.
	if hs := r.Header["Host"]; len(hs) > 0 {
		if len(hs) > 1 || !strings.EqualFold(hs[0], r.Host) {
			return http.StatusBadRequest, "host field differs from :authority"
		}
		delete(r.Header, "Host")
	}
	if r.Host == "" {
		return http.StatusBadRequest, "missing :authority"
	}
	if l.Covers != nil && r.TLS != nil && !l.Covers(r.TLS, r.Host) {
		return http.StatusMisdirectedRequest, "misdirected request: this connection's certificate does not cover " + r.Host
	}
	return 0, ""
}

// isGRPC reports whether r is a gRPC call (application/grpc, +proto,
// +json…): its failures are answered the gRPC way.
func isGRPC(r *http.Request) bool {
	return proxy.IsMediaType(r.Header.Get("Content-Type"), "application/grpc")
}

// failGRPC answers a gRPC call that sluice itself refuses or could not
// forward: a trailers-only response (HTTP 200, grpc-status and
// grpc-message in the header block), which every gRPC client reads as the
// call's status. The caller writes the header (WriteHeader 200).
func (a *httpAttempt) failGRPC(status int, msg string) int {
	hdr := a.w.Header()
	clear(hdr)
	ct := "application/grpc"
	if a.web != grpcweb.None {
		ct = a.web.Answer(a.r.Header.Get("Accept")).ContentType()
	}
	hdr.Set("Content-Type", ct)
	hdr.Set("Grpc-Status", strconv.Itoa(proxy.GRPCStatus(status)))
	hdr.Set("Grpc-Message", proxy.GRPCEncode(msg))
	hdr.Set("X-Request-Id", a.id)
	return status
}

// grpcBroken sets the trailers of a gRPC response whose backend stream
// broke off with err after its header went out (proxy.GRPCBroken), unless
// the backend already gave a status.
func grpcBroken(hdr http.Header, resp *http.Response, err error) {
	if resp.Trailer.Get("Grpc-Status") != "" {
		return
	}
	code, msg := proxy.GRPCBroken(resp, err)
	hdr.Set(http.TrailerPrefix+"Grpc-Status", strconv.Itoa(code))
	hdr.Set(http.TrailerPrefix+"Grpc-Message", msg)
}

type tlsKey struct{}

// WithTLS returns a connection context carrying the TLS state of a
// connection that net/http cannot see as TLS (the edge guard wraps it), for
// http.Server.ConnContext.
func WithTLS(ctx context.Context, cs *tls.ConnectionState) context.Context {
	return context.WithValue(ctx, tlsKey{}, cs)
}

// tlsState is the TLS state of r's connection, nil for cleartext.
func tlsState(r *http.Request) *tls.ConnectionState {
	if r.TLS != nil {
		return r.TLS
	}
	cs, _ := r.Context().Value(tlsKey{}).(*tls.ConnectionState)
	return cs
}

// prefetchH2Body reads the body of an HTTP/2 request before any backend
// sees the request, when its content-length is at most proxy.ReplayMax: a
// stream whose DATA disagree with it, or that the client resets, is then
// refused with nothing forwarded, as the HTTP/1.1 engine does with small
// bodies. A body without content-length streams (gRPC, Connect, any
// full-duplex exchange: holding it until 64 KiB or its end would deadlock
// a client that waits for the answer before it sends more), as does a
// longer one. It returns the status to answer with, or 0, whether the
// body is now held whole (or there is none), and the body so held (nil:
// none, or not held).
func prefetchH2Body(r *http.Request, maxBody int64) (int, bool, []byte) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, true, nil
	}
	if r.ContentLength < 0 || r.ContentLength > proxy.ReplayMax {
		return 0, false, nil // (content-length 0 with the stream still open is waited out: DATA would break it)
	}
	buf := make([]byte, 0, min(max(r.ContentLength, 512), proxy.ReplayMax+1))
	for len(buf) <= proxy.ReplayMax {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if maxBody > 0 && int64(len(buf)) > maxBody {
			return http.StatusRequestEntityTooLarge, false, nil
		}
		if err == io.EOF {
			if r.ContentLength >= 0 && int64(len(buf)) != r.ContentLength {
				return http.StatusBadRequest, false, nil
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(buf)), int64(len(buf))
			return 0, true, buf
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
				return http.StatusRequestTimeout, false, nil
			}
			return http.StatusBadRequest, false, nil
		}
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	return 0, false, nil
}

// errH2BodyLength: an HTTP/2 client sent DATA past its content-length.
var errH2BodyLength = errors.New("http2: request body longer than its content-length")

// endCheckedBody is the body of an HTTP/2 request with a content-length
// n > 0 that streams (over proxy.ReplayMax, so not prefetched). It returns
// its last bytes only once the client's stream has ended right after them:
// x/net refuses DATA past the content-length only when they arrive, so
// without this a backend would receive, and act on, a request complete by
// its Content-Length that the client then makes malformed (RFC 9113
// §8.1.1). The backend sees such a request cut off instead.
type endCheckedBody struct {
	r    io.ReadCloser
	left int64 // declared bytes not yet returned
	err  error
}

func (b *endCheckedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left > 0 || err != nil {
		if err != nil && err != io.EOF {
			b.err = err
		}
		return n, err
	}
	// The declared length is all here: the stream must end now.
	var one [1]byte
	m, err := b.r.Read(one[:])
	for m == 0 && err == nil {
		m, err = b.r.Read(one[:])
	}
	if m > 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errH2BodyLength
		}
		b.err = err
		return 0, err
	}
	b.err = io.EOF
	return n, io.EOF
}

func (b *endCheckedBody) Close() error { return b.r.Close() }
