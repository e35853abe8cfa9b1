package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// dialError marks an error that happened before any byte of a request was
// written: the request may go to another backend without harm.
type dialError struct {
	err error
}

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// NewTransport returns the net/http codec's upstream connection pool for one
// pool. Go's defaults do not suit a proxy: two idle connections per host
// would force a new connection for most requests under load, the
// environment's HTTP_PROXY must not apply, and compression must pass
// through untouched.
func NewTransport(t config.PoolTimeouts, tlsConfig *tls.Config) *http.Transport {
	d := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return c, nil
		},
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    t.Connect,
		MaxIdleConns:           0, // no global cap; per host below
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        t.Idle,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
		ReadBufferSize:         32 << 10,
		WriteBufferSize:        32 << 10,
		MaxResponseHeaderBytes: 1 << 20,
	}
}
