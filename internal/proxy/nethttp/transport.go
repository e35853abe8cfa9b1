package nethttp

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxy/h2client"
	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// client is what a PROXY header to a backend names: the client's address
// and the address it connected to, after any PROXY header it came with.
type client struct{ src, dst netip.AddrPort }

type clientKey struct{}

// withClient carries r's client to the transport's dialer.
func withClient(ctx context.Context, r *http.Request) context.Context {
	cl := client{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		cl.src = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		cl.dst = proxyproto.AddrPort(a)
	}
	return context.WithValue(ctx, clientKey{}, cl)
}

// transportOf returns the net/http codec's connections of u, made on first
// use.
func transportOf(u *proxy.Upstream) *transport {
	return proxy.ConnsOf(u, proxy.CodecNetHTTP, newTransport)
}

// roundTripper returns how the codec reaches u's backends: HTTP/1.1
// through its own http.Transport, or with upstream_http2 the HTTP/2 client
// that every codec shares (package h2client).
func roundTripper(u *proxy.Upstream) http.RoundTripper {
	if u.HTTP2 {
		return h2client.Of(u)
	}
	return transportOf(u)
}

// transport is http.Transport as a proxy.ConnPool.
type transport struct{ h1 *http.Transport }

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) { return t.h1.RoundTrip(r) }

// CloseIdleConnections closes the idle connections.
func (t *transport) CloseIdleConnections() { t.h1.CloseIdleConnections() }

// Close closes the idle connections; net/http keeps no more state.
func (t *transport) Close() { t.CloseIdleConnections() }

// newTransport returns the net/http codec's upstream connection pool for one
// pool. Go's defaults do not suit a proxy: two idle connections per host
// would force a new connection for most requests under load, the
// environment's HTTP_PROXY must not apply, and compression must pass
// through untouched.
func newTransport(u *proxy.Upstream) *transport {
	t, tlsConfig := u.Timeouts, u.TLS
	d := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &proxy.DialError{Err: err}
		}
		if v := u.ProxyHeader; v != 0 {
			cl, _ := ctx.Value(clientKey{}).(client)
			if _, err := c.Write(proxyproto.Append(nil, v, cl.src, cl.dst)); err != nil {
				c.Close()
				return nil, &proxy.DialError{Err: fmt.Errorf("writing the PROXY protocol header: %w", err)}
			}
		}
		return c, nil
	}
	return &transport{h1: &http.Transport{
		// A connection that begins with a PROXY header names one client:
		// http.Transport's pool cannot be keyed by client, so such
		// connections carry one request each (the HTTP/1.1 engine keeps
		// them per client connection instead).
		DisableKeepAlives:      u.ProxyHeader != 0,
		Proxy:                  nil,
		DialContext:            dial,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    t.Connect,
		MaxIdleConns:           0, // no global cap; per host below
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        t.Idle,
		ExpectContinueTimeout:  expectWait,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
		ReadBufferSize:         32 << 10,
		WriteBufferSize:        32 << 10,
		MaxResponseHeaderBytes: 1 << 20,
	}}
}
