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
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/rawio"
)

// Client reaches one pool's backends over HTTP/2.
type Client struct {
	tls, h2c *http2.Transport
}

var _ proxy.ConnPool = (*Client)(nil)

// Of returns u's HTTP/2 client, made on first use.
func Of(u *proxy.Upstream) *Client {
	return proxy.ConnsOf(u, proxy.CodecH2Client, newClient)
}

// RoundTrip sends r (its URL's scheme picks TLS or h2c). A stream the
// backend refused (REFUSED_STREAM: it never processed it) is reported as a
// *proxy.DialError, so the core may try another backend.
func (c *Client) RoundTrip(r *http.Request) (*http.Response, error) {
	t := c.h2c
	if r.URL.Scheme == "https" {
		t = c.tls
	}
	resp, err := t.RoundTrip(r)
	if err != nil && r.Body != nil {
		// x/net's Transport leaves the body open when it fails before a
		// stream starts (no connection: the backend is down), where
		// RoundTrip's contract is to close it: the codecs wait for that
		// close before they answer (an HTTP/1.1 client's request, whose
		// body streams from its connection, waited forever).
		r.Body.Close()
	}
	var se http2.StreamError
	if err != nil && errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return nil, &proxy.DialError{Err: err}
	}
	return resp, err
}

// CloseIdleConnections closes the connections with no stream open.
func (c *Client) CloseIdleConnections() {
	c.tls.CloseIdleConnections()
	c.h2c.CloseIdleConnections()
}

// Close closes the idle connections; the transports keep no more state.
func (c *Client) Close() { c.CloseIdleConnections() }

// newClient returns the HTTP/2 client for upstream_http2: one connection
// per backend carries many streams (max_connections_per_backend bounds the
// streams in flight, through the pool's limit).
func newClient(u *proxy.Upstream) *Client {
	d := &net.Dialer{Timeout: u.Timeouts.Connect, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &proxy.DialError{Err: err}
		}
		// Reads and writes (beneath TLS too) are raw system calls on the
		// socket, as the engine's (see rawio).
		tc, _ := c.(*net.TCPConn)
		return rawio.New(c, tc), nil
	}
	cfg := u.TLS
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	h2 := &http2.Transport{
		TLSClientConfig:            cfg,
		DisableCompression:         true,
		MaxHeaderListSize:          1 << 20,
		StrictMaxConcurrentStreams: false, // past a backend's stream limit, another connection
		IdleConnTimeout:            u.Timeouts.Idle,
		ReadIdleTimeout:            30 * time.Second, // a ping then, to find dead connections
		PingTimeout:                5 * time.Second,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
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
		},
	}
	h2c := &http2.Transport{
		AllowHTTP:          true,
		DisableCompression: true,
		MaxHeaderListSize:  1 << 20,
		IdleConnTimeout:    u.Timeouts.Idle,
		ReadIdleTimeout:    30 * time.Second,
		PingTimeout:        5 * time.Second,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr) // h2c: prior knowledge, no TLS
		},
	}
	return &Client{tls: h2, h2c: h2c}
}
