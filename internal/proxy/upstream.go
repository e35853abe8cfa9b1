package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/config"
	"github.com/sluice-lb/sluice/internal/pool"
)

// Conns is the HTTP/1.1 engine's connection pool to the backends of one
// pool. Unlike http.Transport it runs no goroutine per connection: an idle
// connection is a socket on a per-backend LIFO stack, checked for a close
// by the backend (a non-blocking peek) when it has been idle long enough
// for that to be likely, and a request that finds its reused connection
// closed before any response byte is sent again on a new one when it is
// replayable, as net/http does. One timer per pool closes connections idle
// for longer than timeouts.idle.
type Conns struct {
	timeouts config.PoolTimeouts
	tls      *tls.Config
	dialer   net.Dialer
	hosts    sync.Map // *pool.Backend → *hostConns
	closed   atomic.Bool

	sweepMu      sync.Mutex
	sweepPending bool
}

// maxIdlePerBackend bounds the idle connections kept per backend
// (http.Transport's MaxIdleConnsPerHost in the net/http codec).
const maxIdlePerBackend = 1024

// staleAfter is how long a connection may sit idle before it is peeked at
// for a close before reuse. Under load connections are reused within
// milliseconds and skip the check (a system call); backends close idle
// connections after seconds. A request that is not replayable (a POST) is
// always checked: it could not be sent again on a new connection.
const staleAfter = time.Second

type hostConns struct {
	mu   sync.Mutex
	idle []*upConn // LIFO: the most recently used last
}

// upConn is one connection to a backend with its read buffer.
type upConn struct {
	nc     net.Conn
	tcp    *net.TCPConn // nil with TLS
	host   *hostConns
	buf    []byte
	r, w   int
	reused bool
	idleAt time.Time
	lr     io.LimitedReader // reused by splice copies
}

// upBufSize is an upstream connection's read buffer: a response head and a
// small body arrive in one read.
const upBufSize = 16 << 10

// NewConns returns the engine's connection pool for one pool.
func NewConns(t config.PoolTimeouts, tlsConfig *tls.Config) *Conns {
	return &Conns{timeouts: t, tls: tlsConfig,
		dialer: net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}}
}

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
	p.closed.Store(true)
	p.CloseIdleConnections()
}

func (p *Conns) host(b *pool.Backend) *hostConns {
	if v, ok := p.hosts.Load(b); ok {
		return v.(*hostConns)
	}
	v, _ := p.hosts.LoadOrStore(b, &hostConns{})
	return v.(*hostConns)
}

// get returns an idle connection to b, or dials one. A dial failure is a
// *dialError. With peek every idle connection is checked for a close by the
// backend before use (for requests that cannot be sent again if it was).
func (p *Conns) get(ctx context.Context, b *pool.Backend, peek bool) (*upConn, error) {
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
		idle := now.Sub(c.idleAt)
		if p.timeouts.Idle > 0 && idle > p.timeouts.Idle || (peek || idle > staleAfter) && !c.alive() {
			c.nc.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
	return p.dial(ctx, b)
}

func (p *Conns) dial(ctx context.Context, b *pool.Backend) (*upConn, error) {
	nc, err := p.dialer.DialContext(ctx, "tcp", b.Host)
	if err != nil {
		return nil, &dialError{err: err}
	}
	c := &upConn{nc: nc, host: p.host(b), buf: make([]byte, upBufSize)}
	if b.URL.Scheme == "https" {
		cfg := p.tls
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = b.URL.Hostname()
		}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, p.timeouts.Connect)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, &dialError{err: err}
		}
		c.nc = tc
	} else {
		c.tcp, _ = nc.(*net.TCPConn)
	}
	return c, nil
}

// put returns c to its backend's idle stack (or closes it).
func (p *Conns) put(c *upConn) {
	if p.closed.Load() || c.r != c.w {
		c.nc.Close()
		return
	}
	c.r, c.w = 0, 0
	// Deadlines stay as they were: the next exchange sets its own.
	c.idleAt = time.Now()
	h := c.host
	h.mu.Lock()
	if len(h.idle) >= maxIdlePerBackend {
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
	if p.sweepPending {
		return
	}
	p.sweepPending = true
	time.AfterFunc(p.timeouts.Idle/2+time.Second, p.sweep)
}

func (p *Conns) sweep() {
	p.sweepMu.Lock()
	p.sweepPending = false
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

// alive peeks at an idle connection without blocking: a backend that
// closed it (EOF) or sent something unasked makes it unusable.
func (c *upConn) alive() bool {
	if c.tcp == nil {
		return true // TLS: the request is retried on a new connection if need be
	}
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = errors.Is(err, syscall.EAGAIN)
		return true
	})
	return ok
}

// fill reads more into the buffer, growing it up to max when full.
func (c *upConn) fill(max int) error {
	if c.r > 0 && c.w == len(c.buf) {
		copy(c.buf, c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
	}
	if c.w == len(c.buf) {
		if len(c.buf) >= max {
			return errRespHeadTooLarge
		}
		nb := make([]byte, min(2*len(c.buf), max))
		copy(nb, c.buf[:c.w])
		c.buf = nb
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
