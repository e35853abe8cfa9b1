package h1

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxyproto"
)

// Connection states, for graceful shutdown.
const (
	connIdle   int32 = iota // between requests: Shutdown may close it
	connActive              // a request is on its way
	connClosed
)

// h1conn is one client connection of the engine and the request on it.
type h1conn struct {
	e     *Engine
	nc    net.Conn
	tcp   *net.TCPConn
	peer  netip.Addr
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

	bp   *[]byte // the pooled read buffer (nil while idle)
	buf  []byte
	r, w int // unread bytes are buf[r:w]
	ob   *[]byte
	out  []byte // heads being written

	// idle holds the first bytes of a request that arrive while the
	// connection holds no read buffer (see readIdle).
	idle [512]byte

	bodyc    chan bodyResult // the streaming body writer's result
	iov      [3][]byte       // for vectored writes without allocating
	respConn connTokens      // of the response being relayed
	// stopping is set while endStream stops the body writer.
	stopping atomic.Bool
	req      h1req
}

func newH1Conn(e *Engine, nc net.Conn) *h1conn {
	c := &h1conn{e: e, nc: nc, ctx: e.ctx}
	// The socket itself, also beneath a PROXY protocol header, for splice.
	c.tcp = proxyproto.TCP(nc)
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
	if c.state.Load() != connIdle || readable(c.nc) {
		return
	}
	if c.state.CompareAndSwap(connIdle, connClosed) {
		c.nc.Close()
	}
}

func (c *h1conn) serve() {
	defer func() {
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
	}()
	for first := true; ; first = false {
		if !c.readHead(first) {
			return
		}
		c.served.Store(true)
		if !c.handle() {
			return
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
	}
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

// acquire takes the read and write buffers for a request.
func (c *h1conn) acquire() {
	if c.bp == nil {
		c.bp = readBufs.Get().(*[]byte)
		c.buf = *c.bp
	}
	if c.ob == nil {
		c.ob = readBufs.Get().(*[]byte)
		c.out = (*c.ob)[:0]
	}
}

// release gives the buffers back while the connection has nothing
// buffered.
func (c *h1conn) release() {
	if c.bp != nil && c.r == c.w {
		if cap(c.buf) == readBufSize {
			*c.bp = c.buf[:readBufSize]
			readBufs.Put(c.bp)
		}
		c.bp, c.buf, c.r, c.w = nil, nil, 0, 0
	}
	if c.ob != nil {
		if cap(c.out) == readBufSize {
			*c.ob = c.out[:readBufSize]
			readBufs.Put(c.ob)
		}
		c.ob, c.out = nil, nil
	}
}

// readHead reads and parses the next request head into c.req. It answers
// refused heads and head timeouts itself and reports whether a request is
// ready.
func (c *h1conn) readHead(first bool) bool {
	to := &c.e.o.Timeouts
	var headDeadline time.Time
	if first && to.ReadHeader > 0 {
		headDeadline = time.Now().Add(to.ReadHeader)
	}
	idleDeadline := time.Time{}
	if !first && to.Idle > 0 {
		idleDeadline = time.Now().Add(to.Idle)
	}
	for {
		if c.r < c.w {
			if !c.state.CompareAndSwap(connIdle, connActive) && c.state.Load() != connActive {
				return false // Shutdown closed it
			}
			if headDeadline.IsZero() && to.ReadHeader > 0 {
				headDeadline = time.Now().Add(to.ReadHeader)
			}
			n, err := edge.ParseRequestHead(c.buf[c.r:c.w], c.e.lim, &c.req.head)
			if err != nil {
				var ee *edge.Error
				errors.As(err, &ee)
				c.refuse(ee.Status, ee.Reason)
				return false
			}
			if n > 0 {
				c.req.hlen = n
				return true
			}
			// Incomplete: read more. The buffer grows only when full
			// (below), so a head that trickles in costs no more memory
			// than its size.
		}
		// Wait for bytes: the idle timeout until the first one, then
		// read_header from the first one.
		if c.r == c.w && !first {
			if c.readIdle(idleDeadline) {
				continue
			}
			return false
		}
		c.acquire()
		if c.w == len(c.buf) {
			if !c.grow() {
				c.refuse(431, "request header too large")
				return false
			}
		}
		c.nc.SetReadDeadline(headDeadline)
		n, err := c.nc.Read(c.buf[c.w:])
		c.w += n
		if n > 0 {
			continue
		}
		if err != nil {
			if isTimeout(err) && c.r < c.w && !c.e.shutting.Load() {
				c.refuse(408, "request header timeout")
			}
			return false
		}
	}
}

// readIdle waits for the first bytes of the next request with no buffer
// of the pool held: they arrive in c.idle and are copied to a read buffer
// taken then. An idle keep-alive connection so costs its goroutine and
// this struct, not buffers.
func (c *h1conn) readIdle(deadline time.Time) bool {
	c.release()
	c.nc.SetReadDeadline(deadline)
	n, _ := c.nc.Read(c.idle[:])
	if n == 0 {
		return false
	}
	c.acquire()
	c.r, c.w = 0, copy(c.buf, c.idle[:n])
	return true
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
		readBufs.Put(c.bp)
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
		n, err := c.nc.Read(c.buf)
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
