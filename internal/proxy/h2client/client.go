// Package h2client is sluice's HTTP/2 client to backends (upstream_http2),
// shared by every codec: golang.org/x/net/http2's client connections, over
// TLS (ALPN h2) to https:// backends and by prior knowledge (h2c) to
// http:// ones, pooled here (see Client.RoundTrip for why) and kept in the
// pool's proxy.Upstream.
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
// A request on which no stream began (its connection filled up before
// the backend's SETTINGS told its limit, or closed first) takes another of
// the backend's connections. One the backend did not process (RFC 9113
// §8.7: a stream it refused with REFUSED_STREAM, or one past the last
// stream id of its GOAWAY) is reported as a *proxy.DialError marked
// Unprocessed: the core sends it to another backend at once, under its
// retry budget, without ejecting this one; a request without a body is
// first sent once more to the same backend. When part of its body was sent
// first (x/net sends the body as the stream opens), the error is marked
// BodySent too: the request goes elsewhere only if its codec kept that part
// (proxy.Replayer.Resendable), whatever its method.
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
	c.tls.closeIdle(false)
	c.h2c.closeIdle(false)
}

// Close closes the idle connections and lets the busy ones close when
// their streams end; the pool keeps none of them.
func (c *Client) Close() {
	c.tls.closeIdle(true)
	c.h2c.closeIdle(true)
}

// conns are the HTTP/2 connections of one transport (TLS or h2c), by
// backend address: x/net's ClientConns, made by t (its settings: header
// list size, idle timeout, pings), over connections dial opens. t's
// ConnPool is p, for x/net to tell which connections are dead (MarkDead).
// p.mu is never held while x/net may block.
type conns struct {
	t    *http2.Transport
	dial func(ctx context.Context, addr string) (net.Conn, error)

	mu      sync.Mutex
	by      map[string][]*conn
	dialing map[string]*dialCall
}

// conn is one pooled connection and the requests of this pool on it:
// counted from the stream's reservation (get) until RoundTrip fails or the
// response's body ends or is closed. The pool tells an idle connection by
// this count, never by x/net's State: State takes the connection's write
// lock, held through a write to a backend that stopped reading, and a
// reload (which closes the old pools' idle connections) waited for it,
// up to the 35 s of a lost ping or for good while the backend still sent.
type conn struct {
	cc       *http2.ClientConn
	requests atomic.Int32
}

// respBody is a response's body that ends its request on its connection
// (conn.requests) at its end or close, whichever comes first.
type respBody struct {
	io.ReadCloser
	c     *conn
	ended atomic.Bool
}

func (b *respBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *respBody) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

func (b *respBody) end() {
	if !b.ended.Swap(true) {
		b.c.requests.Add(-1)
	}
}

var _ http2.ClientConnPool = (*conns)(nil)

// dialCall is a connection being dialled to an address: requests that
// find every connection busy meanwhile wait for it rather than dial too.
type dialCall struct {
	done chan struct{}
	err  error
	// abandoned: the request that dialled had ended (gone, or past its
	// deadline) when the dial failed: the next waiter dials again.
	abandoned bool
}

func (p *conns) roundTrip(r *http.Request) (*http.Response, error) {
	addr := hostPort(r.URL)
	req, body := r, (*counted)(nil)
	if r.Body != nil && r.Body != http.NoBody {
		// To know whether the backend may have seen part of the body.
		body = newCounted(r.Body)
		req = new(http.Request)
		*req = *r
		req.Body = body
	}
	refusals, unstarted := 0, 0
	for {
		c, err := p.get(r.Context(), addr)
		if err != nil {
			return nil, err
		}
		resp, err := c.cc.RoundTrip(req)
		if err == nil {
			resp.Body = &respBody{ReadCloser: resp.Body, c: c}
			return resp, nil
		}
		c.requests.Add(-1)
		if r.Context().Err() != nil {
			// x/net may return a refusal while its body read goes on:
			// the count of what it sent is not final (the codecs take a
			// request that ran out of time or lost its client as such).
			return nil, err
		}
		switch kindOf(err) {
		case notStarted:
			// No stream began on cc (it filled up before the backend's
			// SETTINGS told its limit, or it closed before its first
			// stream): nothing was sent, so the request takes another of
			// the backend's connections, a few times at most.
			if err.Error() == errNotEstablished {
				p.MarkDead(c.cc) // x/net would still offer it
			}
			if unstarted++; unstarted < 3 {
				continue
			}
		case declined:
			// The backend refused the stream, or it was past its GOAWAY.
			if body != nil && (body.n.Load() > 0 || body.abandoned.Load()) {
				// Part of the body went, or a read of it was under way
				// (what it takes from the client is lost to this
				// stream): the codec must send it again.
				return nil, &proxy.DialError{Err: err, Unprocessed: true, BodySent: true}
			}
			if refusals++; refusals == 1 && body == nil {
				continue // once more on this backend
			}
		default:
			return nil, err
		}
		return nil, &proxy.DialError{Err: err, Unprocessed: true}
	}
}

// counted is a request body that counts the bytes read from it.
//
// A body whose reads may wait on the client (one still streaming in, not
// Held) is read on a goroutine of its own, a Read at a time, so that a
// Close ends a Read that waits. x/net's RoundTrip returns only once its
// goroutine that writes the body is done: when the backend refused the
// stream while that goroutine waited on a client that itself waits for
// the answer (a bidirectional stream, a slow upload), the request would
// otherwise be held until the client sent more or the request timed out,
// where it should go elsewhere at once. The abandoned Read ends when the
// codec ends the client's body (its request ends, or its connection
// closes); what it read is the codec's to keep for a retry, so it counts
// as part of the body sent (proxy.DialError.BodySent: the request goes
// elsewhere only if proxy.Replayer.Resendable).
type counted struct {
	r io.ReadCloser
	n atomic.Int64
	// For a body read on a goroutine: closed by Close; res the result of
	// the Read under way (pending), into buf (from bufs); abandoned: a
	// Read was under way when Close came, so the codec's body may have
	// been read from beyond what n counts.
	closed    chan struct{}
	once      sync.Once
	res       chan readResult
	pending   bool
	buf       *[]byte
	abandoned atomic.Bool
}

// bufs are counted's read buffers, each back in the pool once its body's
// last Read returned (never while an abandoned Read may still fill it).
var bufs sync.Pool

type readResult struct {
	n   int
	err error
}

// Held is what a codec's request body implements to say that its reads
// never wait: it is held whole in memory.
type Held interface{ Held() bool }

func newCounted(r io.ReadCloser) *counted {
	b := &counted{r: r}
	if h, ok := r.(Held); !ok || !h.Held() {
		b.closed, b.res = make(chan struct{}), make(chan readResult, 1)
	}
	return b
}

// errBodyClosed ends a Read that a Close abandoned.
var errBodyClosed = errors.New("http2: request body closed while a read of it waited")

func (b *counted) Read(p []byte) (int, error) {
	if b.closed == nil {
		n, err := b.r.Read(p)
		b.n.Add(int64(n))
		return n, err
	}
	select {
	case <-b.closed:
		return 0, b.closedErr()
	default:
	}
	if !b.pending {
		if b.buf == nil || cap(*b.buf) < len(p) {
			b.buf, _ = bufs.Get().(*[]byte)
			if b.buf == nil || cap(*b.buf) < len(p) {
				s := make([]byte, len(p))
				b.buf = &s
			}
		}
		buf := (*b.buf)[:len(p)]
		b.pending = true
		go func() {
			n, err := b.r.Read(buf)
			b.res <- readResult{n, err}
		}()
	}
	select {
	case res := <-b.res:
		b.pending = false
		n := copy(p, (*b.buf)[:res.n])
		b.n.Add(int64(n))
		if res.err != nil {
			bufs.Put(b.buf) // the body's last Read
			b.buf = nil
		}
		return n, res.err
	case <-b.closed:
		return 0, b.closedErr()
	}
}

// closedErr ends a Read after Close, noting a Read it abandons.
func (b *counted) closedErr() error {
	if b.pending {
		b.abandoned.Store(true)
	}
	return errBodyClosed
}

func (b *counted) Close() error {
	if b.closed != nil {
		b.once.Do(func() { close(b.closed) })
	}
	return b.r.Close()
}

// What an error from ClientConn.RoundTrip says about the request.
const (
	processed  = iota // or may have been: the error stands
	notStarted        // no stream began: nothing was sent
	declined          // the backend did not process the stream (RFC 9113 §8.7)
)

// kindOf tells what err says. x/net names two of these by errors it does
// not export, so they are told by their text (the tests of this package
// and TestH2UpstreamRefusedGoesElsewhere fail if that text changes).
func kindOf(err error) int {
	var se http2.StreamError
	if errors.As(err, &se) {
		if se.Code == http2.ErrCodeRefusedStream {
			return declined
		}
		return processed
	}
	switch err.Error() {
	case "http2: Transport received Server's graceful shutdown GOAWAY": // errClientConnGotGoAway
		return declined
	case "http2: client conn not usable", errNotEstablished: // errClientConnUnusable
		return notStarted
	}
	return processed
}

// errNotEstablished is the text of x/net's errClientConnNotEstablished: a
// connection that closed before its first stream.
const errNotEstablished = "http2: client conn could not be established"

// get returns a connection to addr with a stream reserved for the
// request (and the request counted on it), dialling one when none has a
// stream free; it tells the request's httptrace hooks (proxy.ConnTiming)
// when it asked and what it got.
func (p *conns) get(ctx context.Context, addr string) (*conn, error) {
	trace := httptrace.ContextClientTrace(ctx)
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(addr)
	}
	dialed := false
	for {
		p.mu.Lock()
		for _, c := range p.by[addr] {
			if c.cc.ReserveNewRequest() {
				c.requests.Add(1) // under p.mu: closeIdle sees it
				p.mu.Unlock()
				if trace != nil && trace.GotConn != nil {
					trace.GotConn(httptrace.GotConnInfo{Reused: !dialed})
				}
				return c, nil
			}
		}
		if d := p.dialing[addr]; d != nil {
			p.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if d.err != nil && !d.abandoned {
				return nil, d.err
			}
			dialed = d.err == nil // else the request that dialled ended: dial again
			continue
		}
		d := &dialCall{done: make(chan struct{})}
		p.dialing[addr] = d
		p.mu.Unlock()
		var cc *http2.ClientConn
		nc, err := p.dial(ctx, addr)
		if err == nil {
			if cc, err = p.t.NewClientConn(nc); err != nil {
				nc.Close()
				err = &proxy.DialError{Err: err}
			}
		}
		p.mu.Lock()
		delete(p.dialing, addr)
		if err == nil {
			p.by[addr] = append(p.by[addr], &conn{cc: cc})
		}
		d.err, d.abandoned = err, err != nil && ctx.Err() != nil
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
	for addr, cs := range p.by {
		if i := slices.IndexFunc(cs, func(c *conn) bool { return c.cc == cc }); i >= 0 {
			if cs = slices.Delete(cs, i, i+1); len(cs) == 0 {
				delete(p.by, addr)
			} else {
				p.by[addr] = cs
			}
			return
		}
	}
}

// closeIdle closes the connections that carry no request of this pool;
// with all (Close), the busy ones are also taken out of the pool and
// marked not to be reused, so that they close once their streams end
// (x/net). The connections leave the pool before they are looked at, so
// that no request takes one about to be closed; a busy one goes back
// (without all). Another request may dial meanwhile. Nothing here waits
// on a connection's writes (see conn).
func (p *conns) closeIdle(all bool) {
	p.mu.Lock()
	taken := p.by
	p.by = map[string][]*conn{}
	p.mu.Unlock()
	for addr, cs := range taken {
		for _, c := range cs {
			if c.requests.Load() == 0 {
				c.cc.Close()
				continue
			}
			if all {
				c.cc.SetDoNotReuse()
				continue
			}
			p.mu.Lock()
			p.by[addr] = append(p.by[addr], c)
			p.mu.Unlock()
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
		p := &conns{t: transport(), dial: dial, by: map[string][]*conn{}, dialing: map[string]*dialCall{}}
		p.t.ConnPool = p
		return p
	}
	return &Client{tls: pool(dialTLS), h2c: pool(dial)}
}
