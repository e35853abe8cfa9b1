package h1

import (
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/loop"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
	"golang.org/x/sys/unix"
)

// lup is a backend connection owned by a loop and used only by that
// loop's clients: one exchange at a time, then back on the loop's idle
// stack for its backend (LIFO). An idle connection holds no buffer, and
// needs no check before use beyond one peek: the backend closing it or
// sending anything unasked raised an event that closed it, and the peek
// catches what arrived since.
type lup struct {
	w  *lworker
	fd int
	loop.Ready
	b          *pool.Backend
	up         *proxy.Upstream // whose pool it belongs to (a reload makes another)
	pc         *loopConns      // up's connections on the loops
	connecting bool
	failed     bool  // the connect failed (err)
	err        error // why the connection failed
	reused     bool
	idle       bool
	dead       bool
	idleAt     int64
	buf        []byte
	r, wr      int // unread response bytes: buf[r:wr]
	lc         *lconn
	timer      *loop.Timer // the idle timeout (the loop's, while idle)
}

// get returns an idle connection to b for t's pool, or dials one.
func (w *lworker) get(b *pool.Backend, t *proxy.Target) (*lup, error) {
	for {
		s := w.idle[b]
		n := len(s)
		if n == 0 {
			delete(w.idle, b) // a backend gone from the pool leaves nothing behind
			break
		}
		u := s[n-1]
		s[n-1] = nil
		w.idle[b] = s[:n-1] // kept empty: the next release appends without allocating
		u.idle = false
		if u.up != t.Upstream {
			u.close() // a connection of the pool before a reload
			continue
		}
		u.reused = true
		w.ev.Disarm(&u.timer)
		return u, nil
	}
	ap := w.addr(b)
	fd, connected, err := loop.Dial(ap, dialKeepAlive)
	if err != nil {
		return nil, err
	}
	pc := proxy.ConnsOf(t.Upstream, proxy.CodecLoop, w.ls.conns)
	u := &lup{w: w, fd: fd, b: b, up: t.Upstream, pc: pc, connecting: !connected}
	u.Wr = connected
	if err := w.ev.Add(fd, u); err != nil {
		w.ev.CloseFD(fd)
		return nil, err
	}
	return u, nil
}

// Event is the backend socket's readiness.
func (u *lup) Event(ev loop.Events) {
	if u.idle {
		// An idle connection has nothing to say: EOF, a reset or stray
		// bytes all mean it cannot carry a request any more.
		if ev&(loop.In|loop.RdHup|loop.Hup|loop.Err) != 0 {
			u.close()
		}
		return
	}
	if u.connecting && ev&(loop.Out|loop.Err|loop.Hup) != 0 {
		u.connecting = false
		if err := loop.SockError(u.fd); err != nil || ev&(loop.Err|loop.Hup) != 0 && ev&loop.Out == 0 {
			u.failed = true
			u.err = err
			if u.err == nil {
				u.err = errors.New("connection refused")
			}
		}
	}
	u.Note(ev)
	if u.lc != nil {
		u.lc.drive()
	}
}

// Fail closes the connection, and the client using it, after a panic on
// the loop.
func (u *lup) Fail() {
	if lc := u.lc; lc != nil {
		lc.abort()
	}
	u.close()
}

// Expire closes a connection idle for longer than its pool's
// timeouts.idle.
func (u *lup) Expire(now int64) {
	if u.idle && !u.dead {
		u.close()
	}
}

// silent peeks at a reused connection before a request is written on it:
// bytes or EOF that arrived since the last event (still unseen) make it
// unusable. One system call per reuse, as the goroutine engine's check.
func (u *lup) silent() bool {
	_, e := loop.Peek(u.fd)
	return e == unix.EAGAIN
}

// Results of fill.
const (
	fillRead = iota // bytes were read into buf
	fillWait        // nothing to read now: wait for the event
	fillEOF         // the backend closed or the connection failed
	fillFull        // buf is full of one unparsed head
)

// fill reads what the backend sent into buf.
func (u *lup) fill() int {
	if !u.Rd {
		return fillWait
	}
	if u.buf == nil {
		u.buf = u.w.bufs.Get()
	}
	if u.r == u.wr {
		u.r, u.wr = 0, 0
	}
	if u.wr == len(u.buf) {
		if u.r == 0 {
			// One head fills the buffer: a bigger one, up to what the
			// goroutine engine reads for a head.
			max := edge.MaxResponseHeaderBytes + upBufSize
			if len(u.buf) >= max {
				return fillFull
			}
			nb := make([]byte, min(4*len(u.buf), max))
			copy(nb, u.buf[:u.wr])
			u.w.bufs.Put(u.buf)
			u.buf = nb
		} else {
			u.wr = copy(u.buf, u.buf[u.r:u.wr])
			u.r = 0
		}
	}
	n, e := loop.Read(u.fd, u.buf[u.wr:])
	if e == unix.EAGAIN {
		u.Rd = false
		return fillWait
	}
	if e != 0 || n == 0 {
		if e != 0 {
			u.err = e
		}
		return fillEOF
	}
	if n < len(u.buf)-u.wr && !u.Hup {
		u.Rd = false // drained: the next byte brings a new edge
	}
	u.wr += n
	return fillRead
}

// release puts the connection on its backend's idle stack once exactly
// one response was read for its one request (or closes it).
func (u *lup) release() {
	w := u.w
	if u.r < u.wr || u.Hup || u.failed || len(w.idle[u.b]) >= maxIdlePerBackend || u.pc.closed.Load() {
		u.close()
		return
	}
	u.dropBuf()
	u.idle = true
	u.idleAt = w.ev.Now()
	if d := u.up.Timeouts.Idle; d > 0 {
		w.ev.Arm(&u.timer, u, u.idleAt+int64(d))
	}
	w.idle[u.b] = append(w.idle[u.b], u)
}

func (u *lup) dropBuf() {
	if u.buf != nil {
		u.w.bufs.Put(u.buf)
		u.buf, u.r, u.wr = nil, 0, 0
	}
}

func (u *lup) close() {
	if u.dead {
		return
	}
	u.dead = true
	if u.idle {
		u.w.unidle(u)
	}
	u.w.ev.Disarm(&u.timer)
	u.w.ev.CloseFD(u.fd)
	u.dropBuf()
}

// unidle takes u, which is closing, off its backend's idle stack, so that
// the stack holds live connections only (its length is what
// maxIdlePerBackend bounds).
func (w *lworker) unidle(u *lup) {
	u.idle = false
	s := w.idle[u.b]
	i := slices.Index(s, u)
	if i < 0 {
		return
	}
	w.idle[u.b] = slices.Delete(s, i, i+1)
}

// closeIdle closes the loop's idle connections of up's pool.
func (w *lworker) closeIdle(up *proxy.Upstream) {
	var old []*lup
	for b, s := range w.idle {
		if len(s) == 0 {
			delete(w.idle, b)
		}
		for _, u := range s {
			if u.up == up {
				old = append(old, u)
			}
		}
	}
	for _, u := range old {
		u.close()
	}
}

// loopConns is one Upstream's connections on the loops, in its CodecLoop
// slot: a reload that retires the pool (Close) closes its idle connections
// on every loop, as the goroutine engine's pool does, and keeps none that
// are in use when their exchange ends.
type loopConns struct {
	ls     *Loops
	up     *proxy.Upstream
	closed atomic.Bool
}

func (ls *Loops) conns(up *proxy.Upstream) *loopConns { return &loopConns{ls: ls, up: up} }

// CloseIdleConnections closes the idle connections on every loop.
func (p *loopConns) CloseIdleConnections() {
	for _, w := range p.ls.ws {
		w.ev.Post(func() { w.closeIdle(p.up) })
	}
}

// Close closes the idle connections and keeps none from now on.
func (p *loopConns) Close() {
	p.closed.Store(true)
	p.CloseIdleConnections()
}

// dialKeepAlive is the TCP keep-alive of backend connections, as the
// goroutine engine's dialer sets it.
const dialKeepAlive = 30 * time.Second
