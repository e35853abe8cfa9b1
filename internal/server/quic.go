package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/sluice-lb/sluice/internal/quicshare"
)

// quicSocket is the UDP side of a listener with http3: one socket, its
// QUIC transport and listener, kept across reloads as socket keeps the TCP
// side. A single accept loop hands each connection, its handshake
// complete, to whichever server generation is current; a generation that
// drains keeps serving the connections it has.
//
// TLS and QUIC settings come from the current generation at each
// handshake (GetConfigForClient), so a new generation's certificates,
// client CA and limits reach new connections without a new socket.
//
// Handshakes cost the server a key exchange and a signature for one
// datagram, which a spoofed source can send by the thousand: above
// retryAbove handshakes in progress, new ones must first prove their
// address with a Retry token (RFC 9000 §8.1.2), which costs one
// authenticated packet and no state.
//
// A socket that an upgrade can hand over is read through quicshare, so
// that during the drain the old process keeps only its own connections'
// datagrams and the new one gets the rest (see package quicshare).
type quicSocket struct {
	pc    net.PacketConn
	tr    *quic.Transport
	ln    *quic.Listener
	share *quicshare.Conn // nil: a socket no upgrade hands over
	// logger says, at Close, what went over the upgrade's link (nil: no
	// line).
	logger *slog.Logger

	tls  atomic.Pointer[tls.Config]  // the current generation's, ALPN h3
	conf atomic.Pointer[quic.Config] // the current generation's
	// maxConns bounds open QUIC connections, handshakes included (0:
	// none): the listener's max_connections.
	maxConns atomic.Int64

	active     *atomic.Int64 // the listener's open connections (TCP and QUIC)
	open       atomic.Int64  // QUIC connections, handshakes included
	handshakes atomic.Int64  // in progress
	retryAbove int64
	retries    atomic.Uint64 // Retry packets asked for

	conns  chan *quic.Conn
	stop   context.CancelFunc // ends the accept loop
	looped chan struct{}      // closed when the accept loop has returned
	once   sync.Once
}

// quicRetryAbove is how many QUIC handshakes may be in progress on one
// listener before new ones need a Retry round trip (HAProxy's
// tune.quic.retry-threshold is 100).
const quicRetryAbove = 100

// newQUICSocket starts QUIC on pc. active counts the listener's open
// connections.
func newQUICSocket(pc net.PacketConn, active *atomic.Int64, retryAbove int64) (*quicSocket, error) {
	q := &quicSocket{pc: pc, active: active, retryAbove: retryAbove, conns: make(chan *quic.Conn), looped: make(chan struct{})}
	q.tr = &quic.Transport{
		Conn:                pc,
		VerifySourceAddress: q.verifySource,
		ConnContext:         q.connContext,
	}
	if s, ok := pc.(quicshare.Socket); ok {
		q.share = quicshare.New(s)
		q.pc, q.tr.Conn, q.tr.ConnectionIDGenerator = q.share, q.share, q.share.IDs()
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{http3.NextProtoH3},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			// The generation's config may itself choose per handshake (a
			// client_ca renewed since it was built): the tls package
			// asks only the first config, so it is asked here.
			c := q.tls.Load()
			if f := c.GetConfigForClient; f != nil {
				if cc, err := f(hello); cc != nil || err != nil {
					return cc, err
				}
			}
			return c, nil
		},
	}
	ln, err := q.tr.Listen(base, &quic.Config{
		GetConfigForClient: func(*quic.ClientInfo) (*quic.Config, error) { return q.conf.Load(), nil },
	})
	if err != nil {
		q.tr.Close()
		if q.share != nil {
			q.share.Close()
		}
		return nil, err
	}
	q.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	q.stop = cancel
	go func() {
		defer close(q.looped)
		q.loop(ctx)
	}()
	return q, nil
}

// verifySource asks for a Retry while too many handshakes are in
// progress (quic.Transport.VerifySourceAddress).
func (q *quicSocket) verifySource(net.Addr) bool {
	if q.handshakes.Load() >= q.retryAbove {
		q.retries.Add(1)
		return true
	}
	return false
}

type quicTrackKey struct{}

// quicTrack follows one connection: in its handshake, then open.
type quicTrack struct{ handshaking atomic.Bool }

// connContext counts a new connection attempt, refusing it past
// max_connections, and follows it until it closes.
func (q *quicSocket) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	if max := q.maxConns.Load(); max > 0 && q.open.Load() >= max {
		return nil, errors.New("max_connections reached")
	}
	q.open.Add(1)
	q.handshakes.Add(1)
	tr := &quicTrack{}
	tr.handshaking.Store(true)
	context.AfterFunc(ctx, func() { // the connection closed, or its handshake failed
		q.open.Add(-1)
		if tr.handshaking.CompareAndSwap(true, false) {
			q.handshakes.Add(-1)
		} else {
			q.active.Add(-1)
		}
	})
	return context.WithValue(ctx, quicTrackKey{}, tr), nil
}

func (q *quicSocket) loop(ctx context.Context) {
	for {
		c, err := q.ln.Accept(ctx)
		if err != nil {
			return // closed
		}
		if tr, _ := c.Context().Value(quicTrackKey{}).(*quicTrack); tr != nil && tr.handshaking.CompareAndSwap(true, false) {
			q.handshakes.Add(-1)
			q.active.Add(1)
		}
		select {
		case q.conns <- c:
		case <-time.After(handoffWait):
			// No generation takes connections (every one drains).
			c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		case <-ctx.Done():
			c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
			return
		}
	}
}

// use makes tlsConf and conf those of new handshakes, and maxConns the
// bound on open connections.
func (q *quicSocket) use(tlsConf *tls.Config, conf *quic.Config, maxConns int) {
	q.tls.Store(http3.ConfigureTLSConfig(tlsConf))
	q.conf.Store(conf)
	q.maxConns.Store(int64(maxConns))
}

// handshakeWaitStep is how often finishHandshakes looks again.
const handshakeWaitStep = 10 * time.Millisecond

// finishHandshakes waits, while a new process takes this socket's new
// connections (an upgrade), for the handshakes in progress here to
// complete or fail, for at most max or until ctx ends: a connection
// whose handshake completes is served, where stopAccepting would refuse
// it. Without a new process it returns at once.
func (q *quicSocket) finishHandshakes(ctx context.Context, max time.Duration) {
	if q.share == nil || !q.share.Forwarding() {
		return
	}
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	tick := time.NewTicker(handshakeWaitStep)
	defer tick.Stop()
	for q.handshakes.Load() > 0 {
		select {
		case <-tick.C:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// stopAccepting refuses new connections (handshakes in progress get
// CONNECTION_REFUSED); open ones go on.
func (q *quicSocket) stopAccepting() {
	q.ln.Close()
	q.stop()
	<-q.looped
}

// Close ends every connection left, without a word, and releases the
// socket; call it once the generations have closed theirs with GOAWAY.
func (q *quicSocket) Close() {
	q.once.Do(func() {
		q.stopAccepting()
		q.tr.Close()
		q.pc.Close()
		if q.share == nil || q.logger == nil {
			return
		}
		if fwd, dropped, recv := q.share.Stats(); fwd+dropped > 0 {
			q.logger.Info("http3: datagrams not this process's went to the new process during the drain",
				"forwarded", fwd, "dropped", dropped)
		} else if recv > 0 {
			q.logger.Info("http3: datagrams came from the old process during its drain", "received", recv)
		}
	})
}

// Addr is the UDP address.
func (q *quicSocket) Addr() net.Addr { return q.pc.LocalAddr() }

// generation returns the listener one server generation serves; closing
// it leaves the socket open for the next.
func (q *quicSocket) generation() *quicGen {
	return &quicGen{q: q, closed: make(chan struct{})}
}

// quicGen is one generation's share of a quicSocket (http3.QUICListener).
type quicGen struct {
	q      *quicSocket
	closed chan struct{}
	once   sync.Once
}

func (g *quicGen) Accept(ctx context.Context) (*quic.Conn, error) {
	select {
	case <-g.closed:
		return nil, quic.ErrServerClosed
	default:
	}
	select {
	case c := <-g.q.conns:
		return c, nil
	case <-g.closed:
	case <-g.q.looped:
	case <-ctx.Done():
	}
	return nil, quic.ErrServerClosed
}

func (g *quicGen) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

func (g *quicGen) Addr() net.Addr { return g.q.Addr() }

var _ http3.QUICListener = (*quicGen)(nil)
