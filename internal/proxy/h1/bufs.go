package h1

// Where a connection's buffers and request state come from and go back to:
// the shared pools, or the spares of the event loop that serves it.

import (
	"sync"

	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// Buffers shared by all connections. A connection holds a read buffer only
// while a request is on its way, so idle keep-alive connections cost little
// memory; bigger buffers are taken when a head or a body needs them.
var (
	readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	bodyBufs = sync.Pool{New: func() any { b := make([]byte, proxy.ReplayMax); return &b }}
	exchs    = sync.Pool{New: func() any { return new(exch) }}
	idleBufs = sync.Pool{New: func() any { return new([idleBufSize]byte) }}
	copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

const readBufSize = 4 << 10

// idleBufSize is the buffer a connection that cannot park waits with
// (readIdle).
const idleBufSize = 512

// acquire takes the read and write buffers and the request state for a
// request.
func (c *h1conn) acquire() {
	c.acquireIn()
	if c.ob == nil {
		c.ob = c.getBuf()
		c.out = (*c.ob)[:0]
	}
}

// acquireIn takes the read buffer and the request state: what reading a
// head needs.
func (c *h1conn) acquireIn() {
	if c.bp == nil {
		c.bp = c.getBuf()
		c.buf = *c.bp
	}
	if c.exch == nil {
		c.exch = c.getExch()
	}
}

// releaseOut gives the write buffer back.
func (c *h1conn) releaseOut() {
	if c.ob != nil {
		if cap(c.out) == readBufSize {
			*c.ob = c.out[:readBufSize]
			c.putBuf(c.ob)
		}
		c.ob, c.out = nil, nil
	}
}

// release gives the buffers and the request state back while the
// connection has nothing buffered.
func (c *h1conn) release() {
	if c.bp != nil && c.r == c.w {
		if cap(c.buf) == readBufSize {
			*c.bp = c.buf[:readBufSize]
			c.putBuf(c.bp)
		}
		c.bp, c.buf, c.r, c.w = nil, nil, 0, 0
	}
	c.releaseOut()
	if x := c.exch; x != nil && c.bp == nil {
		c.exch = nil
		if x.req.body.running {
			return // its body writer may still use it (a panic): not reused
		}
		if x.req.body.hp != nil {
			bodyBufs.Put(x.req.body.hp)
		}
		x.req = h1req{}
		x.respConn = connTokens{}
		if c.sp == nil || !c.sp.exchs.Put(x) {
			exchs.Put(x)
		}
	}
}

// spares are an event loop's free read buffers (readBufSize) and request
// states, for the connections and streams it serves.
type spares struct {
	bufs  loop.Spares[*[]byte]
	exchs loop.Spares[*exch]
}

// getBuf takes a read buffer (readBufSize): the loop's spare, or the
// shared pool's.
func (c *h1conn) getBuf() *[]byte {
	if c.sp != nil {
		if p, ok := c.sp.bufs.Get(); ok {
			return p
		}
	}
	return readBufs.Get().(*[]byte)
}

// getExch takes a request state: the loop's spare, or the shared pool's.
func (c *h1conn) getExch() *exch {
	if c.sp != nil {
		if x, ok := c.sp.exchs.Get(); ok {
			return x
		}
	}
	return exchs.Get().(*exch)
}

// putBuf gives a read buffer back (see getBuf).
func (c *h1conn) putBuf(p *[]byte) {
	if c.sp == nil || !c.sp.bufs.Put(p) {
		readBufs.Put(p)
	}
}
