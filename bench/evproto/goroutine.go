package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sluice-lb/sluice/internal/edge"
	"golang.org/x/sys/unix"
)

// The control (-mode goroutine): the loop mode's parsing, head rewriting,
// framing and pooling, with one goroutine per client connection and
// blocking net.Conn I/O through Go's netpoller, as sluice's engine serves
// connections. Like the engine, an idle backend connection is checked with
// a non-blocking MSG_PEEK before reuse (nothing watches it while idle), a
// connection waiting for a request holds a 512-byte array and no pooled
// buffer, and the client read deadline is set once per request, the backend
// one once per exchange.

type gserver struct {
	cfg   *config
	pools []*gpool
	rr    atomic.Uint64
	reqs  atomic.Uint64
	dials atomic.Uint64
}

type gpool struct {
	mu   sync.Mutex
	idle []*gup
	addr string
}

type gup struct {
	nc   *net.TCPConn
	fd   uintptr
	in   []byte
	r, w int
}

var (
	gbufs = sync.Pool{New: func() any { return new([16 << 10]byte) }}
	gouts = sync.Pool{New: func() any { b := make([]byte, 0, 36<<10); return &b }}
)

func serveGoroutines(cfg *config, addr string) (*gserver, error) {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, err
	}
	g := &gserver{cfg: cfg}
	for _, a := range cfg.addrs {
		g.pools = append(g.pools, &gpool{addr: a})
	}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			go g.serve(nc.(*net.TCPConn))
		}
	}()
	return g, nil
}

func (g *gserver) stats() string {
	return fmt.Sprintf(" requests=%d dials=%d", g.reqs.Load(), g.dials.Load())
}

// gconn is one client connection's state in the goroutine mode.
type gconn struct {
	g    *gserver
	nc   *net.TCPConn
	peer netip.Addr
	idle [512]byte
	bp   *[16 << 10]byte
	in   []byte
	r, w int
	x    exchange
}

func (g *gserver) serve(nc *net.TCPConn) {
	c := &gconn{g: g, nc: nc}
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		c.peer = a.AddrPort().Addr().Unmap()
	}
	defer func() {
		nc.Close()
		if c.bp != nil {
			gbufs.Put(c.bp)
		}
	}()
	for {
		n, ok := c.readHead()
		if !ok || !c.handle(n) {
			return
		}
		g.reqs.Add(1)
	}
}

// readHead reads the next request head into c.in[c.r:]; while waiting
// for its first byte the connection holds no pooled buffer.
func (c *gconn) readHead() (int, bool) {
	c.nc.SetReadDeadline(time.Now().Add(time.Duration(c.g.cfg.timeout)))
	for {
		if c.r < c.w {
			n, err := edge.ParseRequestHead(c.in[c.r:c.w], c.g.cfg.lim, &c.x.head)
			if err != nil {
				c.nc.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
				return 0, false
			}
			if n > 0 {
				return n, true
			}
			if c.w == len(c.in) {
				return 0, false // heads over 16 KiB are left out of the control
			}
		}
		if c.bp == nil {
			n, err := c.nc.Read(c.idle[:])
			if n == 0 || err != nil && n == 0 {
				return 0, false
			}
			c.bp = gbufs.Get().(*[16 << 10]byte)
			c.in = c.bp[:]
			c.r, c.w = 0, copy(c.in, c.idle[:n])
			continue
		}
		n, err := c.nc.Read(c.in[c.w:])
		if n == 0 && err != nil {
			return 0, false
		}
		c.w += n
	}
}

// handle forwards the request whose head is at c.in[c.r:c.r+n] and relays
// the response; false when the connection must close.
func (c *gconn) handle(n int) bool {
	g := c.g
	x := &c.x
	h := &x.head
	if h.Minor == 0 || h.WebSocket || string(h.Target) == "*" || h.Chunked {
		c.nc.Write([]byte("HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
		return false
	}
	op := gouts.Get().(*[]byte)
	defer gouts.Put(op)
	hb := c.in[c.r : c.r+n]
	ob := appendOutbound((*op)[:0], h, hb, c.peer, x, g.cfg)
	headLen := len(ob)
	c.r += n
	left := max(h.ContentLength, 0)
	m := int(min(int64(c.w-c.r), left))
	ob = append(ob, c.in[c.r:c.r+m]...)
	c.r += m
	left -= int64(m)
	*op = ob
	be := int(g.rr.Add(1) % uint64(len(g.pools)))
	p := g.pools[be]
	retryable := left == 0 && h.ContentLength <= 0 && string(h.Method) == "GET"
	u, reused, err := g.get(p)
	if err != nil {
		return c.fail(503)
	}
	u.nc.SetReadDeadline(time.Now().Add(time.Duration(g.cfg.timeout)))
	_, err = u.nc.Write(ob)
	for err == nil && left > 0 {
		if c.r == c.w {
			c.r, c.w = 0, 0
			k, rerr := c.nc.Read(c.in)
			if k == 0 {
				u.nc.Close()
				return false
			}
			_ = rerr
			c.w = k
		}
		k := int(min(int64(c.w-c.r), left))
		_, err = u.nc.Write(c.in[c.r : c.r+k])
		c.r += k
		left -= int64(k)
	}
	var rh edge.ResponseHead
	hn := 0
	if err == nil {
		hn, err = u.readHead(&rh)
	}
	if err != nil && reused && retryable && u.r == u.w {
		u.nc.Close()
		if u, err = g.dial(p); err == nil {
			u.nc.SetReadDeadline(time.Now().Add(time.Duration(g.cfg.timeout)))
			if _, err = u.nc.Write(ob[:headLen]); err == nil {
				hn, err = u.readHead(&rh)
			}
		}
	}
	if err != nil {
		if u != nil {
			u.nc.Close()
		}
		return c.fail(502)
	}
	return c.relay(u, p, &rh, hn)
}

// relay writes the response whose head is at u.in[u.r:u.r+hn] to the
// client with its body, then pools or closes u.
func (c *gconn) relay(u *gup, p *gpool, rh *edge.ResponseHead, hn int) bool {
	x := &c.x
	op := gouts.Get().(*[]byte)
	defer gouts.Put(op)
	head := u.in[u.r : u.r+hn]
	u.r += hn
	mode := bodyFixed
	var ck edge.Chunked
	switch {
	case edge.NoBody(string(x.head.Method) == "HEAD", rh.Status):
		mode = bodyNone
	case rh.Chunked:
		mode = bodyChunked
		ck = edge.NewChunked(edge.Limits{MaxHeaderBytes: edge.MaxResponseHeaderBytes, MaxHeaders: 1000})
	case rh.ContentLength < 0:
		mode = bodyClose
	}
	closeAfter := x.head.Close || mode == bodyClose
	o := appendResponseHead((*op)[:0], head, rh, x.id, mode, closeAfter)
	left := rh.ContentLength
	done := mode == bodyNone || mode == bodyFixed && left == 0
	for !done {
		if u.r == u.w {
			if len(o) > 0 {
				if _, err := c.nc.Write(o); err != nil {
					u.nc.Close()
					return false
				}
				o = o[:0]
			}
			u.r, u.w = 0, 0
			k, err := u.nc.Read(u.in)
			if k == 0 {
				// EOF ends a close-delimited body, and the client
				// connection with it; anything else broke off.
				_ = err
				u.nc.Close()
				return false
			}
			u.w = k
		}
		avail := u.in[u.r:u.w]
		m := len(avail)
		switch mode {
		case bodyFixed:
			m = int(min(int64(m), left))
			left -= int64(m)
			done = left == 0
		case bodyChunked:
			k, fin, err := ck.Feed(avail)
			if err != nil {
				u.nc.Close()
				return false
			}
			m, done = k, fin
		}
		o = append(o, avail[:m]...)
		u.r += m
	}
	*op = o
	if _, err := c.nc.Write(o); err != nil {
		u.nc.Close()
		return false
	}
	if rh.Close || u.r < u.w {
		u.nc.Close()
	} else {
		u.r, u.w = 0, 0
		p.put(u, c.g.cfg.maxIdle)
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
		gbufs.Put(c.bp)
		c.bp, c.in = nil, nil
	}
	return !closeAfter
}

func (c *gconn) fail(status int) bool {
	fmt.Fprintf(c.nc, "HTTP/1.1 %d Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status)
	return false
}

// readHead reads a final response head into u.in[u.r:]; interim (1xx)
// responses are left out of the control.
func (u *gup) readHead(rh *edge.ResponseHead) (int, error) {
	for {
		if u.r < u.w {
			n, err := edge.ParseResponseHead(u.in[u.r:u.w], rh)
			if err != nil {
				return 0, err
			}
			if n > 0 {
				if rh.Status < 200 {
					return 0, errors.New("interim response")
				}
				return n, nil
			}
		}
		if u.w == len(u.in) {
			return 0, errors.New("response head too large")
		}
		k, err := u.nc.Read(u.in[u.w:])
		if k == 0 {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		u.w += k
	}
}

// get pops an idle connection that a non-blocking peek finds still open
// and silent, or dials one.
func (g *gserver) get(p *gpool) (*gup, bool, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			u, err := g.dial(p)
			return u, false, err
		}
		u := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		var b [1]byte
		_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, u.fd, uintptr(unsafe.Pointer(&b[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			return u, true, nil
		}
		u.nc.Close()
	}
}

func (g *gserver) dial(p *gpool) (*gup, error) {
	nc, err := net.DialTimeout("tcp4", p.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	g.dials.Add(1)
	tc := nc.(*net.TCPConn)
	u := &gup{nc: tc, in: make([]byte, 16<<10)}
	rc, err := tc.SyscallConn()
	if err == nil {
		rc.Control(func(fd uintptr) { u.fd = fd })
	}
	return u, nil
}

func (p *gpool) put(u *gup, max int) {
	p.mu.Lock()
	if len(p.idle) < max {
		p.idle = append(p.idle, u)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	u.nc.Close()
}
