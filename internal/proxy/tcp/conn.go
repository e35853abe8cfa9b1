package tcp

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxyproto"
	"github.com/sluice-lb/sluice/internal/tlsterm"
)

// defaultReadHeader bounds what is read before the relay when the
// listener's read_header is 0, so that no connection waits forever.
const defaultReadHeader = 10 * time.Second

var helloBufs = sync.Pool{New: func() any { b := make([]byte, maxHello); return &b }}

// serve takes one connection from accept to its access log line: PROXY
// header, TLS or ClientHello, route, then the core's attempt loop, whose
// one successful attempt is the relay.
func (s *Server) serve(c *conn) {
	set := s.settings.Load()
	l := s.o.View.Load()
	rec := proxy.Record{Start: time.Now()}
	rh := set.ReadHeader
	if rh <= 0 {
		rh = defaultReadHeader
	}
	deadline := rec.Start.Add(rh)

	client := c.nc
	if set.ProxyProtocol {
		pc, err := proxyproto.Accept(client, func(peer netip.Addr) bool {
			return len(l.Trusted) == 0 || proxy.IsTrusted(peer, l.Trusted)
		}, deadline)
		if err != nil {
			s.o.Rejects.Add(proxy.ProxyReject(err))
			s.o.Logger.Debug("connection refused", "listener", l.Name, "error", err)
			return
		}
		client = pc
	}
	if l.Access != nil {
		rec.Client = client.RemoteAddr().String()
	}
	a := &attempt{s: s, c: c, client: client, idle: set.Idle}
	switch {
	case set.TLS != nil:
		tc := tls.Server(client, set.TLS)
		client.SetDeadline(deadline)
		err := tc.HandshakeContext(s.ctx)
		s.o.Handshake(err == nil)
		if err != nil {
			return
		}
		client.SetDeadline(time.Time{})
		if tc.ConnectionState().NegotiatedProtocol == tlsterm.ALPNChallenge {
			return // a CA validating TLS-ALPN-01: the handshake was the answer
		}
		rec.Host = tc.ConnectionState().ServerName
		a.client = tc
		defer tc.Close()
	case set.SNI:
		bp := helloBufs.Get().(*[]byte)
		defer helloBufs.Put(bp)
		rec.Host, a.peeked, _ = readHello(client, deadline, *bp)
	}

	var info pool.PickInfo
	rec.Info = &info
	t, refused := l.ResolveConn(s.ctx, &rec, rec.Host, proxyproto.AddrPort(client.RemoteAddr()).Addr())
	if t == nil {
		why, end := proxy.RejectNoRoute, "no_route"
		if refused {
			why, end = proxy.RejectRateLimited, "rate_limited"
		}
		s.o.Rejects.Add(why)
		rec.End = end
		l.FinishConn(&rec)
		return
	}
	a.t = t
	rec.Result = proxy.Forward(s.ctx, &rec, a)
	if rec.Result.Class != proxy.Done {
		s.o.Rejects.Add(proxy.RejectNoBackend)
		rec.End = "no_backend"
		backend := ""
		if b := rec.Result.Backend; b != nil {
			backend = b.Address
		}
		s.o.Logger.Debug("connection found no backend", "listener", l.Name, "pool", t.Pool.Name,
			"backend", backend, "tries", rec.Result.Tries, "error", rec.Result.Err)
	} else {
		rec.End, rec.BytesIn, rec.Bytes = a.end, a.in, a.out
	}
	l.FinishConn(&rec)
}

// attempt is one connection as the core's attempt loop drives it: Send
// connects to the backend it is given and, once connected, relays until
// the connection ends. Only a failed connect is retried (connect_failure):
// after that, bytes may have reached the backend.
type attempt struct {
	s      *Server
	c      *conn
	t      *proxy.Target
	client net.Conn // after the PROXY header and TLS, if any
	peeked []byte   // the ClientHello bytes read to route, for the backend
	idle   time.Duration

	end     string
	in, out int64
}

var _ proxy.Attempt = (*attempt)(nil)

// Replayable is false: only a connect failure is retried, and the core
// retries those without asking.
func (a *attempt) Replayable() bool { return false }

// Resendable is false: a stream's bytes are not kept.
func (a *attempt) Resendable() bool { return false }

// Send implements proxy.Attempt.
func (a *attempt) Send(ctx context.Context, b *pool.Backend, canRetry bool) proxy.Outcome {
	// No TCP keepalive towards backends, as HAProxy (srvtcpka off): the
	// idle timeout bounds a connection whose backend vanished, and a
	// connect costs four system calls fewer.
	d := net.Dialer{Timeout: a.t.Timeouts.Connect, KeepAlive: -1}
	start := time.Now()
	bc, err := d.DialContext(ctx, "tcp", b.Host)
	if err != nil {
		return proxy.Outcome{Class: proxy.ConnectFailure, Err: &proxy.DialError{Err: err}}
	}
	// p2c weighs backends by this: the connect time, a layer-4 latency.
	b.Stats.ObserveLatency(time.Since(start))
	var first []byte
	if v := a.t.Upstream.ProxyHeader; v != 0 {
		first = proxyproto.Append(first, v, proxyproto.AddrPort(a.client.RemoteAddr()), proxyproto.AddrPort(a.client.LocalAddr()))
	}
	first = append(first, a.peeked...)
	if len(first) > 0 {
		bc.SetWriteDeadline(start.Add(max(a.t.Timeouts.Connect, time.Second)))
		if _, err := bc.Write(first); err != nil {
			bc.Close()
			// The backend accepted and reset at once: nothing reached an
			// application that answered, so another backend may take it.
			return proxy.Outcome{Class: proxy.ConnectFailure, Err: &proxy.DialError{Err: err}}
		}
		bc.SetWriteDeadline(time.Time{})
	}
	b.Stats.Connections.Add(1)
	idle := a.idle
	if pi := a.t.Timeouts.Idle; pi > 0 && (idle == 0 || pi < idle) {
		idle = pi
	}
	r := &relay{client: a.client, backend: bc, clientTCP: rawTCP(a.client), backendTCP: bc.(*net.TCPConn),
		idle: idle, toBackend: &b.Stats.BytesIn, toClient: &b.Stats.BytesOut}
	r.in.Store(int64(len(a.peeked)))
	b.Stats.BytesIn.Add(uint64(len(a.peeked)))
	a.c.relay.Store(r)
	if a.s.ctx.Err() != nil { // Close came first: it did not see the relay
		r.abort(EndShutdown)
	}
	a.end = r.run()
	a.in, a.out = r.in.Load(), r.out.Load()
	return proxy.Outcome{Class: proxy.Done}
}

// rawTCP returns the socket beneath a client connection: beneath TLS and
// the PROXY header, if any.
func rawTCP(c net.Conn) *net.TCPConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	return proxyproto.TCP(c)
}
