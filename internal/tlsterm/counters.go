package tlsterm

import (
	"context"
	"crypto/tls"
	"sync/atomic"
)

// Counters counts one listener's TLS handshakes by result, for
// sluice_tls_handshakes_total{listener,result="ok"|"error"}. The server
// either runs handshakes through Handshake or reports each result with
// Count; the metrics collector reads OK and Errors. The zero value is
// ready to use.
type Counters struct {
	ok, errors atomic.Uint64
}

// Handshake runs conn's handshake, bounded by ctx, and counts its result.
// Call it once per connection: a tls.Conn's later handshakes return the
// first result without a new handshake, but would be counted again.
func (c *Counters) Handshake(ctx context.Context, conn *tls.Conn) error {
	err := conn.HandshakeContext(ctx)
	c.Count(err)
	return err
}

// Count counts one handshake that ended with err (nil: ok). A client
// that connects and leaves without a handshake is an error, as in
// HAProxy's and Envoy's counts.
func (c *Counters) Count(err error) {
	if err != nil {
		c.errors.Add(1)
	} else {
		c.ok.Add(1)
	}
}

// OK returns the number of handshakes that succeeded.
func (c *Counters) OK() uint64 { return c.ok.Load() }

// Errors returns the number of handshakes that failed.
func (c *Counters) Errors() uint64 { return c.errors.Load() }
