package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxyproto"
	"github.com/sluice-lb/sluice/internal/rawio"
)

// Connection states, for graceful shutdown.
const (
	connIdle   int32 = iota // between requests: Shutdown may close it
	connActive              // a request is on its way
	connClosed
)

// h1conn is one client connection of the engine and the request on it.
type h1conn struct {
	e   *Engine
	nc  net.Conn
	tcp *net.TCPConn
	// rw is what requests and responses are read from and written to
	// while c is served: nc, or over a plain socket a rawio.Conn (raw
	// system calls, see rawio); nil while c is parked. Everything else
	// (deadlines, Close, tunnels, h2c and HTTP/2 backends, whose readers
	// may outlive a request) uses nc.
	rw   net.Conn
	peer netip.Addr
	// raddr is the client's address and port for a connection served on
	// an event loop, where nc is nil (loop_linux.go).
	raddr netip.AddrPort
	// lc is the connection's state on its event loop while one serves it
	// (nil: a goroutine does). Shutdown and Close read it.
	lc    atomic.Pointer[lconn]
	ctx   context.Context // the engine's: requests derive theirs from it
	state atomic.Int32
	// up is the backend connection of the exchange in progress, for Close.
	up atomic.Pointer[upConn]
	// private is the idle backend connection kept for this client alone:
	// one that began with a PROXY header naming this client
	// (send_proxy_protocol) carries no other client's requests. It closes
	// with the client connection.
	private *upConn
	// xfcc is the client certificate's forwarding value (see clientCert).
	xfcc     string
	xfccDone bool
	// tlsVer is the connection's TLS version (see tlsVersion).
	tlsVer  uint16
	tlsDone bool
	// served: a request was answered on c (Shutdown closes it when idle;
	// a connection still waiting for its first request gets a grace).
	served atomic.Bool
	// h2: c is an HTTP/2 stream's request forwarded on a loop
	// (loopstream_linux.go), not a connection.
	h2 bool
	// again: the client sent a second request on c, so c waits parkAfter
	// for the next one before it parks, not parkSoon (waitRequest).
	again bool

	// until ends the wait for the first byte of the next request: the
	// first head's read_header limit from the accept, then the idle
	// timeout from the end of each response (zero: no limit).
	until time.Time

	bp   *[]byte // the pooled read buffer (nil while idle)
	buf  []byte
	r, w int // unread bytes are buf[r:w]
	ob   *[]byte
	out  []byte // heads being written

	// *exch is the request on its way, taken from a pool with the buffers
	// (nil while idle).
	*exch
	// sp is the spares of the event loop that serves c, where its buffers
	// and request state come from and go back to (nil: on a goroutine,
	// the shared pools). Set before the loop first touches c; cleared on
	// the loop before it hands c over to a goroutine (handOver).
	sp *spares
	// pk is the connection's state in the engine's parker (park.go).
	pk parkState
}

// exch is the state of one request of a connection. It is pooled, so that
// an idle connection holds only h1conn and its socket.
type exch struct {
	bodyc    chan bodyResult // the streaming body writer's result
	iov      [3][]byte       // for vectored writes without allocating
	respConn connTokens      // of the response being relayed
	// stopping is set while endStream stops the body writer.
	stopping atomic.Bool
	// bodyIn is set by the body writer once it has read the client's body
	// to its end: the client connection can carry another request even
	// if the writer is still sending the last bytes to the backend.
	bodyIn atomic.Bool
	req    h1req
}

func newH1Conn(e *Engine, nc net.Conn) *h1conn {
	c := &h1conn{e: e, nc: nc, ctx: e.ctx}
	if d := e.o.Timeouts.ReadHeader; d > 0 {
		c.until = time.Now().Add(d)
	}
	// The socket itself, also beneath a PROXY protocol header, for splice.
	c.tcp = proxyproto.TCP(nc)
	c.rw = rawio.Get(nc, c.tcp)
	switch a := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		c.peer = a.AddrPort().Addr().Unmap()
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			c.peer = ap.Addr().Unmap()
		}
	}
	return c
}

// closeIfIdle closes c when it waits for a request (Shutdown): between
// requests, or with fresh also before its first one. A connection whose
// next request has reached the kernel already is left to serve it (and
// close after it): closing would drop that request, and the unread bytes
// would make the kernel reset the connection.
func (c *h1conn) closeIfIdle(fresh bool) {
	if !fresh && !c.served.Load() {
		return
	}
	if lc := c.lc.Load(); lc != nil {
		lc.post(func() { lc.closeIfIdle(fresh) })
		return
	}
	if c.state.Load() != connIdle || readable(c.nc) {
		return
	}
	if c.state.CompareAndSwap(connIdle, connClosed) {
		c.closeNow()
	}
}

// closeNow closes the client connection, also when it is parked (then a
// goroutine is started to finish it, as the parker would have).
func (c *h1conn) closeNow() {
	parked := c.e.unpark(c)
	c.nc.Close()
	if parked {
		go c.serve()
	}
}

// remoteAddr is the client's address as the access log shows it.
func (c *h1conn) remoteAddr() string {
	if c.nc != nil {
		return c.nc.RemoteAddr().String()
	}
	return c.raddr.String()
}

// Where serveFrom begins: the next request's head, or a request an event
// loop began and handed over (loop_linux.go) before begin, before routing,
// or routed.
const (
	fromHead = iota
	fromBegin
	fromRoute
	fromForward
)

// serve serves requests on c until it closes, or until it parks: then the
// parker calls serve again, on a new goroutine, once the next request's
// bytes arrive (or the wait's deadline passes, or Shutdown closes c).
func (c *h1conn) serve() { c.serveFrom(fromHead) }

// serveFrom is serve, beginning with the request at stage from.
func (c *h1conn) serveFrom(from int) {
	if c.rw == nil {
		c.rw = rawio.Get(c.nc, c.tcp) // unparked
	}
	parked := false
	defer func() {
		if parked {
			return // c is the parker's now: touch nothing
		}
		if v := recover(); v != nil {
			c.e.o.Logger.Error("engine: panic serving a connection; it was closed", "panic", v, "client", c.peer.String())
		}
		c.state.Store(connClosed)
		c.nc.Close()
		if c.private != nil {
			c.private.nc.Close()
			c.private = nil
		}
		c.release()
		c.e.forget(c)
		c.e.wg.Done()
	}()
	for {
		var more bool
		switch from {
		case fromBegin:
			more = c.handle()
		case fromRoute, fromForward:
			q := &c.req
			if from == fromRoute {
				q.rec.Status = c.serveRequest(&q.rec.Result)
			} else {
				q.rec.Status = c.forward(&q.rec.Result)
			}
			more = c.end()
		default:
			switch c.readHead(!c.served.Load()) {
			case headParked:
				parked = true
				return
			case headClose:
				return
			}
			c.again = c.served.Load()
			c.served.Store(true)
			more = c.handle()
		}
		from = fromHead
		if !more {
			return
		}
		if c.r == c.w && c.e.shutting.Load() {
			c.pullTLS()
		}
		if c.r < c.w {
			// The next request is buffered already (pipelined): it is
			// served, even when Shutdown has begun (then with
			// "Connection: close").
			continue
		}
		if !c.state.CompareAndSwap(connActive, connIdle) {
			return
		}
		// Shutdown closes the connections it finds idle; this one may
		// have turned idle just after. It closes now unless the client
		// has sent its next request already: the response just written
		// said keep-alive, so that request was sent in good faith, and it
		// is served (see closeIfIdle).
		if c.e.shutting.Load() && !readable(c.nc) && c.state.CompareAndSwap(connIdle, connClosed) {
			return
		}
		c.until = time.Time{}
		if d := c.e.o.Timeouts.Idle; d > 0 {
			c.until = time.Now().Add(d)
		}
	}
}

// pullTLS reads, without waiting, what crypto/tls holds of the client's
// next request: whole records it read ahead with the last one, which
// readable cannot see beneath it. Shutdown then serves that request, sent
// in good faith, instead of closing the connection as idle. A read past
// its deadline is temporary to crypto/tls: it keeps what it has.
func (c *h1conn) pullTLS() {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return
	}
	c.acquireIn()
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	tc.SetReadDeadline(time.Unix(1, 0))
	n, _ := tc.Read(c.buf[c.w:])
	tc.SetReadDeadline(time.Time{})
	c.w += n
}

// readable reports whether bytes from the client wait in the kernel,
// without taking them or blocking: it peeks at the TCP socket beneath nc
// (through TLS too). It reports false when it cannot tell.
func readable(nc net.Conn) bool {
	for {
		switch c := nc.(type) {
		case *net.TCPConn:
			rc, err := c.SyscallConn()
			if err != nil {
				return false
			}
			n := 0
			if rc.Control(func(fd uintptr) {
				var b [1]byte
				n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			}) != nil {
				return false
			}
			return n > 0
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return false
		}
	}
}

// Results of readHead.
const (
	headReady  = iota // a request head is in c.req
	headClose         // the connection is done (closed, refused or timed out)
	headParked        // it waits in the parker, and this goroutine must leave it
)

// readHead reads and parses the next request head into c.req. It answers
// refused heads and head timeouts itself.
func (c *h1conn) readHead(first bool) int {
	to := &c.e.o.Timeouts
	var headDeadline time.Time
	if first {
		headDeadline = c.until // read_header counts from the accept
	}
	for {
		if c.r < c.w {
			if !c.state.CompareAndSwap(connIdle, connActive) && c.state.Load() != connActive {
				return headClose // Shutdown closed it
			}
			if headDeadline.IsZero() && to.ReadHeader > 0 {
				headDeadline = time.Now().Add(to.ReadHeader)
			}
			n, err := edge.ParseRequestHead(c.buf[c.r:c.w], c.e.lim, &c.req.head)
			if err != nil {
				var ee *edge.Error
				errors.As(err, &ee)
				c.refuse(ee.Status, ee.Reason)
				return headClose
			}
			if n > 0 {
				c.req.hlen = n
				c.acquire() // the write buffer
				return headReady
			}
			// Incomplete: read more. The buffer grows only when full
			// (below), so a head that trickles in costs no more memory
			// than its size.
		} else {
			// Wait for the first bytes until c.until (the idle timeout,
			// or read_header for the first request), then read_header
			// from the first one.
			if r := c.waitRequest(); r != headReady {
				return r
			}
			continue
		}
		c.acquire()
		if c.w == len(c.buf) {
			if !c.grow() {
				c.refuse(431, "request header too large")
				return headClose
			}
		}
		c.nc.SetReadDeadline(headDeadline)
		n, err := c.rw.Read(c.buf[c.w:])
		c.w += n
		if n > 0 {
			continue
		}
		if err != nil {
			if isTimeout(err) && !c.e.shutting.Load() {
				c.refuse(408, "request header timeout")
			}
			return headClose
		}
	}
}

// parkAfter is how long a connection waits for its next request in its
// own goroutine, holding its buffers, before it parks: a busy keep-alive
// connection never parks, an idle one soon costs no goroutine. After a
// connection's first response the wait is parkSoon: a client that sends
// one request and keeps its connection open so holds a goroutine and
// buffers for 2 ms, not 100 (when thousands connect at once, those waits
// were most of the engine's memory), and a busy one parks at most once,
// before its second request.
const (
	parkAfter = 100 * time.Millisecond
	parkSoon  = 2 * time.Millisecond
)

// parkWait is how long c waits for its next request before it parks.
func (c *h1conn) parkWait() time.Duration {
	if c.again {
		return parkAfter
	}
	return parkSoon
}

// waitRequest waits for the first bytes of a request (c holds none) until
// c.until. For parkSoon or parkAfter (see there) it waits in this
// goroutine with its buffers; then a connection over a plain socket parks
// (headParked: the goroutine must leave c), and another (TLS) goes on
// waiting with no pooled buffer but a small one of its own.
func (c *h1conn) waitRequest() int {
	// The write buffer is not needed until a request came: one buffer
	// less per waiting connection.
	c.releaseOut()
	c.acquireIn()
	c.r, c.w = 0, 0
	d := time.Now().Add(c.parkWait())
	last := !c.until.IsZero() && !c.until.After(d)
	if last {
		d = c.until
	}
	c.nc.SetReadDeadline(d)
	n, err := c.rw.Read(c.buf)
	c.w = n
	if n > 0 {
		return headReady
	}
	if last || !isTimeout(err) {
		return headClose
	}
	if c.tcp != nil && c.park() {
		return headParked
	}
	return c.readIdle()
}

// readIdle waits for the first bytes of the next request with no buffer
// of the pool held: they arrive in a small one and are copied to a read
// buffer taken then.
func (c *h1conn) readIdle() int {
	c.release()
	ib := idleBufs.Get().(*[idleBufSize]byte)
	defer idleBufs.Put(ib)
	c.nc.SetReadDeadline(c.until)
	n, _ := c.rw.Read(ib[:])
	if n == 0 {
		return headClose
	}
	c.acquire()
	c.r, c.w = 0, copy(c.buf, ib[:n])
	return headReady
}

// grow makes room for more of a head: it moves the unread bytes to the
// front, or takes a bigger buffer, up to what the limits allow.
func (c *h1conn) grow() bool {
	if c.r > 0 {
		copy(c.buf, c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
		return true
	}
	max := c.e.o.Limits.MaxHeaderBytes
	if max <= 0 {
		max = edge.DefaultMaxHeaderBytes
	}
	max += 64 + 2 // lead bytes and the final CRLF
	if len(c.buf) >= max {
		return false
	}
	nb := make([]byte, min(4*len(c.buf), max))
	copy(nb, c.buf[:c.w])
	if cap(c.buf) == readBufSize {
		*c.bp = c.buf[:readBufSize]
		c.putBuf(c.bp)
	}
	c.bp = &nb
	c.buf = nb
	return true
}

// refuse answers a request the engine will not serve and closes the
// connection, lingering so the client reads the answer.
func (c *h1conn) refuse(status int, reason string) {
	c.acquire()
	c.req = h1req{l: c.e.o.View.Load()}
	c.req.rec.Start = time.Now()
	c.req.id = c.e.o.IDs.AppendNext(c.req.idb[:0])
	c.req.rec.Status = c.fail(status, reason, true)
	c.finish()
	c.linger()
}

// linger half-closes the connection and reads what the client still sends
// for a short while, so that its unread bytes do not make the kernel reset
// the connection before the client has read the answer.
func (c *h1conn) linger() {
	if c.tcp == nil || c.tcp.CloseWrite() != nil {
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	c.acquire()
	for total := 0; total < 256<<10; {
		n, err := c.rw.Read(c.buf)
		total += n
		if err != nil {
			return
		}
	}
}

const lingerTime = 500 * time.Millisecond

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
