package h1

// The event loops of engine: loop and what each keeps (its backend
// connections, what it decided about pools), taking a connection onto a
// loop, and handing one over to a goroutine. The connection on its loop is
// loop_linux.go (its socket's writes, loopio_linux.go; TLS,
// looptls_linux.go); one attempt, loopx_linux.go; backend connections,
// loopup_linux.go.

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"github.com/sluice-lb/sluice/internal/rawio"
	"golang.org/x/sys/unix"
)

// Loops are the event loops that serve the connections of `engine: loop`
// listeners, one per CPU, shared by every such listener and generation.
// Run them on a goroutine of their own; Close after Run returns.
type Loops struct {
	g    *loop.Group
	ws   []*lworker
	next atomic.Uint32
	log  *slog.Logger
}

// NewLoops makes n loops (0: GOMAXPROCS).
func NewLoops(n int, log *slog.Logger) (*Loops, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	g, err := loop.NewGroup(n, loop.Config{RawWait: true, Log: log})
	if err != nil {
		return nil, err
	}
	ls := &Loops{g: g, log: log}
	for _, l := range g.Loops {
		ls.ws = append(ls.ws, &lworker{ls: ls, ev: l, idle: map[*pool.Backend][]*lup{}, addrs: map[*pool.Backend]netip.AddrPort{},
			ups: map[*proxy.Target]served{}, bufs: loop.Bufs{Size: upBufSize, Max: 1024},
			reqs: loop.Spares[*lreq]{Max: maxSpareReqs}})
	}
	return ls, nil
}

// Len reports how many loops there are.
func (ls *Loops) Len() int { return len(ls.ws) }

// Run serves until ctx ends.
func (ls *Loops) Run(ctx context.Context) error { return ls.g.Run(ctx) }

// Close closes what the loops still hold; call it after Run returned.
func (ls *Loops) Close() {
	ls.g.Close()
	for _, w := range ls.ws {
		w.pipes.Close()
	}
}

// lworker is one loop's part of the engine: its backend connections.
type lworker struct {
	ls *Loops
	ev *loop.Loop
	// idle holds the loop's idle connections per backend, most recently
	// used last.
	idle map[*pool.Backend][]*lup
	// addrs caches each backend's address as the loop dials it (invalid:
	// a host name, which the loop does not resolve).
	addrs map[*pool.Backend]netip.AddrPort
	// ups caches whether the loop can serve a target's pool itself.
	ups   map[*proxy.Target]served
	bufs  loop.Bufs          // backend connections' read buffers (upBufSize)
	pipes loop.Pipes         // for large bodies, moved by splice
	reqs  loop.Spares[*lreq] // spare request states (lconn.getReq)
	// spares are the read buffers and request states of the loop's
	// client connections and streams (h1conn.sp).
	spares spares
	// tlsOut is the spare buffer for a TLS connection's records while
	// they are written out (lconn.borrow).
	tlsOut []byte
}

// take readies c, just accepted over a plain TCP socket, to be served on a
// loop (enter, once c is the engine's); nil when it cannot be (then a
// goroutine serves it). The socket is duplicated and the original closed,
// which takes it out of Go's own poller; the accepted connection's
// max_connections slot, taken from it (netlimit.Conn.Slot), is freed when
// the connection ends. Nothing else of the accepted net.Conn is kept: a
// closed *net.TCPConn and its netFD would cost an idle connection about a
// tenth of its memory.
func (ls *Loops) take(c *h1conn) *lconn {
	s, ok := takeSocket(c.nc, c.tcp)
	if !ok {
		return nil
	}
	c.raddr = s.raddr
	c.nc, c.tcp, c.rw = nil, nil, nil
	if s.tb != nil {
		// The TLS connection stays, for its state (version, client
		// certificate); beneath it, the loop's socket.
		c.nc = s.tb.tc
	}
	w := ls.pick()
	c.sp = &w.spares
	lc := &lconn{c: c, w: w, fd: s.fd, slot: s.slot, tb: s.tb}
	lc.ctx.lc = lc
	c.lc.Store(lc)
	return lc
}

// pick chooses the loop of a connection taken: each in turn.
func (ls *Loops) pick() *lworker { return ls.ws[ls.next.Add(1)%uint32(len(ls.ws))] }

// taken is a client socket taken off Go's poller for a loop.
type taken struct {
	fd    int       // the socket's duplicate, non-blocking
	slot  io.Closer // the accepted connection's max_connections slot
	tb    *tlsBase  // over TLS: the base beneath crypto/tls, switched to fd
	raddr netip.AddrPort
}

// takeSocket takes nc, whose TCP socket is tcp (nil: over TLS, past its
// handshake, looptls_linux.go), off Go's poller: the socket is duplicated
// and the original closed. False when it cannot be (nc stays whole).
func takeSocket(nc net.Conn, tcp *net.TCPConn) (taken, bool) {
	acc := nc
	var tb *tlsBase
	if tcp == nil {
		if tb, tcp, acc = takeTLS(nc); tb == nil {
			return taken{}, false
		}
	} else if r, ok := acc.(*rawio.Conn); ok {
		acc = r.NetConn()
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return taken{}, false
	}
	fd := -1
	rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if fd < 0 || err != nil {
		return taken{}, false
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return taken{}, false
	}
	t := taken{fd: fd, tb: tb}
	if ap, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		a := ap.AddrPort()
		t.raddr = netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) // an IPv4 client as net.TCPAddr prints it
	}
	switch nc := acc.(type) {
	case interface{ Slot() io.Closer }:
		t.slot = nc.Slot()
	case *net.TCPConn:
		t.slot = noSlot{} // nothing beyond the socket
	default:
		t.slot = nc // a wrapper of another kind: closing it frees what it holds
	}
	tcp.Close()
	if tb != nil {
		tb.Conn = closedConn{tb.Conn.LocalAddr(), tb.Conn.RemoteAddr()}
		tb.fd = fd
	}
	return t, true
}

// enter hands the connection to its loop, once it is the engine's.
func (lc *lconn) enter() {
	if !lc.w.ev.PostTo(lc, lc.adopt) {
		c := lc.c
		lc.discard()
		c.e.forget(c)
		c.lc.Store(nil)
		c.e.wg.Done()
	}
}

// discard closes a connection that never reached its loop.
func (lc *lconn) discard() {
	unix.Close(lc.fd)
	lc.slot.Close()
}

// serves reports whether the loop serves t's pool itself: HTTP/1.1 in the
// clear, no PROXY header, every backend named by address.
func (w *lworker) serves(t *proxy.Target) bool {
	bs := t.Pool.Backends() // a new slice whenever the membership changes
	d := served{unsafe.SliceData(bs), len(bs), false}
	if got, known := w.ups[t]; known && got.data == d.data && got.n == d.n {
		return got.ok
	}
	d.ok = !t.Upstream.HTTP2 && t.Upstream.ProxyHeader == 0
	for _, b := range bs {
		if d.ok && !w.addr(b).IsValid() {
			d.ok = false
		}
	}
	if len(w.ups) > 4096 {
		clear(w.ups) // targets of old reloads
	}
	w.ups[t] = d
	return d.ok
}

// served is what serves decided for a target's pool, and the backends it
// decided for.
type served struct {
	data **pool.Backend
	n    int
	ok   bool
}

// addr is b's address as the loop dials it (invalid: it cannot).
func (w *lworker) addr(b *pool.Backend) netip.AddrPort {
	if ap, ok := w.addrs[b]; ok {
		return ap
	}
	var ap netip.AddrPort
	if b.URL == nil || b.URL.Scheme == "http" {
		ap, _ = netip.ParseAddrPort(b.Host)
	}
	if len(w.addrs) > 4096 {
		clear(w.addrs)
	}
	w.addrs[b] = ap
	return ap
}

// handOver hands the connection to a goroutine that serves the request
// from stage from on, and the connection after it, as the goroutine engine
// does.
func (lc *lconn) handOver(from int) {
	c := lc.c
	w := lc.w
	lc.closed = true
	w.ev.Disarm(&lc.timer)
	if err := w.ev.Detach(lc.fd); err != nil {
		lc.fail(err)
		return
	}
	f := os.NewFile(uintptr(lc.fd), "")
	nc, err := net.FileConn(f) // a duplicate, in Go's poller
	f.Close()
	if err != nil {
		lc.slot.Close()
		lc.finishClosed()
		return
	}
	tcp, _ := nc.(*net.TCPConn)
	if b := lc.tb; b != nil {
		// Records the loop queued and did not write go first (tlsBase.Write).
		b.fd = -1
		b.Conn = rawio.New(handed{nc, lc.slot}, tcp)
		c.nc, c.tcp = b.tc, nil
	} else {
		c.nc = handed{nc, lc.slot}
		c.tcp = tcp
	}
	c.rw = nil // serve takes one
	if to := c.e.o.Timeouts.Write; to > 0 && from != fromBegin {
		c.nc.SetWriteDeadline(c.req.rec.Start.Add(to)) // begin ran on the loop, without it
	}
	if lc.off > 0 {
		// Never: an answer is written before the next request starts.
		c.out = c.out[lc.off:]
	}
	c.lc.Store(nil)
	c.sp = nil // the goroutine's buffers come from the shared pools
	go c.serveFrom(from)
}

// handed is a connection handed over by a loop: closing it also frees
// the max_connections slot of the connection it was accepted as.
type handed struct {
	net.Conn
	slot io.Closer
}

func (h handed) Close() error {
	err := h.Conn.Close()
	h.slot.Close()
	return err
}

// noSlot is the slot of a connection accepted without max_connections.
type noSlot struct{}

func (noSlot) Close() error { return nil }

func (h handed) NetConn() net.Conn { return h.Conn }

func (h handed) TCP() *net.TCPConn { t, _ := h.Conn.(*net.TCPConn); return t }
