package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http2"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// maxResponse bounds what a check reads of a response: its body, and over
// HTTP/2 its header list.
const maxResponse = 64 << 10

// newProber returns the prober hc asks for: TCP, gRPC (always HTTP/2), or
// HTTP, over HTTP/2 when the pool speaks it to its backends.
func newProber(hc *config.HealthCheck, o Options) Prober {
	dial := dialer(o.ProxyHeader)
	switch {
	case hc.Type == "tcp":
		return func(ctx context.Context, b *pool.Backend) error {
			c, err := dial(ctx, "tcp", b.Host)
			if err != nil {
				return err
			}
			return c.Close()
		}
	case hc.Type == "grpc":
		return newH2Prober(hc, o.UpstreamTLS, dial).probeGRPC
	case o.UpstreamHTTP2:
		return newH2Prober(hc, o.UpstreamTLS, dial).probeHTTP
	}
	tr := &http.Transport{
		DialContext: dial,
		// A fresh connection per check, as HAProxy does: a check that reuses
		// a connection proves less about the backend's listener.
		DisableKeepAlives:  true,
		DisableCompression: true,
		TLSClientConfig:    o.UpstreamTLS.ClientConfig(),
		Proxy:              nil,
	}
	return func(ctx context.Context, b *pool.Backend) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme(b)+"://"+b.Host+hc.Path, nil)
		if err != nil {
			return err
		}
		if hc.Host != "" {
			req.Host = hc.Host
		}
		req.Header.Set("User-Agent", "sluice-health-check")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		resp.Body.Close()
		return checkStatus(hc, resp.StatusCode)
	}
}

func scheme(b *pool.Backend) string {
	if b.URL != nil && b.URL.Scheme == "https" {
		return "https"
	}
	return "http"
}

func checkStatus(hc *config.HealthCheck, code int) error {
	if code < hc.ExpectMin || code > hc.ExpectMax {
		return fmt.Errorf("health check %s answered %d, want %s", hc.Path, code, hc.ExpectStatus)
	}
	return nil
}

// dialer returns how checks connect: a plain dial, or with a PROXY header
// version (1 or 2) one that writes a header naming no client first.
func dialer(proxyHeader int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if proxyHeader == 0 {
		return d.DialContext
	}
	hdr := proxyproto.AppendLocal(nil, proxyHeader)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write(hdr); err != nil {
			c.Close()
			return nil, fmt.Errorf("writing the PROXY protocol header: %w", err)
		}
		return c, nil
	}
}

// h2Prober checks backends over HTTP/2 (upstream_http2, and every gRPC
// check): over TLS with ALPN h2 for https:// backends, by prior knowledge
// (h2c) for http:// ones, on a fresh connection per check.
type h2Prober struct {
	hc   *config.HealthCheck
	tls  *tls.Config // NextProtos h2
	tr   *http2.Transport
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func newH2Prober(hc *config.HealthCheck, utls config.UpstreamTLS, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *h2Prober {
	cfg := utls.ClientConfig()
	cfg.NextProtos = []string{"h2"}
	return &h2Prober{
		hc:   hc,
		dial: dial,
		tls:  cfg,
		tr: &http2.Transport{
			AllowHTTP:          true,
			DisableCompression: true,
			MaxHeaderListSize:  maxResponse,
		},
	}
}

// probeHTTP is the HTTP check (GET path, expect_status) over HTTP/2.
func (p *h2Prober) probeHTTP(ctx context.Context, b *pool.Backend) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme(b)+"://"+b.Host+p.hc.Path, nil)
	if err != nil {
		return err
	}
	if p.hc.Host != "" {
		req.Host = p.hc.Host
	}
	req.Header.Set("User-Agent", "sluice-health-check")
	resp, _, err := p.roundTrip(ctx, b, req)
	if err != nil {
		return err
	}
	return checkStatus(p.hc, resp.StatusCode)
}

// roundTrip sends req to b on a new HTTP/2 connection, reads the response
// body (to its end, so that trailers arrive, but at most maxResponse+1
// bytes: more is cut off) and closes the connection. Its errors say when
// the backend does not speak HTTP/2 and when the check timed out.
func (p *h2Prober) roundTrip(ctx context.Context, b *pool.Backend, req *http.Request) (*http.Response, []byte, error) {
	raw, err := p.dial(ctx, "tcp", b.Host)
	if err != nil {
		return nil, nil, p.failed(ctx, err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	var conn net.Conn
	var sniff *sniffConn
	if req.URL.Scheme == "https" {
		cfg := p.tls
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(b.Host)
			if err != nil {
				host = b.Host
			}
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			if strings.Contains(err.Error(), "no application protocol") { // the alert's type is not exported
				return nil, nil, fmt.Errorf("not HTTP/2: the backend refused h2 in the TLS handshake (ALPN): %w", err)
			}
			return nil, nil, p.failed(ctx, fmt.Errorf("TLS handshake: %w", err))
		}
		if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
			if proto == "" {
				proto = "none"
			}
			return nil, nil, fmt.Errorf("not HTTP/2: the backend did not choose h2 in the TLS handshake (ALPN: %s)", proto)
		}
		conn = tc
	} else {
		sniff = &sniffConn{Conn: raw}
		conn = sniff
	}
	cc, err := p.tr.NewClientConn(conn)
	if err != nil {
		return nil, nil, p.failed(ctx, sniff.explain(err))
	}
	defer cc.Close()
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return nil, nil, p.failed(ctx, sniff.explain(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, nil, p.failed(ctx, fmt.Errorf("reading the response: %w", err))
	}
	return resp, body, nil
}

// failed says "timed out" for an error that the check's timeout caused.
func (p *h2Prober) failed(ctx context.Context, err error) error {
	return timedOut(ctx, p.hc.Timeout, err)
}

// sniffConn keeps the first bytes a backend sends on an h2c connection, so
// that a backend answering the HTTP/2 preface in HTTP/1.x is named as such
// rather than as a frame error.
type sniffConn struct {
	net.Conn
	mu    sync.Mutex
	first []byte
}

const sniffLen = 64

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if k := min(n, sniffLen-len(c.first)); k > 0 {
		c.first = append(c.first, p[:k]...)
	}
	c.mu.Unlock()
	return n, err
}

// explain wraps err, from a connection that failed, with what the backend
// sent when that shows it is not HTTP/2. c may be nil (TLS: ALPN told).
func (c *sniffConn) explain(err error) error {
	if c == nil {
		return err
	}
	c.mu.Lock()
	first := c.first
	c.mu.Unlock()
	if !bytes.HasPrefix(first, []byte("HTTP/")) {
		return err
	}
	if i := bytes.IndexAny(first, "\r\n"); i >= 0 {
		first = first[:i]
	}
	return fmt.Errorf("not HTTP/2: the backend answered the h2c preface with %q (HTTP/1.x only; upstream_http2 needs h2c on http:// backends): %w", first, err)
}
