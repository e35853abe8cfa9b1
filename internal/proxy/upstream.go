package proxy

import (
	"context"
	"crypto/tls"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
)

// Codec names a codec's slot in an Upstream. The core keeps the slots and
// never looks inside them.
type Codec uint8

const (
	// CodecH1 is sluice's own HTTP/1.1 engine (package h1).
	CodecH1 Codec = iota
	// CodecNetHTTP is the net/http codec (package nethttp).
	CodecNetHTTP
	// CodecH2Client is the HTTP/2 client to backends that every codec
	// shares (package h2client).
	CodecH2Client
	// CodecLoop is the HTTP/1.1 engine's connections on its event loops
	// (package h1, engine: loop).
	CodecLoop
	numCodecs
)

// ConnPool is a codec's connections to the backends of one pool.
type ConnPool interface {
	// CloseIdleConnections closes the idle connections; connections in
	// use close when their request ends.
	CloseIdleConnections()
	// Close closes the idle connections and keeps none from now on.
	Close()
}

// Upstream is how one pool reaches its backends: the settings every codec
// shares (timeouts, TLS to https:// backends) and, per codec, that codec's
// own connection pool, made on first use. A reload keeps the Upstream of a
// pool whose upstream settings did not change, and with it the idle
// connections.
type Upstream struct {
	Timeouts config.PoolTimeouts
	// TLS is the client config for https:// backends; nil means Go's
	// defaults with the backend's host name.
	TLS *tls.Config
	// HTTP2 speaks HTTP/2 to the backends (upstream_http2): over TLS by
	// ALPN to https:// ones, by prior knowledge (h2c) to http:// ones. Set
	// before the first request.
	HTTP2 bool
	// ProxyHeader, 1 or 2, makes every new backend connection begin with a
	// PROXY protocol header of that version naming the client
	// (send_proxy_protocol); 0 sends none. Such a connection carries only
	// the requests of the client it names (see each codec). Set before the
	// first request.
	ProxyHeader int

	mu     sync.Mutex // serialises making a pool and Close
	closed bool
	pools  [numCodecs]atomic.Value // ConnPool
}

// NewUpstream returns an Upstream with no connections yet.
func NewUpstream(t config.PoolTimeouts, tlsConfig *tls.Config) *Upstream {
	return &Upstream{Timeouts: t, TLS: tlsConfig}
}

// ConnsOf returns codec c's connection pool of u, made by create on first
// use. After Close, a pool made for a late request is closed at once: its
// connections are not kept.
func ConnsOf[T ConnPool](u *Upstream, c Codec, create func(*Upstream) T) T {
	if v := u.pools[c].Load(); v != nil {
		return v.(T)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if v := u.pools[c].Load(); v != nil {
		return v.(T)
	}
	p := create(u)
	if u.closed {
		p.Close()
	}
	u.pools[c].Store(p)
	return p
}

// CloseIdleConnections closes every codec's idle connections.
func (u *Upstream) CloseIdleConnections() {
	for i := range u.pools {
		if v := u.pools[i].Load(); v != nil {
			v.(ConnPool).CloseIdleConnections()
		}
	}
}

// Close closes every codec's idle connections and keeps none from now on.
func (u *Upstream) Close() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	for i := range u.pools {
		if v := u.pools[i].Load(); v != nil {
			v.(ConnPool).Close()
		}
	}
}

// DialError marks an error that happened before any byte of a request was
// written, or one the backend declined without processing it (Unprocessed):
// the request may go to another backend without harm. Codecs return it from
// their dialers; the core's ConnectFailure class means it.
type DialError struct {
	Err error
	// Unprocessed: the backend was reached and declined the request
	// without processing it (an HTTP/2 stream it refused, or one past its
	// GOAWAY, RFC 9113 §8.7): the request goes elsewhere as after a connect
	// failure, but the backend is not ejected for it (passive health still
	// counts it).
	Unprocessed bool
	// BodySent: part of the request body was sent before the backend
	// declined it (Unprocessed): the request goes elsewhere only when the
	// codec can send that part again (Replayer.Resendable), whatever its
	// method, since the backend did not act on it.
	BodySent bool
}

func (e *DialError) Error() string { return "connect: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// ConnTiming measures an attempt's upstream connect time and time to the
// response head for a codec that reaches backends through a net/http
// RoundTripper (http.Transport, the HTTP/2 client): net/http's client trace
// says when a connection was asked for and whether the one it got was new.
// Its hooks run on the goroutine that calls RoundTrip. The zero value
// measures nothing until Trace.
type ConnTiming struct {
	start, getAt    time.Time
	connect, header time.Duration
}

// Trace starts the clock and returns ctx with the hooks that measure.
func (ct *ConnTiming) Trace(ctx context.Context) context.Context {
	*ct = ConnTiming{start: time.Now()}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) { ct.getAt = time.Now() },
		GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused && !ct.getAt.IsZero() {
				ct.connect = time.Since(ct.getAt)
			}
		},
	})
}

// Headed notes that the response head arrived now.
func (ct *ConnTiming) Headed() {
	if !ct.start.IsZero() {
		ct.header = time.Since(ct.start)
	}
}

// Fill puts the measures into o at the end of the attempt; a connect
// failure took from the ask for a connection to now.
func (ct *ConnTiming) Fill(o *Outcome) {
	o.Connect, o.Header = ct.connect, ct.header
	if o.Class == ConnectFailure && !ct.getAt.IsZero() {
		o.Connect = time.Since(ct.getAt)
	}
}
