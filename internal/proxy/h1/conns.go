package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/proxyproto"
	"github.com/sluice-lb/sluice/internal/rawio"
)

// Conns is the HTTP/1.1 engine's connection pool to the backends of one
// pool. Unlike http.Transport it runs no goroutine per connection: an idle
// connection is a socket on a per-backend LIFO stack. Before a connection
// is used again, a non-blocking peek makes sure the backend neither closed
// it nor sent anything while no request was outstanding (a response always
// belongs to the request it follows: bytes that arrive unasked would be
// taken for the next client's answer, so such a connection is closed). A
// request that finds its reused connection closed before any response byte
// is sent again on a new one when it is replayable, as net/http does. One
// timer per pool closes connections idle for longer than timeouts.idle.
type Conns struct {
	timeouts config.PoolTimeouts
	tls      *tls.Config
	dialer   net.Dialer
	// proxyHeader is the PROXY protocol version each new connection
	// begins with (0: none). Those connections are never shared: the
	// client connection that made one keeps it (h1conn.private).
	proxyHeader int
	hosts       sync.Map // *pool.Backend → *hostConns
	closed      atomic.Bool

	sweepMu    sync.Mutex  // guards sweepTimer and orders it with Close
	sweepTimer *time.Timer // the pending sweep (nil: none)
	sweeping   sync.WaitGroup
}

// maxIdlePerBackend bounds the idle connections kept per backend
// (http.Transport's MaxIdleConnsPerHost in the net/http codec).
const maxIdlePerBackend = 1024

type hostConns struct {
	mu   sync.Mutex
	idle []*upConn // LIFO: the most recently used last
}

// upConn is one connection to a backend with its read buffer.
type upConn struct {
	nc      net.Conn
	tcp     *net.TCPConn // nil with TLS (no splice)
	raw     *net.TCPConn // the socket beneath, for the peek
	fd      uintptr      // raw's descriptor
	pool    *Conns
	host    *hostConns
	backend *pool.Backend
	// owner is the client connection that keeps this connection for
	// itself when released (it began with that client's PROXY header);
	// nil: the pool's idle stack takes it.
	owner  *h1conn
	bp     *[]byte // the pooled read buffer (nil while idle)
	buf    []byte
	r, w   int
	reused bool
	// big: the last response did not fit a small buffer, so the next
	// exchange takes a large one (takeBuf).
	big bool
	// unchecked: reused without silent's check, which its next send
	// makes (send).
	unchecked bool
	idleAt    time.Time
	lr        io.LimitedReader // reused by splice copies
	msg       [1][]byte        // a stream's request for send, without allocating
	// expire moves the deadline to the past, ending a blocked read or
	// write (streamExchange's context.AfterFunc): made once per
	// connection rather than once per exchange.
	expire func()
}

// An upstream connection's read buffer is sized by its responses: small
// (readBufSize, from readBufs, shared with the client connections) while
// they fit it, large (upBufSize) once one did not, until one fits again.
// A request in flight with a small answer so holds 4 KiB, not 16 (12 KiB
// less per request in flight during a burst of new clients). A
// connection whose responses are large reads a head and a body of up to
// 16 KiB in one read, as before; the first large response on a connection
// pays one read more. An idle connection holds no buffer.
const upBufSize = 16 << 10

var upBufs = sync.Pool{New: func() any { b := make([]byte, upBufSize); return &b }}

// take readies an idle connection for its next exchange: it takes a read
// buffer.
func (c *upConn) take() *upConn {
	c.reused = true
	c.takeBuf()
	return c
}

// takeBuf gives c a pooled read buffer sized by its last response.
func (c *upConn) takeBuf() {
	if c.big {
		c.bp = upBufs.Get().(*[]byte)
	} else {
		c.bp = readBufs.Get().(*[]byte)
	}
	c.buf = *c.bp
}

// dropBuf gives c's read buffer back to its pool (one a large head grew
// past upBufSize is dropped).
func (c *upConn) dropBuf() {
	switch cap(c.buf) {
	case upBufSize:
		*c.bp = c.buf[:upBufSize]
		upBufs.Put(c.bp)
	case readBufSize:
		*c.bp = c.buf[:readBufSize]
		readBufs.Put(c.bp)
	}
	c.bp, c.buf = nil, nil
}

// grow moves what c's small buffer holds into a large one: the response
// is larger than the small one. Its next exchanges take large buffers too.
func (c *upConn) grow() {
	c.big = true
	if cap(c.buf) != readBufSize {
		return
	}
	bp := upBufs.Get().(*[]byte)
	n := copy(*bp, c.buf[c.r:c.w])
	c.dropBuf()
	c.bp, c.buf, c.r, c.w = bp, *bp, 0, n
}

// sized records the size of a response whose length its head gave (the
// head and the body), which sizes the buffer of c's next exchange.
func (c *upConn) sized(n int64) { c.big = n > readBufSize }

// connsOf returns the engine's connections of u, made on first use.
func connsOf(u *proxy.Upstream) *Conns {
	return proxy.ConnsOf(u, proxy.CodecH1, newConns)
}

func newConns(u *proxy.Upstream) *Conns {
	return &Conns{timeouts: u.Timeouts, tls: u.TLS, proxyHeader: u.ProxyHeader,
		dialer: net.Dialer{Timeout: u.Timeouts.Connect, KeepAlive: 30 * time.Second}}
}

var _ proxy.ConnPool = (*Conns)(nil)

// CloseIdleConnections closes every idle connection; connections in use
// close when their request ends.
func (p *Conns) CloseIdleConnections() {
	p.hosts.Range(func(_, v any) bool {
		h := v.(*hostConns)
		h.mu.Lock()
		idle := h.idle
		h.idle = nil
		h.mu.Unlock()
		for _, c := range idle {
			c.nc.Close()
		}
		return true
	})
}

// Close closes idle connections and keeps no more from now on.
func (p *Conns) Close() {
	p.sweepMu.Lock()
	p.closed.Store(true)
	if p.sweepTimer != nil && p.sweepTimer.Stop() {
		p.sweeping.Done()
	}
	p.sweepTimer = nil
	p.sweepMu.Unlock()
	p.sweeping.Wait()
	p.CloseIdleConnections()
}

func (p *Conns) host(b *pool.Backend) *hostConns {
	if v, ok := p.hosts.Load(b); ok {
		return v.(*hostConns)
	}
	v, _ := p.hosts.LoadOrStore(b, &hostConns{})
	return v.(*hostConns)
}

// get returns an idle connection to b that is still open and silent, or
// dials one. A dial failure is a *proxy.DialError. With fold, the silence
// of a connection over a plain socket is left to the exchange: it is
// marked unchecked, and send checks it as it sends (one system call
// fewer than silent).
func (p *Conns) get(ctx context.Context, b *pool.Backend, fold bool) (*upConn, error) {
	h := p.host(b)
	now := time.Now()
	for {
		h.mu.Lock()
		n := len(h.idle)
		if n == 0 {
			h.mu.Unlock()
			break
		}
		c := h.idle[n-1]
		h.idle[n-1] = nil
		h.idle = h.idle[:n-1]
		h.mu.Unlock()
		if fold {
			if _, plain := c.nc.(*rawio.Conn); plain {
				if !p.open(c, now) {
					c.nc.Close()
					continue
				}
				c.unchecked = true
				return c.take(), nil
			}
		}
		if !p.usable(c, now) {
			c.nc.Close()
			continue
		}
		return c.take(), nil
	}
	return p.dial(ctx, b, nil)
}

// usable reports whether an idle connection may carry the next request:
// the pool is open, the connection was not idle too long, and it is
// silent.
func (p *Conns) usable(c *upConn, now time.Time) bool {
	return p.open(c, now) && c.silent()
}

// open reports whether the pool is open and c was not idle too long.
func (p *Conns) open(c *upConn, now time.Time) bool {
	return !p.closed.Load() && !(p.timeouts.Idle > 0 && now.Sub(c.idleAt) > p.timeouts.Idle)
}

// private returns a connection to b for the requests of client connection
// o alone, each beginning with a PROXY header naming o's client: the one o
// keeps when it goes to b and is still usable, else a new one. As HAProxy
// does, a connection is reused only for requests whose PROXY header would
// be the same (same client address and port, same local address), which
// here means the same client connection; it is closed with it.
func (p *Conns) private(ctx context.Context, b *pool.Backend, o *h1conn) (*upConn, error) {
	if c := o.private; c != nil {
		o.private = nil
		if c.pool == p && c.backend == b && p.usable(c, time.Now()) {
			return c.take(), nil
		}
		c.nc.Close()
	}
	var hb [proxyproto.MaxV1]byte
	hdr := proxyproto.Append(hb[:0], p.proxyHeader, proxyproto.AddrPort(o.nc.RemoteAddr()), proxyproto.AddrPort(o.nc.LocalAddr()))
	c, err := p.dial(ctx, b, hdr)
	if err != nil {
		return nil, err
	}
	c.owner = o
	return c, nil
}

// keep hands a released connection to the client connection that owns it,
// in place of the one it kept before.
func (p *Conns) keep(c *upConn) {
	if !p.idle(c) {
		return
	}
	if old := c.owner.private; old != nil {
		old.nc.Close()
	}
	c.owner.private = c
}

// dial opens a connection to b; hdr, when not empty, is written first, as
// soon as the connection is up (before any TLS handshake): a PROXY header.
//
// The work runs on a goroutine of its own, which dial waits for: connecting
// (and a TLS handshake more so) needs a deeper stack than proxying a
// request does, and a goroutine keeps the stack it grew to, so the client
// connection's goroutine would hold 8 KiB or more instead of 4 KiB for as
// long as it lives; the dialing goroutine's stack goes when it ends. A dial
// is rare next to the requests on the connection it opens. A panic there
// goes on in the caller, as if it had dialed itself (serve recovers it).
func (p *Conns) dial(ctx context.Context, b *pool.Backend, hdr []byte) (*upConn, error) {
	type result struct {
		c     *upConn
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			r.panic = recover()
			done <- r
		}()
		r.c, r.err = p.connect(ctx, b, hdr)
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.c, r.err
}

// connect is dial's work, on dial's goroutine.
func (p *Conns) connect(ctx context.Context, b *pool.Backend, hdr []byte) (*upConn, error) {
	nc, err := p.dialer.DialContext(ctx, "tcp", b.Host)
	if err != nil {
		return nil, &proxy.DialError{Err: err}
	}
	if len(hdr) > 0 {
		if _, err := nc.Write(hdr); err != nil {
			nc.Close()
			return nil, &proxy.DialError{Err: fmt.Errorf("writing the PROXY protocol header: %w", err)}
		}
	}
	c := &upConn{nc: nc, pool: p, host: p.host(b), backend: b}
	c.expire = func() { c.nc.SetDeadline(time.Unix(1, 0)) }
	c.takeBuf()
	c.raw, _ = nc.(*net.TCPConn)
	if c.raw != nil {
		if rc, err := c.raw.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { c.fd = fd })
		}
	}
	if b.URL.Scheme == "https" {
		cfg := p.tls
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = b.URL.Hostname()
		}
		tc := tls.Client(rawio.New(nc, c.raw), cfg)
		hctx := ctx
		if d := p.timeouts.Connect; d > 0 { // 0: no limit, as for the dial
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		err := tc.HandshakeContext(hctx)
		if err != nil {
			nc.Close()
			return nil, &proxy.DialError{Err: err}
		}
		c.nc = tc
	} else {
		c.tcp, _ = nc.(*net.TCPConn)
		c.nc = rawio.New(nc, c.tcp)
	}
	return c, nil
}

// release returns c to its pool once exactly one complete response was read
// for the one request sent on it. A connection with bytes left over past
// that response is closed instead.
func (c *upConn) release() {
	if c.owner != nil {
		c.pool.keep(c)
		return
	}
	c.pool.put(c)
}

// idle readies a released connection to wait for its next request, or
// closes it (and reports false) when the pool is closed or bytes of the
// last exchange were left unread.
func (p *Conns) idle(c *upConn) bool {
	if p.closed.Load() || c.r != c.w {
		c.nc.Close()
		return false
	}
	c.r, c.w = 0, 0
	// An idle connection holds no buffer.
	c.dropBuf()
	// Deadlines stay as they were: the next exchange sets its own.
	c.idleAt = time.Now()
	return true
}

// put returns c to its backend's idle stack (or closes it).
func (p *Conns) put(c *upConn) {
	if !p.idle(c) {
		return
	}
	h := c.host
	h.mu.Lock()
	if len(h.idle) >= maxIdlePerBackend || p.closed.Load() { // Close may have swept meanwhile
		h.mu.Unlock()
		c.nc.Close()
		return
	}
	h.idle = append(h.idle, c)
	h.mu.Unlock()
	p.scheduleSweep()
}

// scheduleSweep arranges for idle connections past timeouts.idle to be
// closed, with one timer per pool at a time.
func (p *Conns) scheduleSweep() {
	if p.timeouts.Idle <= 0 {
		return
	}
	p.sweepMu.Lock()
	defer p.sweepMu.Unlock()
	if p.sweepTimer != nil || p.closed.Load() {
		return
	}
	p.sweeping.Add(1)
	p.sweepTimer = time.AfterFunc(p.timeouts.Idle/2+time.Second, func() {
		defer p.sweeping.Done()
		p.sweep()
	})
}

func (p *Conns) sweep() {
	p.sweepMu.Lock()
	p.sweepTimer = nil
	p.sweepMu.Unlock()
	cutoff := time.Now().Add(-p.timeouts.Idle)
	left := false
	p.hosts.Range(func(_, v any) bool {
		h := v.(*hostConns)
		h.mu.Lock()
		// The stack is LIFO: the oldest are at the bottom.
		i := 0
		for i < len(h.idle) && h.idle[i].idleAt.Before(cutoff) {
			h.idle[i].nc.Close()
			i++
		}
		h.idle = append(h.idle[:0], h.idle[i:]...)
		left = left || len(h.idle) > 0
		h.mu.Unlock()
		return true
	})
	if left {
		p.scheduleSweep()
	}
}

// silent peeks at an idle connection without blocking: it may carry the
// next request only when nothing is readable. A backend that closed it
// (EOF) or sent anything while no request was outstanding (a stray
// response, bytes past the last one's framing, a TLS record) makes it
// unusable. One system call per reuse. What it cannot see: bytes still on
// their way when it looks (HTTP/1.1 pairs responses with requests by order
// alone, so no proxy can), and, over TLS, part of a record that crypto/tls
// already read from the socket but cannot decrypt yet. A plain connection
// carrying a request held whole is checked by send instead, with
// no system call of its own.
func (c *upConn) silent() bool {
	if c.raw == nil || c.fd == 0 {
		return false
	}
	var b [1]byte
	// One raw, non-blocking recvfrom on the socket: an idle connection is
	// ours alone (popped from the stack under its lock), so the descriptor
	// cannot be closed or reused meanwhile, and the netpoller has nothing
	// to wait for.
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, c.fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if n != ^uintptr(0) || errno != syscall.EAGAIN {
		return false // bytes (n ≥ 1), EOF (n = 0) or an error
	}
	if tc, isTLS := c.nc.(*tls.Conn); isTLS {
		// Plaintext that crypto/tls decrypted but nobody read (the rest of a
		// record past the response) is invisible to the peek: a read that
		// cannot wait finds it.
		tc.SetReadDeadline(time.Unix(1, 0))
		n, err := tc.Read(b[:])
		return n == 0 && isTimeout(err)
	}
	return true
}

// fill reads more into the buffer, growing it up to max when full.
func (c *upConn) fill(max int) error {
	if c.r > 0 && c.w == len(c.buf) {
		copy(c.buf, c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
	}
	if c.w == len(c.buf) {
		switch {
		case len(c.buf) >= max:
			return errRespHeadTooLarge
		case cap(c.buf) == readBufSize:
			c.grow()
		default:
			nb := make([]byte, min(2*len(c.buf), max))
			copy(nb, c.buf[:c.w])
			c.buf = nb
		}
	}
	n, err := c.nc.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

var errRespHeadTooLarge = errors.New("backend response head too large")

// refill reads the next piece of a body into c's buffer, which the caller
// has consumed: a small buffer that the last read filled is exchanged for a
// large one first (the body is larger than it).
func (c *upConn) refill() error {
	full := c.w == len(c.buf)
	c.r, c.w = 0, 0
	if full && cap(c.buf) == readBufSize {
		c.grow()
	}
	return c.fill(len(c.buf))
}

// send sends a request held whole, bufs, on c over a plain socket with
// rawio's Send, and reads the first bytes of the response into c's buffer
// with no read that could only find nothing; an unchecked connection is
// checked first (stray: not silent, nothing sent). bufs may be changed.
func (c *upConn) send(rc *rawio.Conn, bufs [][]byte) (stray bool, err error) {
	check := c.unchecked
	c.unchecked = false
	total := 0
	for _, p := range bufs {
		total += len(p)
	}
	written, n, stray, err := rc.Send(bufs, c.buf[c.w:], check)
	if err == nil && !stray && written < int64(total) {
		// The socket took part of it: the rest as any write.
		for i, p := range bufs {
			k := min(written, int64(len(p)))
			bufs[i], written = p[k:], written-k
		}
		_, err = rc.WriteBuffers(bufs)
	}
	c.w += n
	return stray, err
}
