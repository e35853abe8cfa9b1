// Package h2client is sluice's HTTP/2 client to backends (upstream_http2),
// shared by every codec: golang.org/x/net/http2's Transport over TLS (ALPN
// h2) to https:// backends and by prior knowledge (h2c) to http:// ones,
// kept in the pool's proxy.Upstream.
package h2client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/rawio"
)

// Client reaches one pool's backends over HTTP/2.
type Client struct {
	tls, h2c *conns
}

var _ proxy.ConnPool = (*Client)(nil)

// Of returns u's HTTP/2 client, made on first use.
func Of(u *proxy.Upstream) *Client {
	return proxy.ConnsOf(u, proxy.CodecH2Client, newClient)
}

// RoundTrip sends r (its URL's scheme picks TLS or h2c) on a connection
// to its backend that has a stream free, dialling one when none has.
//
// A request the backend did not process (RFC 9113 §8.7: a stream it
// refused with REFUSED_STREAM, or one past the last stream id of its
// GOAWAY, or a connection that was closed before the stream began), and
// of whose body the backend can have seen nothing, is reported as a
// *proxy.DialError marked Unprocessed: the core sends it to another
// backend at once, under its retry budget, without ejecting this one.
// Before that, a request without a body is sent once more to the same
// backend (a connection closing gracefully, or a stream refused on a new
// connection before the backend's SETTINGS told its stream limit).
//
// This is why the connections are pooled here and not by x/net's
// Transport: its RoundTrip retries such requests on the same backend up
// to six times, waiting 1, 2, 4, 8 and 16 s between them, so a backend
// that refused every stream held a request for half a minute.
func (c *Client) RoundTrip(r *http.Request) (*http.Response, error) {
	p := c.h2c
	if r.URL.Scheme == "https" {
		p = c.tls
	}
	resp, err := p.roundTrip(r)
	if err != nil && r.Body != nil {
		// x/net leaves the body open when it fails before a stream
		// starts (no connection: the backend is down), where RoundTrip's
		// contract is to close it: the codecs wait for that close before
		// they answer (an HTTP/1.1 client's request, whose body streams
		// from its connection, waited forever).
		r.Body.Close()
	}
	return resp, err
}

// CloseIdleConnections closes the connections with no stream open.
func (c *Client) CloseIdleConnections() {
	c.tls.closeIdle()
	c.h2c.closeIdle()
}

// Close closes the idle connections; the transports keep no more state.
func (c *Client) Close() { c.CloseIdleConnections() }

// conns are the HTTP/2 connections of one transport (TLS or h2c), by
// backend address: x/net's ClientConns, made by t (its settings: header
// list size, idle timeout, pings), over connections dial opens. t's
// ConnPool is p, for x/net to tell which connections are dead (MarkDead).
// p.mu is never held while x/net may block (State takes the connection's
// write lock, held through a write to a backend that stopped reading).
type conns struct {
	t    *http2.Transport
	dial func(ctx context.Context, addr string) (net.Conn, error)

	mu      sync.Mutex
	by      map[string][]*http2.ClientConn
	dialing map[string]*dialCall
}

var _ http2.ClientConnPool = (*conns)(nil)

// dialCall is a connection being dialled to an address: requests that
// find every connection busy meanwhile wait for it rather than dial too.
type dialCall struct {
	done chan struct{}
	err  error
}

func (p *conns) roundTrip(r *http.Request) (*http.Response, error) {
	addr := hostPort(r.URL)
	req, body := r, (*counted)(nil)
	if r.Body != nil && r.Body != http.NoBody {
		// To know whether the backend may have seen part of the body.
		body = &counted{ReadCloser: r.Body}
		req = new(http.Request)
		*req = *r
		req.Body = body
	}
	for try := 0; ; try++ {
		cc, err := p.get(r.Context(), addr)
		if err != nil {
			return nil, err
		}
		resp, err := cc.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		refused, gone := unprocessed(err)
		if gone {
			p.MarkDead(cc) // never again (x/net may still offer a connection that never carried a stream)
		}
		switch {
		case !refused && !gone || body != nil && body.n.Load() > 0:
			return nil, err
		case try == 0 && body == nil:
			continue
		}
		return nil, &proxy.DialError{Err: err, Unprocessed: true}
	}
}

// counted is a request body that counts the bytes read from it.
type counted struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *counted) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// unprocessed reports whether err says the backend did not process the
// request: it refused the stream, or the connection went away before the
// stream began or past the last stream its GOAWAY kept. x/net names the
// second kind by errors it does not export, so they are told by their
// text (TestH2UpstreamRefusedGoesElsewhere fails if that text changes).
func unprocessed(err error) (refused, gone bool) {
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream, false
	}
	switch err.Error() {
	case "http2: Transport received Server's graceful shutdown GOAWAY", // errClientConnGotGoAway
		"http2: client conn not usable",               // errClientConnUnusable
		"http2: client conn could not be established": // errClientConnNotEstablished
		return false, true
	}
	return false, false
}

// get returns a connection to addr with a stream reserved for the
// request, dialling one when none has a stream free; it tells the
// request's httptrace hooks (proxy.ConnTiming) when it asked and what it
// got.
func (p *conns) get(ctx context.Context, addr string) (*http2.ClientConn, error) {
	trace := httptrace.ContextClientTrace(ctx)
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(addr)
	}
	dialed := false
	for {
		p.mu.Lock()
		for _, cc := range p.by[addr] {
			if cc.ReserveNewRequest() {
				p.mu.Unlock()
				if trace != nil && trace.GotConn != nil {
					trace.GotConn(httptrace.GotConnInfo{Reused: !dialed})
				}
				return cc, nil
			}
		}
		if d := p.dialing[addr]; d != nil {
			p.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if d.err != nil && !errors.Is(d.err, context.Canceled) {
				return nil, d.err
			}
			dialed = d.err == nil // else the request that dialled went away: dial again
			continue
		}
		d := &dialCall{done: make(chan struct{})}
		p.dialing[addr] = d
		p.mu.Unlock()
		var cc *http2.ClientConn
		conn, err := p.dial(ctx, addr)
		if err == nil {
			if cc, err = p.t.NewClientConn(conn); err != nil {
				conn.Close()
				err = &proxy.DialError{Err: err}
			}
		}
		p.mu.Lock()
		delete(p.dialing, addr)
		if err == nil {
			p.by[addr] = append(p.by[addr], cc)
		}
		d.err = err
		close(d.done)
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		dialed = true
	}
}

// GetClientConn is not used: requests take their connection from get.
func (p *conns) GetClientConn(*http.Request, string) (*http2.ClientConn, error) {
	return nil, errors.New("h2client: GetClientConn is not used")
}

// MarkDead forgets cc: x/net calls it when a connection closes or goes
// idle past its timeout, and roundTrip when a stream could not start on it.
func (p *conns) MarkDead(cc *http2.ClientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, ccs := range p.by {
		if i := slices.Index(ccs, cc); i >= 0 {
			if ccs = slices.Delete(ccs, i, i+1); len(ccs) == 0 {
				delete(p.by, addr)
			} else {
				p.by[addr] = ccs
			}
			return
		}
	}
}

// closeIdle closes the connections with no stream open or reserved.
func (p *conns) closeIdle() {
	p.mu.Lock()
	var all []*http2.ClientConn
	for _, ccs := range p.by {
		all = append(all, ccs...)
	}
	p.mu.Unlock()
	for _, cc := range all {
		if st := cc.State(); st.Closed || st.StreamsActive == 0 && st.StreamsReserved == 0 && st.StreamsPending == 0 {
			cc.Close()
			p.MarkDead(cc)
		}
	}
}

// hostPort is u's host with its scheme's port when it names none.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// newClient returns the HTTP/2 client for upstream_http2: one connection
// per backend carries many streams (max_connections_per_backend bounds the
// streams in flight, through the pool's limit), another is dialled when
// the backend's stream limit is reached.
func newClient(u *proxy.Upstream) *Client {
	d := &net.Dialer{Timeout: u.Timeouts.Connect, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &proxy.DialError{Err: err}
		}
		// Reads and writes (beneath TLS too) are raw system calls on the
		// socket, as the engine's (see rawio).
		tc, _ := c.(*net.TCPConn)
		return rawio.New(c, tc), nil
	}
	base := u.TLS
	if base == nil {
		base = &tls.Config{}
	}
	base = base.Clone()
	base.NextProtos = []string{"h2"}
	dialTLS := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		cfg := base
		if cfg.ServerName == "" {
			cfg = base.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(c, cfg)
		hctx := ctx
		if d := u.Timeouts.Connect; d > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		if err := tc.HandshakeContext(hctx); err != nil {
			c.Close()
			return nil, &proxy.DialError{Err: err}
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			tc.Close()
			return nil, &proxy.DialError{Err: fmt.Errorf("backend %s did not agree to HTTP/2 (ALPN %q): remove upstream_http2 or enable HTTP/2 on it", addr, p)}
		}
		return tc, nil
	}
	transport := func() *http2.Transport {
		return &http2.Transport{
			AllowHTTP:          true,
			DisableCompression: true,
			MaxHeaderListSize:  1 << 20,
			IdleConnTimeout:    u.Timeouts.Idle,
			ReadIdleTimeout:    30 * time.Second, // a ping then, to find dead connections
			PingTimeout:        5 * time.Second,
		}
	}
	pool := func(dial func(context.Context, string) (net.Conn, error)) *conns {
		p := &conns{t: transport(), dial: dial, by: map[string][]*http2.ClientConn{}, dialing: map[string]*dialCall{}}
		p.t.ConnPool = p
		return p
	}
	return &Client{tls: pool(dialTLS), h2c: pool(dial)}
}
